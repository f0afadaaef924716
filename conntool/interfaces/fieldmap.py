"""nipype interfaces for susceptibility distortion correction from a B0 fieldmap."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import File, TraitedSpec, traits

from conntool.interfaces.base import ConntoolInputSpec, ConntoolInterface
from conntool.interfaces.io import save_image
from conntool.outputs import write_json
from conntool.steps import fieldmap, pepolar, registration
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


def _mean_volume(path: str, volumes: list[int]) -> nib.Nifti1Image:
    """Mean of ``volumes`` of a 4D image (a 3D image is its own mean)."""
    img = nib.load(path)
    data = np.asarray(img.dataobj, np.float32)
    return nib.Nifti1Image(data[..., volumes].mean(axis=-1) if data.ndim == 4 else data, img.affine)


class _PepolarInput(ConntoolInputSpec):
    first = File(exists=True, mandatory=True, desc="EPI whose grid the field is estimated on")
    first_volumes = traits.List(traits.Int, mandatory=True, desc="its volumes averaged (e.g. the b=0)")
    first_pe = traits.Str(mandatory=True, desc="its PhaseEncodingDirection")
    first_readout_s = traits.Float(mandatory=True, desc="its TotalReadoutTime (s)")
    reversed_file = File(exists=True, mandatory=True, desc="EPI of the opposite phase-encoding direction")
    reversed_volumes = traits.List(traits.Int, mandatory=True)
    reversed_pe = traits.Str(mandatory=True)
    reversed_readout_s = traits.Float(mandatory=True)
    regularization = traits.Float(mandatory=True, desc="λ of pepolar.field_from_pair")
    sidecar = traits.Dict(desc="the field's JSON sidecar (agreement figures are added)")


class _PepolarOutput(TraitedSpec):
    field_hz = File(exists=True, desc="field (Hz) on the first EPI's grid, at the true positions")
    references = File(exists=True, desc="4D: first, reversed (on the first's grid), then each unwarped")
    corrected = File(exists=True, desc="mean of the two unwarped, inside their head mask: the pair's anatomy")
    sidecar = File(exists=True)


class PepolarField(ConntoolInterface):
    """The B0 field from two EPI references of opposite phase encoding (:mod:`conntool.steps.pepolar`).

    The sidecar records how well the pair agrees (correlation in their head mask) as acquired
    and after each is unwarped with the field: the check that the correction helped.
    """

    input_spec = _PepolarInput
    output_spec = _PepolarOutput

    def _run_interface(self, runtime):
        first = _mean_volume(self.inputs.first, self.inputs.first_volumes)
        moved = _mean_volume(self.inputs.reversed_file, self.inputs.reversed_volumes)
        a = np.asarray(first.dataobj, float)
        b = values_at_points(np.asarray(moved.dataobj, float), moved.affine, grid_world_coords(first))
        pe_axis = fieldmap.pe_axis_and_sign(self.inputs.first_pe)[0]
        factors = (pepolar.readout_factor(self.inputs.first_pe, self.inputs.first_readout_s),
                   pepolar.readout_factor(self.inputs.reversed_pe, self.inputs.reversed_readout_s))
        field = pepolar.field_from_pair(a, b, registration.voxel_sizes(first), pe_axis, *factors,
                                        regularization=self.inputs.regularization)
        unwarped = [fieldmap.unwarp(image, first.affine, factor * field, pe_axis) for image, factor in
                    zip((a, b), factors)]
        mask = fieldmap.magnitude_mask((a + b) / 2)
        sidecar = {**self.inputs.sidecar, "Units": "Hz",
                   "ReversedPairCorrelation": {"Acquired": round(pepolar.agreement(a, b, mask), 4),
                                               "Corrected": round(pepolar.agreement(*unwarped, mask), 4)}}
        self._results["field_hz"] = save_image(field.astype(np.float32), first.affine, "field_hz.nii.gz", runtime.cwd)
        self._results["references"] = save_image(np.stack([a, b, *unwarped], axis=-1).astype(np.float32),
                                                 first.affine, "pepolar_references.nii.gz", runtime.cwd)
        self._results["corrected"] = save_image((mask * (unwarped[0] + unwarped[1]) / 2).astype(np.float32),
                                                first.affine, "pepolar_corrected.nii.gz", runtime.cwd)
        self._results["sidecar"] = str(write_json(os.path.join(runtime.cwd, "field_hz.json"), sidecar))
        return runtime


class _UnwarpInput(ConntoolInputSpec):
    in_file = File(exists=True, mandatory=True, desc="EPI series (X, Y, Z, T) as acquired")
    field_hz = File(exists=True, mandatory=True, desc="field (Hz), any grid overlapping the series")
    phase_encoding_dir = traits.Str(mandatory=True)
    readout_s = traits.Float(mandatory=True)


class _UnwarpOutput(TraitedSpec):
    out_file = File(exists=True, desc="the series unwarped, same grid, float32")


class UnwarpSeries(ConntoolInterface):
    """Undo a series' susceptibility distortion with a field: the field sampled on the
    series' grid (world coordinates, linear), its voxel shift map, then
    :func:`conntool.steps.fieldmap.unwarp` (cubic spline and Jacobian) of every volume."""

    input_spec = _UnwarpInput
    output_spec = _UnwarpOutput

    def _run_interface(self, runtime):
        img, field = nib.load(self.inputs.in_file), nib.load(self.inputs.field_hz)
        on_grid = values_at_points(np.asarray(field.dataobj, float), field.affine, grid_world_coords(img))
        shift = fieldmap.shift_voxels(on_grid, self.inputs.readout_s, self.inputs.phase_encoding_dir)
        data = fieldmap.unwarp(np.asarray(img.dataobj, np.float32), img.affine, shift,
                               fieldmap.pe_axis_and_sign(self.inputs.phase_encoding_dir)[0])
        self._results["out_file"] = save_image(data, img.affine, "unwarped.nii", runtime.cwd)
        return runtime
