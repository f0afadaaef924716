"""Errors a user can fix; the CLI turns them into one line and exit code 2."""


class ConntoolInputError(Exception):
    """Bad input: message must name the file (or option) and the problem."""
