"""nipype workflows: they only wire interfaces (``init_*_wf`` returns a Workflow)."""

import re


def node_safe(text: str) -> str:
    """A string usable as (part of) a nipype node name."""
    return re.sub(r"\W", "_", text)
