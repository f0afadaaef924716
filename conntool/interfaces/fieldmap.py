"""nipype interfaces for susceptibility distortion correction from a B0 fieldmap."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import File, TraitedSpec, traits

from conntool.interfaces.base import ConntoolInputSpec, ConntoolInterface
from conntool.interfaces.io import save_image
from conntool.outputs import write_json
from conntool.steps import fieldmap, registration
from conntool.steps.dwi_space import values_at_points
from conntool.steps.motion import estimate_linear
from conntool.steps.resample import apply_affine_to_coords, grid_world_coords


class _FieldInput(ConntoolInputSpec):
    images = traits.List(File(exists=True), mandatory=True, desc="phasediff; phase1, phase2; or the fieldmap")
    magnitude = File(exists=True, mandatory=True)
    kind = traits.Enum("phasediff", "phases", "fieldmap", mandatory=True)
    echo_times = traits.List(traits.Float, desc="EchoTime1, EchoTime2 (s); phase kinds only")
    units = traits.Str("rad", usedefault=True, desc="of a fieldmap: Hz or rad/s")
    smoothing_fwhm_mm = traits.Float(mandatory=True)
    sidecar = traits.Dict(desc="the field's JSON sidecar")


class _FieldOutput(TraitedSpec):
    field_hz = File(exists=True, desc="smoothed field (Hz) on the fieldmap grid")
    sidecar = File(exists=True)
    magnitude_brain = File(exists=True, desc="magnitude inside its head mask: the image registered to the EPI")


class FieldmapHz(ConntoolInterface):
    """A BIDS fieldmap → the off-resonance field in Hz, unwrapped and smoothed, fieldmap grid."""

    input_spec = _FieldInput
    output_spec = _FieldOutput

    def _run_interface(self, runtime):
        magnitude = nib.load(self.inputs.magnitude)
        data = np.asarray(magnitude.dataobj, np.float32)
        mask = fieldmap.magnitude_mask(data)
        echo_times = tuple(self.inputs.echo_times) if self.inputs.echo_times else None
        field = fieldmap.field_hz(self.inputs.kind, [np.asarray(nib.load(f).dataobj, float) for f in self.inputs.images],
                                  mask, echo_times, self.inputs.units)
        if self.inputs.smoothing_fwhm_mm > 0:
            field = fieldmap.smooth_within(field, mask, registration.voxel_sizes(magnitude),
                                           self.inputs.smoothing_fwhm_mm)
        self._results["field_hz"] = save_image(field.astype(np.float32), magnitude.affine, "field_hz.nii.gz",
                                               runtime.cwd)
        self._results["magnitude_brain"] = save_image(data * mask, magnitude.affine, "magnitude_brain.nii.gz",
                                                      runtime.cwd)
        self._results["sidecar"] = str(write_json(os.path.join(runtime.cwd, "field_hz.json"), self.inputs.sidecar))
        return runtime


class _ToReferenceInput(ConntoolInputSpec):
    field_hz = File(exists=True, mandatory=True)
    magnitude_brain = File(exists=True, mandatory=True)
    reference = File(exists=True, mandatory=True, desc="the EPI reference (BOLD reference), distorted")
    phase_encoding_dir = traits.Str(mandatory=True, desc="BIDS PhaseEncodingDirection of the EPI")
    readout_s = traits.Float(mandatory=True, desc="TotalReadoutTime of the EPI (s)")


class _ToReferenceOutput(TraitedSpec):
    shift = File(exists=True, desc="voxel shift map on the reference grid (voxels along the PE axis)")
    field_reference = File(exists=True, desc="field (Hz) on the reference grid")
    unwarped = File(exists=True, desc="the reference with the distortion undone (fieldmap.unwarp)")


class FieldToReference(ConntoolInterface):
    """The field onto the EPI reference (rigid registration of the fieldmap's magnitude, DIPY
    mutual information, starting from the scanner coordinates both share) → voxel shift map,
    and the reference unwarped with it."""

    input_spec = _ToReferenceInput
    output_spec = _ToReferenceOutput

    def _run_interface(self, runtime):
        ref, magnitude, field = (nib.load(f) for f in (self.inputs.reference, self.inputs.magnitude_brain,
                                                       self.inputs.field_hz))
        ref_to_fmap = estimate_linear(ref, magnitude, pipeline=("translation", "rigid"))
        points = grid_world_coords(ref)
        on_ref = values_at_points(np.asarray(field.dataobj, float), field.affine,
                                  apply_affine_to_coords(ref_to_fmap, points))
        shift = fieldmap.shift_voxels(on_ref, self.inputs.readout_s, self.inputs.phase_encoding_dir)
        unwarped = fieldmap.unwarp(np.asarray(ref.dataobj, float), ref.affine, shift,
                                   fieldmap.pe_axis_and_sign(self.inputs.phase_encoding_dir)[0])
        self._results["shift"] = save_image(shift.astype(np.float32), ref.affine, "shift.nii.gz", runtime.cwd)
        self._results["field_reference"] = save_image(on_ref.astype(np.float32), ref.affine, "field_reference.nii.gz",
                                                      runtime.cwd)
        self._results["unwarped"] = save_image(unwarped.astype(np.float32), ref.affine, "unwarped.nii.gz",
                                               runtime.cwd)
        return runtime
