"""nipype interfaces for the fMRI preprocessing steps."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import File, TraitedSpec, isdefined, traits

from conntool import series
from conntool.interfaces.base import ConntoolInputSpec, ConntoolInterface, node_template, template_input
from conntool.interfaces.io import load_mask, save_array, save_image
from conntool.outputs import read_tsv, write_json, write_tsv
from conntool.steps import (confounds, denoise, fieldmap, masks, motion, nonsteady, quality, registration,
                            resample, slicetime, smooth)
from conntool.steps.dwi_space import values_at_points


class _NonSteadyInput(ConntoolInputSpec):
    in_file = File(exists=True, mandatory=True)
    dummy_scans = traits.Either(traits.Int, traits.Enum("auto"), mandatory=True)


class _NonSteadyOutput(TraitedSpec):
    n_dummy = traits.Int()


class NonSteadyState(ConntoolInterface):
    """Count (or take from the config) the leading non-steady-state volumes; only the first
    volumes the detector examines are read, and nothing is written (later steps skip them)."""

    input_spec = _NonSteadyInput
    output_spec = _NonSteadyOutput

    def _run_interface(self, runtime):
        if self.inputs.dummy_scans == "auto":
            img = nib.load(self.inputs.in_file)
            self._results["n_dummy"] = nonsteady.count_nonsteady_volumes(
                np.asarray(img.dataobj[..., :nonsteady.MAX_VOLUMES], np.float32))
        else:
            self._results["n_dummy"] = int(self.inputs.dummy_scans)
        return runtime


class _PrepareInput(ConntoolInputSpec):
    in_file = File(exists=True, mandatory=True)
    n_dummy = traits.Int(mandatory=True, desc="leading volumes dropped")
    tr = traits.Float(mandatory=True, desc="RepetitionTime from the sidecar (s); written into the output header, "
                                           "which every later step reads")
    slice_times = traits.List(traits.Float, desc="acquisition time of each slice within the TR, s; unset: no "
                                                 "slice-timing correction")
    slice_axis = traits.Enum(0, 1, 2, desc="voxel axis the slices are stacked along")


class _PrepareOutput(TraitedSpec):
    out_file = File(exists=True, desc="float32 series without the non-steady-state volumes, slice-time corrected "
                                      "when slice times are given (uncompressed)")
    median = File(exists=True, desc="the median of evenly spaced volumes of it (motion.reference_volumes), the "
                                    "reference of motion correction")


class PrepareSeries(ConntoolInterface):
    """The one read of the raw BOLD: drop the non-steady-state volumes, correct slice timing
    (each slice's series re-sampled at the middle of the acquisition times) and take the
    median of evenly spaced volumes as the motion reference, streaming (:mod:`conntool.series`)."""

    input_spec = _PrepareInput
    output_spec = _PrepareOutput

    def _run_interface(self, runtime):
        i = self.inputs
        img = nib.load(i.in_file)
        shape = img.shape[:3] + (img.shape[3] - i.n_dummy,)
        out_file = os.path.join(runtime.cwd, "bold_prepared.nii")
        with series.SeriesWriter(out_file, shape, img.affine, tr=i.tr) as writer:
            for chunk, data in series.iter_volumes(i.in_file, i.chunk_mb, start=i.n_dummy):
                writer.write_volumes(slice(chunk.start - i.n_dummy, chunk.stop - i.n_dummy), data)
        median = np.empty(shape[:3], np.float32)
        picked = motion.reference_volumes(shape[3])
        with series.SeriesWriter.reopen(out_file) as writer:
            times = np.asarray(i.slice_times) if isdefined(i.slice_times) else None
            for planes in series.slab_chunks(shape, i.chunk_mb):
                data = series.read_slab(out_file, planes)
                if times is not None:
                    data = slicetime.slice_time_correct(data, times[planes] if i.slice_axis == 2 else times, i.tr,
                                                        ref_time=(times.min() + times.max()) / 2,
                                                        slice_axis=i.slice_axis)
                    writer.write_slab(planes, data)
                median[:, :, planes] = np.median(data[..., picked], axis=-1)
        self._results["out_file"] = out_file
        self._results["median"] = save_image(median, img.affine, "median.nii", runtime.cwd)
        return runtime


class _MotionInput(ConntoolInputSpec):
    in_file = File(exists=True, mandatory=True)
    reference = File(exists=True, mandatory=True, desc="the volume every volume is registered to")
    separation_mm = traits.Float(0.0, usedefault=True, desc="reference voxels sampled this far apart (0: all)")


class _MotionOutput(TraitedSpec):
    transforms = File(exists=True, desc="(T, 4, 4) reference → volume, RAS mm")
    parameters = File(exists=True, desc="TSV of 6 rigid parameters and FD")
    boldref = File(exists=True, desc="median of motion-corrected volumes")


class MotionCorrection(ConntoolInterface):
    """Rigid per-volume registration to the run's median volume, streaming; then a BOLD
    reference: the median of the same evenly spaced volumes (:func:`motion.reference_volumes`),
    motion-corrected."""

    input_spec = _MotionInput
    output_spec = _MotionOutput

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_file)
        volumes = (data[..., t] for _, data in series.iter_volumes(self.inputs.in_file, self.inputs.chunk_mb)
                   for t in range(data.shape[-1]))
        transforms = motion.estimate_motion(volumes, img.affine, np.asarray(nib.load(self.inputs.reference).dataobj),
                                            separation_mm=self.inputs.separation_mm)
        params = motion.motion_parameters(transforms, motion.volume_centre(img))
        table = pd.DataFrame(params, columns=confounds.MOTION)
        table["framewise_displacement"] = motion.framewise_displacement(params)
        picked = motion.reference_volumes(img.shape[3])
        coords = resample.grid_world_coords(img)
        in_fov = resample.series_fov(img.shape, img.affine, coords, transforms[picked])  # 0 outside, as before
        corrected = np.stack([resample.resample_volumes(np.asarray(img.dataobj[..., t:t + 1], np.float32), img.affine,
                                                        coords, transforms[[t]], in_fov, order=1)[..., 0]
                              for t in picked], axis=-1)
        self._results["transforms"] = save_array(transforms, "motion_transforms.npy", runtime.cwd)
        self._results["parameters"] = str(write_tsv(os.path.join(runtime.cwd, "motion.tsv"), table))
        self._results["boldref"] = save_image(np.median(corrected, axis=-1), img.affine, "boldref.nii", runtime.cwd)
        return runtime


class _CoregInput(ConntoolInputSpec):
    boldref = File(exists=True, mandatory=True)
    t1w = File(exists=True, mandatory=True, desc="skull-stripped T1w")
    sampling = traits.Float(1.0, usedefault=True, desc="share of the BOLD reference's voxels mutual information samples")


class _CoregOutput(TraitedSpec):
    t1w_to_boldref = File(exists=True, desc="4x4 RAS, T1w point → BOLD reference point")
    similarity = traits.Float(desc="normalised mutual information of BOLD reference and T1w, in [1, 2]")


class Coregistration(ConntoolInterface):
    """Rigid BOLD reference ↔ T1w registration (DIPY, mutual information), and its NMI."""

    input_spec = _CoregInput
    output_spec = _CoregOutput

    def _run_interface(self, runtime):
        t1w, boldref = nib.load(self.inputs.t1w), nib.load(self.inputs.boldref)
        matrix = motion.estimate_linear(t1w, boldref, sampling_proportion=motion.preset_sampling(self.inputs.sampling))
        self._results["t1w_to_boldref"] = save_array(matrix, "t1w_to_boldref.npy", runtime.cwd)
        self._results["similarity"] = quality.coregistration_nmi(boldref, t1w, matrix)
        return runtime


class _ResampleInput(ConntoolInputSpec):
    in_file = File(exists=True, mandatory=True)
    motion_transforms = File(exists=True, mandatory=True)
    t1w_to_boldref = File(exists=True, mandatory=True)
    coordmap = File(exists=True, mandatory=True)
    template = template_input()
    resolution_mm = traits.Float(mandatory=True)
    boldref = File(exists=True, mandatory=True, desc="the BOLD reference (as acquired, distorted)")
    shift = File(exists=True, desc="voxel shift map on the reference grid; unset: no distortion correction")
    phase_encoding_dir = traits.Str(desc="BIDS PhaseEncodingDirection (with shift)")


class _ResampleOutput(TraitedSpec):
    out_file = File(exists=True)
    fov_mask = File(exists=True)
    boldref_std = File(exists=True, desc="the BOLD reference through the same chain (no motion)")


class ResampleToTemplate(ConntoolInterface):
    """Motion, susceptibility distortion (when a shift map is given, with the Jacobian),
    coregistration and normalisation applied in one interpolation."""

    input_spec = _ResampleInput
    output_spec = _ResampleOutput

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_file)
        grid = node_template(self.inputs).grid(self.inputs.resolution_mm)
        t1w_coords = registration.resample_coordmap(nib.load(self.inputs.coordmap), grid)
        ref_coords = resample.apply_affine_to_coords(np.load(self.inputs.t1w_to_boldref), t1w_coords)
        boldref = nib.load(self.inputs.boldref)
        jacobian = np.ones(grid.shape[:3], np.float32)
        if isdefined(self.inputs.shift):
            axis, _ = fieldmap.pe_axis_and_sign(self.inputs.phase_encoding_dir)
            ref_coords, jacobian = fieldmap.distorted_points(ref_coords, np.asarray(nib.load(self.inputs.shift).dataobj,
                                                                                    float), boldref.affine, axis)
            jacobian = jacobian.astype(np.float32)
        transforms = np.load(self.inputs.motion_transforms)
        in_fov = resample.series_fov(img.shape, img.affine, ref_coords, transforms)
        tr = float(img.header.get_zooms()[3])
        out_file = os.path.join(runtime.cwd, "bold_std.nii")
        with series.SeriesWriter(out_file, grid.shape[:3] + img.shape[3:], grid.affine, tr=tr) as writer:
            for chunk, data in series.iter_volumes(self.inputs.in_file, self.inputs.chunk_mb):
                resampled = resample.resample_volumes(data, img.affine, ref_coords, transforms[chunk], in_fov,
                                                      n_threads=self.inputs.num_threads)
                writer.write_volumes(chunk, np.multiply(resampled, jacobian[..., None], out=resampled))
        reference = resample.resample_volumes(np.asarray(boldref.dataobj, np.float32)[..., None], boldref.affine,
                                              ref_coords, np.eye(4)[None], in_fov)[..., 0] * jacobian
        self._results["boldref_std"] = save_image(reference, grid.affine, "boldref_std.nii.gz", runtime.cwd)
        self._results["out_file"] = out_file
        self._results["fov_mask"] = save_image(in_fov.astype(np.uint8), grid.affine, "fov_mask.nii", runtime.cwd)
        return runtime


class _MasksInput(ConntoolInputSpec):
    fov_mask = File(exists=True, mandatory=True)
    wm = File(exists=True, mandatory=True, desc="WM probability on the T1w grid")
    csf = File(exists=True, mandatory=True, desc="CSF probability on the T1w grid")
    coordmap = File(exists=True, mandatory=True, desc="template grid → T1w world coordinates")
    template = template_input()
    threshold = traits.Float(mandatory=True, desc="WM/CSF probability threshold")
    erode_voxels = traits.Int(mandatory=True, desc="erosion iterations of the WM and CSF masks")
    min_voxels_to_erode = traits.Int(mandatory=True, desc="masks this small or smaller are not eroded")


class _MasksOutput(TraitedSpec):
    brain_mask = File(exists=True)
    wm_mask = File(exists=True)
    csf_mask = File(exists=True)


class TissueMasks(ConntoolInterface):
    """Brain (the template's), WM and CSF (the T1w's tissues, through the warp) masks on the
    template grid, inside the BOLD field of view."""

    input_spec = _MasksInput
    output_spec = _MasksOutput

    def _run_interface(self, runtime):
        fov = nib.load(self.inputs.fov_mask)
        t1w_points = registration.resample_coordmap(nib.load(self.inputs.coordmap), fov)
        probabilities = {"brain": node_template(self.inputs).brain(fov).astype(float)}
        for tissue in ("wm", "csf"):
            img = nib.load(getattr(self.inputs, tissue))
            probabilities[tissue] = values_at_points(np.asarray(img.dataobj, float), img.affine, t1w_points)
        found = masks.tissue_masks(probabilities, np.asarray(fov.dataobj) > 0, self.inputs.threshold,
                                   self.inputs.erode_voxels, self.inputs.min_voxels_to_erode)
        for tissue in ("brain", "wm", "csf"):
            self._results[f"{tissue}_mask"] = save_image(found[tissue].astype(np.uint8), fov.affine,
                                                         f"{tissue}_mask.nii.gz", runtime.cwd)
        return runtime


class _ConfoundsInput(ConntoolInputSpec):
    in_file = File(exists=True, mandatory=True)
    motion = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    wm_mask = File(exists=True, mandatory=True)
    csf_mask = File(exists=True, mandatory=True)
    acompcor_components = traits.Int(mandatory=True)


class _ConfoundsOutput(TraitedSpec):
    confounds = File(exists=True)


class Confounds(ConntoolInterface):
    """All candidate regressors of a run (motion expansions, tissue signals, aCompCor, FD, DVARS)."""

    input_spec = _ConfoundsInput
    output_spec = _ConfoundsOutput

    def _run_interface(self, runtime):
        from conntool.steps.dvars import dvars

        path = self.inputs.in_file
        motion_table = read_tsv(self.inputs.motion)
        found = {t: load_mask(getattr(self.inputs, f"{t}_mask")) for t in ("brain", "wm", "csf")}
        means, voxels = confounds.tissue_signals((data for _, data in series.iter_volumes(path, self.inputs.chunk_mb)),
                                                 found)
        shape = nib.load(path).shape

        def brain_slabs():
            for planes in series.slab_chunks(shape, self.inputs.chunk_mb):
                yield series.read_slab(path, planes)[found["brain"][:, :, planes]]

        std_dvars, plain_dvars = dvars(brain_slabs)  # as nipype's compute_dvars, streamed
        table = confounds.confounds_table(
            motion_table[confounds.MOTION].to_numpy(), motion_table["framewise_displacement"].to_numpy(),
            (std_dvars, plain_dvars), means, voxels, self.inputs.acompcor_components)
        self._results["confounds"] = str(write_tsv(os.path.join(runtime.cwd, "confounds.tsv"), table))
        return runtime


class _SmoothInput(ConntoolInputSpec):
    in_file = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True, desc="smoothing averages voxels of this mask only")
    fwhm_mm = traits.Float(mandatory=True)


class _SmoothOutput(TraitedSpec):
    out_file = File(exists=True)


class Smooth(ConntoolInterface):
    """Gaussian spatial smoothing within the brain mask (normalised convolution)."""

    input_spec = _SmoothInput
    output_spec = _SmoothOutput

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_file)
        mask = load_mask(self.inputs.brain_mask)
        out_file = os.path.join(runtime.cwd, "bold_smooth.nii")
        with series.SeriesWriter(out_file, img.shape, img.affine, tr=float(img.header.get_zooms()[3])) as writer:
            for chunk, data in series.iter_volumes(self.inputs.in_file, self.inputs.chunk_mb):
                writer.write_volumes(chunk, smooth.smooth_in_mask(data, img.affine, mask, self.inputs.fwhm_mm))
        self._results["out_file"] = out_file
        return runtime


class _DenoiseInput(ConntoolInputSpec):
    in_file = File(exists=True, mandatory=True)
    confounds = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    strategy = traits.Str(mandatory=True)
    fd_mm = traits.Either(None, traits.Float, mandatory=True)
    dvars_std = traits.Either(None, traits.Float, mandatory=True)
    min_segment_volumes = traits.Int(mandatory=True)
    min_time_s = traits.Float(mandatory=True)
    detrend = traits.Bool(mandatory=True)
    high_pass_hz = traits.Either(None, traits.Float, mandatory=True)
    low_pass_hz = traits.Either(None, traits.Float, mandatory=True)
    filter_order = traits.Int(mandatory=True)
    coreg_similarity = traits.Float(desc="NMI of BOLD reference and T1w (Coregistration); unset for "
                                         "series preprocessed elsewhere")
    t1w_similarity = traits.Float(desc="correlation of normalised T1w and template; unset as above")
    qc_extra = traits.Dict(desc="more entries of the QC JSON (e.g. the distortion correction applied)")
    n_dummy = traits.Int(0, usedefault=True, desc="leading non-steady-state volumes still in the series (as "
                                                  "fMRIPrep leaves them); never kept")


class _DenoiseOutput(TraitedSpec):
    out_file = File(exists=True, desc="denoised series of the kept volumes")
    qc = File(exists=True, desc="JSON: volumes kept, time retained, exclusion, registration similarities")
    sidecar = File(exists=True, desc="JSON sidecar of out_file: TR and which input volumes it holds")


class Denoise(ConntoolInterface):
    """Censor, regress the strategy's confounds, detrend and band-pass inside the brain mask.

    Whether the run is usable is decided first (:func:`conntool.steps.denoise.exclusion_reason`):
    an excluded run is marked ``Excluded`` with its ``Reason`` in the QC JSON (the connectivity
    node then writes no matrices), and its output is the kept volumes (all volumes if none
    is kept) with confounds and trends regressed out but *not* band-passed
    (``BandPassApplied: false``), the one cleaning that any length allows.
    """

    input_spec = _DenoiseInput
    output_spec = _DenoiseOutput

    def _run_interface(self, runtime):
        i = self.inputs
        img = nib.load(i.in_file)
        tr = float(img.header.get_zooms()[3])
        table = read_tsv(i.confounds)
        regressors = confounds.select(table, i.strategy)
        keep = denoise.censoring_mask(table["framewise_displacement"].to_numpy(), table["std_dvars"].to_numpy(),
                                      i.fd_mm, i.dvars_std, i.min_segment_volumes, i.n_dummy)
        filter_volumes = denoise.filter_min_volumes(tr, i.high_pass_hz, i.low_pass_hz, i.filter_order)
        reason = denoise.exclusion_reason(keep, tr, i.min_time_s, regressors.shape[1], i.detrend, filter_volumes)
        band_pass = reason is None and filter_volumes > 0
        qc = {"VolumesTotal": int(keep.size), "VolumesKept": int(keep.sum()), "RetainedSeconds": float(keep.sum() * tr),
              "MinimumSeconds": i.min_time_s, "CensoredVolumes": np.flatnonzero(~keep).tolist(),
              "FilterMinimumVolumes": filter_volumes, "Regressors": int(regressors.shape[1]),
              "BandPassApplied": band_pass, "NonSteadyStateVolumes": i.n_dummy,
              **denoise.motion_summary(table["framewise_displacement"].to_numpy(), keep, i.n_dummy),
              "CoregistrationNMI": i.coreg_similarity if isdefined(i.coreg_similarity) else None,
              "NormalizationCorrelation": i.t1w_similarity if isdefined(i.t1w_similarity) else None,
              **(i.qc_extra if isdefined(i.qc_extra) else {}), "Excluded": reason is not None}
        if reason is not None:
            qc["Reason"] = reason
        brain = load_mask(i.brain_mask)
        used = keep if keep.any() else np.ones_like(keep)
        source = series.uncompressed(i.in_file, runtime.cwd, i.chunk_mb)
        out_file = os.path.join(runtime.cwd, "bold_denoised.nii")
        with series.SeriesWriter(out_file, img.shape[:3] + (int(used.sum()),), img.affine, tr=tr) as writer:
            for planes in series.slab_chunks(img.shape, i.chunk_mb):  # voxel by voxel: a slab of voxels at a time
                in_slab = brain[:, :, planes]
                if in_slab.any():
                    cleaned = denoise.denoise(series.read_slab(source, planes)[in_slab].T, regressors, used, tr,
                                              i.detrend, i.high_pass_hz if band_pass else None,
                                              i.low_pass_hz if band_pass else None, i.filter_order)
                    out = np.zeros(in_slab.shape + (cleaned.shape[0],), np.float32)
                    out[in_slab] = cleaned.T
                    writer.write_slab(planes, out)
        self._results["out_file"] = out_file
        self._results["qc"] = str(write_json(os.path.join(runtime.cwd, "qc.json"), qc))
        self._results["sidecar"] = str(write_json(os.path.join(runtime.cwd, "bold_denoised.json"), {
            "RepetitionTime": tr, "VolumesOfInput": np.flatnonzero(used).tolist(),
            "ConfoundStrategy": i.strategy, "BandPassApplied": band_pass,
            "HighPass": i.high_pass_hz if band_pass else None, "LowPass": i.low_pass_hz if band_pass else None,
            "Excluded": reason is not None}))
        return runtime
