"""nipype workflows: they only wire interfaces (``init_*_wf`` returns a Workflow)."""
