"""nipype interfaces for the T1w both paths share: brain extraction, normalisation, tissue segmentation."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import File, TraitedSpec, traits

from conntool.interfaces.base import ConntoolInputSpec, ConntoolInterface, node_template, template_input
from conntool.interfaces.io import load_mask, save_image
from conntool.outputs import write_json
from conntool.steps import brain_extraction, registration, segmentation


class _SkullStripInput(ConntoolInputSpec):
    t1w = File(exists=True, mandatory=True)


class _SkullStripOutput(TraitedSpec):
    t1w_brain = File(exists=True)
    brain_mask = File(exists=True)


class SkullStrip(ConntoolInterface):
    """T1w brain extraction (deepbet); the brain-only T1w is what registrations see."""

    input_spec = _SkullStripInput
    output_spec = _SkullStripOutput

    def _run_interface(self, runtime):
        t1w = nib.load(self.inputs.t1w)
        mask = brain_extraction.brain_mask(t1w)
        self._results["brain_mask"] = save_image(mask.astype(np.uint8), t1w.affine, "brain_mask.nii.gz", runtime.cwd)
        self._results["t1w_brain"] = save_image(np.asarray(t1w.dataobj, np.float32) * mask, t1w.affine,
                                                "t1w_brain.nii.gz", runtime.cwd)
        return runtime


class _NormalizeInput(ConntoolInputSpec):
    t1w_brain = File(exists=True, mandatory=True)
    backend = traits.Enum("ants", "dipy", mandatory=True)
    seed = traits.Int(mandatory=True)
    template = template_input()
    template_resolution_mm = traits.Float(mandatory=True, desc="grid of the template the T1w is registered to")
    affine_sampling = traits.Float(mandatory=True, desc="share of voxels the DIPY affine steps sample")


class _NormalizeOutput(TraitedSpec):
    coordmap = File(exists=True, desc="template grid → T1w world coordinates")
    inverse_coordmap = File(exists=True, desc="T1w grid → template world coordinates")
    similarity = traits.Float(desc="correlation of warped T1w and template")


class Normalization(ConntoolInterface):
    """T1w → template, affine + nonlinear, returned as a coordinate map."""

    input_spec = _NormalizeInput
    output_spec = _NormalizeOutput

    def _run_interface(self, runtime):
        coordmap, inverse, similarity = registration.normalize(
            nib.load(self.inputs.t1w_brain), node_template(self.inputs).t1w(self.inputs.template_resolution_mm),
            self.inputs.backend, self.inputs.seed, self.inputs.affine_sampling)
        for key, img in (("coordmap", coordmap), ("inverse_coordmap", inverse)):
            self._results[key] = os.path.join(runtime.cwd, f"{key}.nii")
            nib.save(img, self._results[key])
        self._results["similarity"] = similarity
        return runtime


class _SegmentInput(ConntoolInputSpec):
    t1w_brain = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    inverse_coordmap = File(exists=True, mandatory=True, desc="T1w grid → template world coordinates")
    template = template_input()
    template_resolution_mm = traits.Float(mandatory=True, desc="grid of the template's tissue priors")
    method = traits.Enum("atropos", "template", mandatory=True)
    prior_weight = traits.Float(mandatory=True)
    mrf_smoothing = traits.Float(mandatory=True)
    iterations = traits.Int(mandatory=True)
    sidecar = traits.Dict(mandatory=True, desc="provenance written beside each probability map")


class _SegmentOutput(TraitedSpec):
    gm = File(exists=True, desc="GM probability, T1w grid")
    wm = File(exists=True, desc="WM probability, T1w grid")
    csf = File(exists=True, desc="CSF probability, T1w grid")
    sidecars = traits.Dict(desc="tissue → its JSON sidecar (the same provenance for each)")


class TissueSegmentation(ConntoolInterface):
    """GM/WM/CSF probabilities on the T1w grid: the T1w's own (Atropos) or the warped template priors."""

    input_spec = _SegmentInput
    output_spec = _SegmentOutput

    def _run_interface(self, runtime):
        t1w, coordmap = nib.load(self.inputs.t1w_brain), nib.load(self.inputs.inverse_coordmap)
        template = node_template(self.inputs)
        grid = template.grid(self.inputs.template_resolution_mm)
        found = segmentation.warped_priors(template.tissue_probabilities(grid), grid.affine,
                                           np.asarray(coordmap.dataobj, float))
        if self.inputs.method == "atropos":
            found = segmentation.atropos(np.asarray(t1w.dataobj, np.float32), load_mask(self.inputs.brain_mask),
                                         tuple(registration.voxel_sizes(t1w)), found, self.inputs.prior_weight,
                                         self.inputs.mrf_smoothing, self.inputs.iterations)
        for tissue in segmentation.TISSUES:
            self._results[tissue] = save_image(found[tissue], t1w.affine, f"{tissue}_probseg.nii.gz", runtime.cwd)
        sidecar = str(write_json(os.path.join(runtime.cwd, "probseg.json"), self.inputs.sidecar))
        self._results["sidecars"] = {tissue: sidecar for tissue in segmentation.TISSUES}
        return runtime
