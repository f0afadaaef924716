"""Anatomical workflow both paths share: T1w brain extraction, normalisation to the template,
tissue segmentation, and the segmentation's derivatives."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from conntool.bids import Participant
from conntool.config import DmriConfig, FmriConfig
from conntool.interfaces.anat import Normalization, SkullStrip, TissueSegmentation
from conntool.interfaces.connectome import DerivativesSink
from conntool.outputs import bids_name, subject_folder
from conntool.steps.segmentation import TISSUES
from conntool.templates import output_template, with_priors
from conntool.workflows.resources import ANAT, resources


def anat_paths(out_dir: Path, label: str) -> dict[str, dict[str, Path]]:
    """``probseg`` and ``sidecar``: per tissue, ``sub-<label>_label-<GM|WM|CSF>_probseg.nii.gz``
    (T1w space, as fMRIPrep names them) and its JSON sidecar."""
    folder = subject_folder(out_dir, {"sub": label}, "anat")
    stems = {t: folder / bids_name({"sub": label, "label": t.upper()}, "probseg", "") for t in TISSUES}
    return {"probseg": {t: Path(f"{stem}.nii.gz") for t, stem in stems.items()},
            "sidecar": {t: Path(f"{stem}.json") for t, stem in stems.items()}}


def anat_provenance(t1w: Path, section: FmriConfig | DmriConfig, seed: int) -> dict:
    """What the segmentation's sidecars record: everything its result depends on (the T1w, the
    ``segmentation`` and ``normalization`` of the preset's ``section``, the seed)."""
    return {"Sources": [str(t1w)], "Space": "T1w", "Segmentation": dataclasses.asdict(section.segmentation),
            "NormalizationTemplate": output_template(section.normalization.template).name,
            "NormalizationBackend": section.normalization.backend,
            "TemplateResolutionMM": section.normalization.template_resolution_mm,
            "AffineSampling": section.normalization.affine_sampling, "RandomSeed": seed}


def anat_outputs_to_check(out_dir: Path, participant: Participant, section: FmriConfig | DmriConfig,
                          seed: int) -> list[Path]:
    """The anatomical outputs the overwrite check must guard.

    The fMRI and dMRI commands share them. Files whose sidecar records the provenance this run
    would record are what it makes too (bit for bit), so rewriting them overwrites nothing;
    the others are returned.
    """
    provenance = json.loads(json.dumps(anat_provenance(participant.t1w, section, seed)))
    paths = anat_paths(out_dir, participant.label)
    guarded = []
    for tissue in TISSUES:
        sidecar = paths["sidecar"][tissue]
        same = sidecar.is_file() and json.loads(sidecar.read_text()) == provenance
        if not same:
            guarded += [paths["probseg"][tissue], sidecar]
    return guarded


def init_anat_wf(*, participant: Participant, section: FmriConfig | DmriConfig, seed: int, out_dir: Path,
                 name: str = "anat_wf") -> pe.Workflow:
    """T1w → brain-only T1w → template; GM/WM/CSF probabilities on the T1w grid, written to
    ``out_dir`` (:func:`anat_paths`). ``section`` is the preset's ``fmri`` or ``dmri`` section
    (its ``normalization`` and ``segmentation``).

    outputnode ``t1w_brain`` (skull-stripped, T1w space), ``coordmap`` (template grid → T1w
    world coordinates), ``inverse_coordmap`` (T1w grid → template world coordinates),
    ``similarity`` (of the normalised T1w and the template), ``gm``, ``wm``, ``csf``
    (probabilities, T1w grid).
    """
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(["t1w"]), name="inputnode")
    inputnode.inputs.t1w = str(participant.t1w)
    normalization, segmentation = section.normalization, section.segmentation
    outputnode = pe.Node(IdentityInterface(["t1w_brain", "coordmap", "inverse_coordmap", "similarity", *TISSUES]),
                         name="outputnode")
    skullstrip = pe.Node(SkullStrip(), name="skullstrip", **resources(ANAT, "skullstrip"))
    template = output_template(normalization.template)
    normalize = pe.Node(Normalization(template=dataclasses.asdict(template), backend=normalization.backend, seed=seed,
                                      template_resolution_mm=normalization.template_resolution_mm,
                                      affine_sampling=normalization.affine_sampling),
                        name="t1w_to_template", **resources(ANAT, "t1w_to_template"))
    segment = pe.Node(TissueSegmentation(template=dataclasses.asdict(with_priors(template)),
                                         template_resolution_mm=normalization.template_resolution_mm,
                                         **{key: getattr(segmentation, key) for key in (
                                             "method", "prior_weight", "mrf_smoothing", "iterations")},
                                         sidecar=anat_provenance(participant.t1w, section, seed)),
                      name="segmentation", **resources(ANAT, "segmentation"))
    paths = anat_paths(out_dir, participant.label)
    sink = pe.Node(DerivativesSink(out_paths={**{t: str(p) for t, p in paths["probseg"].items()},
                                              "sidecars": {t: str(p) for t, p in paths["sidecar"].items()}}),
                   name="sink_anat")
    wf.connect([(inputnode, skullstrip, [("t1w", "t1w")]),
                (skullstrip, normalize, [("t1w_brain", "t1w_brain")]),
                (skullstrip, segment, [("t1w_brain", "t1w_brain"), ("brain_mask", "brain_mask")]),
                (normalize, segment, [("inverse_coordmap", "inverse_coordmap")]),
                (segment, sink, [(t, t) for t in TISSUES] + [("sidecars", "sidecars")]),
                (skullstrip, outputnode, [("t1w_brain", "t1w_brain")]),
                (segment, outputnode, [(t, t) for t in TISSUES]),
                (normalize, outputnode, [("coordmap", "coordmap"), ("inverse_coordmap", "inverse_coordmap"),
                                         ("similarity", "similarity")])])
    return wf
