"""Anatomical workflow both paths share: T1w brain extraction and normalisation to the template."""
from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from conntool.config import Normalization as NormalizationConfig
from conntool.interfaces.fmri import Normalization, SkullStrip
from conntool.workflows.resources import ANAT, resources


def init_anat_wf(*, normalization: NormalizationConfig, seed: int, name: str = "anat_wf") -> pe.Workflow:
    """T1w → brain-only T1w → template.

    inputnode ``t1w``; outputnode ``t1w_brain`` (skull-stripped, T1w space), ``coordmap``
    (template grid → T1w world coordinates), ``inverse_coordmap`` (T1w grid → template world
    coordinates), ``similarity`` (of the normalised T1w and the template).
    """
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(["t1w"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(["t1w_brain", "coordmap", "inverse_coordmap", "similarity"]),
                         name="outputnode")
    skullstrip = pe.Node(SkullStrip(), name="skullstrip", **resources(ANAT, "skullstrip"))
    normalize = pe.Node(Normalization(backend=normalization.backend, seed=seed,
                                      template_resolution_mm=normalization.template_resolution_mm),
                        name="t1w_to_template", **resources(ANAT, "t1w_to_template"))
    wf.connect([(inputnode, skullstrip, [("t1w", "t1w")]),
                (skullstrip, normalize, [("t1w_brain", "t1w_brain")]),
                (skullstrip, outputnode, [("t1w_brain", "t1w_brain")]),
                (normalize, outputnode, [("coordmap", "coordmap"), ("inverse_coordmap", "inverse_coordmap"),
                                         ("similarity", "similarity")])])
    return wf
