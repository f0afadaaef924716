"""Visual QC: figures drawn from a participant's results, its HTML page and the group page."""
