"""nipype interfaces for the dMRI path."""
from __future__ import annotations

import os
import time

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import File, TraitedSpec, traits

from conntool.interfaces.base import AtlasInputSpec, ConntoolInputSpec, ConntoolInterface, node_atlas
from conntool.interfaces.io import load_mask, save_array, save_image
from conntool.outputs import write_json, write_tsv
from conntool.steps import dwi_model, dwi_preproc, dwi_space, gibbs, tracking
from conntool.steps.dwi_space import t1w_points_of_dwi, template_points_of_dwi, values_at_points
from conntool.steps.motion import estimate_linear


def _load_gradients(bval: str, bvec: str, affine: np.ndarray):
    """DIPY gradient table of BIDS ``.bval``/``.bvec`` files of an image with ``affine``."""
    bvecs = np.loadtxt(bvec, ndmin=2)
    bvecs = bvecs.T if bvecs.shape[0] == 3 and bvecs.shape[1] != 3 else bvecs
    return dwi_preproc.make_gtab(np.loadtxt(bval, ndmin=1), dwi_space.bvecs_for_dipy(bvecs, affine))


class _SeriesInput(ConntoolInputSpec):
    in_file = File(exists=True, mandatory=True)
    bval = File(exists=True, mandatory=True)
    bvec = File(exists=True, mandatory=True)
    method = traits.Str("mppca", usedefault=True)


class _SeriesOutput(TraitedSpec):
    out_file = File(exists=True)


class DwiDenoise(ConntoolInterface):
    """MP-PCA or Patch2Self denoising of one DWI series."""

    input_spec = _SeriesInput
    output_spec = _SeriesOutput

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_file)
        gtab = _load_gradients(self.inputs.bval, self.inputs.bvec, img.affine)
        data = dwi_preproc.denoise(np.asarray(img.dataobj, np.float32), gtab, self.inputs.method)
        self._results["out_file"] = save_image(data, img.affine, "dwi_denoised.nii", runtime.cwd)
        return runtime


class _GibbsInput(ConntoolInputSpec):
    in_file = File(exists=True, mandatory=True)
    slice_axis = traits.Enum(0, 1, 2, mandatory=True, desc="voxel axis the slices were acquired along")


class GibbsRemoval(ConntoolInterface):
    """Gibbs-ringing removal of one DWI series, in the planes of its acquired slices."""

    input_spec = _GibbsInput
    output_spec = _SeriesOutput

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_file)
        data = gibbs.remove_gibbs(np.asarray(img.dataobj, np.float32), self.inputs.slice_axis,
                                  n_threads=self.inputs.num_threads)
        self._results["out_file"] = save_image(data, img.affine, "dwi_degibbs.nii", runtime.cwd)
        return runtime


class _MotionInput(ConntoolInputSpec):
    in_files = traits.List(File(exists=True), mandatory=True, desc="series (e.g. AP then PA)")
    bvals = traits.List(File(exists=True), mandatory=True)
    bvecs = traits.List(File(exists=True), mandatory=True)
    correct = traits.Bool(True, usedefault=True)
    sampling_proportion = traits.Float(mandatory=True, desc="share of voxels sampled by each registration")
    seed = traits.Int(mandatory=True)


class _MotionOutput(TraitedSpec):
    out_file = File(exists=True, desc="combined, corrected series on the first series' grid")
    bval = File(exists=True)
    bvec = File(exists=True, desc="rotated b-vectors, BIDS/FSL frame of out_file")
    mask = File(exists=True)
    affines = File(exists=True, desc="(T, 4, 4) .npy, world mm, first-b0 point → volume point")


class DwiMotionCorrection(ConntoolInterface):
    """Concatenate the series, register every volume affinely to the first b0, rotate b-vectors,
    and mask the brain. A reverse phase-encoding pair is thus registered and combined; its
    opposite distortions are averaged, not corrected (no field is estimated)."""

    input_spec = _MotionInput
    output_spec = _MotionOutput

    def _run_interface(self, runtime):
        first = nib.load(self.inputs.in_files[0])
        data = np.concatenate([np.asarray(nib.load(f).dataobj, np.float32) for f in self.inputs.in_files], axis=-1)
        bvals = np.concatenate([np.loadtxt(f, ndmin=1) for f in self.inputs.bvals])
        bvecs = np.concatenate([np.loadtxt(f, ndmin=2) for f in self.inputs.bvecs], axis=1)
        gtab = dwi_preproc.make_gtab(bvals, bvecs)
        affines = np.repeat(np.eye(4)[None], data.shape[-1], axis=0)
        if self.inputs.correct:
            data, gtab, affines = dwi_preproc.correct_motion(data, first.affine, gtab, self.inputs.seed,
                                                             self.inputs.sampling_proportion, self.inputs.num_threads)
        mask = dwi_preproc.brain_mask(data, gtab)
        self._results["out_file"] = save_image(data, first.affine, "dwi_preproc.nii.gz", runtime.cwd)
        self._results["mask"] = save_image(mask.astype(np.uint8), first.affine, "dwi_mask.nii.gz", runtime.cwd)
        self._results["bval"] = os.path.join(runtime.cwd, "dwi.bval")
        self._results["bvec"] = os.path.join(runtime.cwd, "dwi.bvec")
        np.savetxt(self._results["bval"], gtab.bvals[None], fmt="%g")
        np.savetxt(self._results["bvec"], gtab.bvecs.T, fmt="%.6f")
        self._results["affines"] = save_array(affines, "dwi_affines.npy", runtime.cwd)
        return runtime


class _TensorInput(ConntoolInputSpec):
    in_file = File(exists=True, mandatory=True)
    bval = File(exists=True, mandatory=True)
    bvec = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)


class _TensorOutput(TraitedSpec):
    fa = File(exists=True)
    md = File(exists=True)
    ad = File(exists=True)
    rd = File(exists=True)


class TensorMaps(ConntoolInterface):
    """FA, MD, AD and RD from a tensor fit."""

    input_spec = _TensorInput
    output_spec = _TensorOutput

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_file)
        gtab = _load_gradients(self.inputs.bval, self.inputs.bvec, img.affine)
        maps = dwi_model.tensor_maps(np.asarray(img.dataobj, np.float32), gtab, load_mask(self.inputs.mask))
        for name, values in maps.items():
            self._results[name] = save_image(values, img.affine, f"{name}.nii.gz", runtime.cwd)
        return runtime


class _CoregInput(ConntoolInputSpec):
    dwi = File(exists=True, mandatory=True)
    bval = File(exists=True, mandatory=True)
    bvec = File(exists=True, mandatory=True)
    t1w = File(exists=True, mandatory=True, desc="skull-stripped T1w")


class _CoregOutput(TraitedSpec):
    t1w_to_dwi = File(exists=True, desc="4x4 RAS, T1w point → DWI point")


class DwiCoregistration(ConntoolInterface):
    """Rigid registration of the mean b0 to the T1w (DIPY, mutual information)."""

    input_spec = _CoregInput
    output_spec = _CoregOutput

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.dwi)
        gtab = _load_gradients(self.inputs.bval, self.inputs.bvec, img.affine)
        mean_b0 = nib.Nifti1Image(np.asarray(img.dataobj, np.float32)[..., gtab.b0s_mask].mean(axis=-1), img.affine)
        self._results["t1w_to_dwi"] = save_array(estimate_linear(nib.load(self.inputs.t1w), mean_b0),
                                                 "t1w_to_dwi.npy", runtime.cwd)
        return runtime


class _ToDwiInput(AtlasInputSpec):
    reference = File(exists=True, mandatory=True, desc="any image on the DWI grid")
    t1w_to_dwi = File(exists=True, mandatory=True)
    inverse_coordmap = File(exists=True, mandatory=True, desc="T1w grid → template coordinates")


class _ToDwiOutput(TraitedSpec):
    labels = File(exists=True)


class TemplateToDwi(ConntoolInterface):
    """Atlas labels on the DWI grid (nearest), through the rigid DWI → T1w and the warp."""

    input_spec = _ToDwiInput
    output_spec = _ToDwiOutput

    def _run_interface(self, runtime):
        ref = nib.load(self.inputs.reference)
        coordmap = nib.load(self.inputs.inverse_coordmap)
        points = template_points_of_dwi(ref.shape[:3], ref.affine, np.load(self.inputs.t1w_to_dwi),
                                        np.asarray(coordmap.dataobj, float), coordmap.affine)
        atlas = node_atlas(self.inputs)
        self._results["labels"] = save_image(atlas.labels_at(points), ref.affine, "labels.nii.gz", runtime.cwd)
        return runtime


class _TissuesInput(ConntoolInputSpec):
    reference = File(exists=True, mandatory=True, desc="any image on the DWI grid")
    t1w_to_dwi = File(exists=True, mandatory=True)
    wm = File(exists=True, mandatory=True, desc="WM probability on the T1w grid")
    gm = File(exists=True, mandatory=True, desc="GM probability on the T1w grid")
    csf = File(exists=True, mandatory=True, desc="CSF probability on the T1w grid")


class _TissuesOutput(TraitedSpec):
    wm = File(exists=True)
    gm = File(exists=True)
    csf = File(exists=True)


class TissuesToDwi(ConntoolInterface):
    """The T1w's tissue probabilities on the DWI grid (linear), through the rigid DWI → T1w."""

    input_spec = _TissuesInput
    output_spec = _TissuesOutput

    def _run_interface(self, runtime):
        ref = nib.load(self.inputs.reference)
        t1w_points = t1w_points_of_dwi(ref.shape[:3], ref.affine, np.load(self.inputs.t1w_to_dwi))
        for tissue in ("wm", "gm", "csf"):
            img = nib.load(getattr(self.inputs, tissue))
            values = values_at_points(np.asarray(img.dataobj, float), img.affine, t1w_points).astype(np.float32)
            self._results[tissue] = save_image(values, ref.affine, f"{tissue}.nii.gz", runtime.cwd)
        return runtime


class _TrackInput(ConntoolInputSpec):
    dwi = File(exists=True, mandatory=True)
    bval = File(exists=True, mandatory=True)
    bvec = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)
    fa = File(exists=True, mandatory=True)
    wm = File(exists=True, mandatory=True)
    gm = File(exists=True, mandatory=True)
    csf = File(exists=True, mandatory=True)
    model = traits.Str(mandatory=True)
    dti_odf_power = traits.Float(mandatory=True, desc="exponent of the tensor ODF (model dti)")
    tracking = traits.Str(mandatory=True)
    stopping = traits.Str(mandatory=True)
    fa_threshold = traits.Float(mandatory=True, desc="FA stopping threshold (stopping fa)")
    seed_fa_threshold = traits.Float(mandatory=True, desc="seeds in mask voxels with FA above this")
    seed_wm_threshold = traits.Float(mandatory=True, desc="... and WM probability above this (0: FA alone)")
    seeds_per_voxel = traits.Int(mandatory=True)
    step_size_mm = traits.Float(mandatory=True)
    max_angle_deg = traits.Float(mandatory=True)
    min_length_mm = traits.Float(mandatory=True)
    max_length_mm = traits.Float(mandatory=True)
    seed = traits.Int(mandatory=True)
    sidecar = traits.Dict(desc="provenance added to the tractogram's sidecar")


class _TrackOutput(TraitedSpec):
    tractogram = File(exists=True)
    sidecar = File(exists=True)


class Tractography(ConntoolInterface):
    """Fibre model fit and local tractography seeded in the brain mask where FA exceeds
    ``seed_fa_threshold`` and the T1w's white-matter probability (on the DWI grid) exceeds
    ``seed_wm_threshold``."""

    input_spec = _TrackInput
    output_spec = _TrackOutput

    def _run_interface(self, runtime):
        from dipy.io.stateful_tractogram import Space, StatefulTractogram
        from dipy.io.streamline import save_tractogram

        img = nib.load(self.inputs.dwi)
        gtab = _load_gradients(self.inputs.bval, self.inputs.bvec, img.affine)
        mask = load_mask(self.inputs.mask)
        fa = np.asarray(nib.load(self.inputs.fa).dataobj, float)
        started = time.perf_counter()
        fit, sh_order = dwi_model.fit_fibre_model(np.asarray(img.dataobj, np.float32), gtab, mask, self.inputs.model)
        fitted = time.perf_counter()
        tissue = {t: np.asarray(nib.load(getattr(self.inputs, t)).dataobj, float) for t in ("wm", "gm", "csf")}
        recipe = tracking.TrackerRecipe(
            dwi_model.pmf_source(fit, self.inputs.model, self.inputs.dti_odf_power), self.inputs.tracking,
            self.inputs.max_angle_deg, (self.inputs.stopping, fa, self.inputs.fa_threshold, tissue,
                                        self.inputs.step_size_mm, float(np.mean(img.header.get_zooms()[:3]))))
        seed_mask = mask & (fa > self.inputs.seed_fa_threshold) & (tissue["wm"] > self.inputs.seed_wm_threshold)
        streamlines = tracking.track(recipe, seed_mask, img.affine, self.inputs.seeds_per_voxel,
                                     self.inputs.step_size_mm, self.inputs.min_length_mm, self.inputs.max_length_mm,
                                     self.inputs.seed, n_processes=self.inputs.num_threads)
        tracked = time.perf_counter()
        # for benchmarks, in the node's result file only (no output holds it, so outputs stay reproducible)
        runtime.seconds = {"fibre_model": fitted - started, "tracking": tracked - fitted}
        path = os.path.join(runtime.cwd, "tractogram.trx")
        save_tractogram(StatefulTractogram(streamlines, img, Space.RASMM), path, bbox_valid_check=False)
        self._results["tractogram"] = path
        self._results["sidecar"] = str(write_json(os.path.join(runtime.cwd, "tractogram.json"), {
            **self.inputs.sidecar,
            "StreamlineCount": len(streamlines), "RandomSeed": self.inputs.seed, "Model": self.inputs.model,
            "DtiOdfPower": self.inputs.dti_odf_power if self.inputs.model == "dti" else None,
            "Shells": dwi_preproc.shells(gtab.bvals), "UniqueDirections": dwi_model.unique_directions(gtab),
            "SphericalHarmonicOrder": sh_order, "Tracking": self.inputs.tracking, "Stopping": self.inputs.stopping,
            "StoppingFaThreshold": self.inputs.fa_threshold if self.inputs.stopping == "fa" else None,
            "SeedFaThreshold": self.inputs.seed_fa_threshold, "SeedWmThreshold": self.inputs.seed_wm_threshold,
            "SeedVoxels": int(seed_mask.sum()), "SeedsPerVoxel": self.inputs.seeds_per_voxel,
            "StepSizeMM": self.inputs.step_size_mm, "MaxAngleDeg": self.inputs.max_angle_deg,
            "LengthLimitsMM": [self.inputs.min_length_mm, self.inputs.max_length_mm]}))
        return runtime


class _SCInput(AtlasInputSpec):
    tractogram = File(exists=True, mandatory=True)
    reference = File(exists=True, mandatory=True)
    labels = File(exists=True, mandatory=True)
    fa = File(exists=True, mandatory=True)
    search_radius_mm = traits.Float(mandatory=True, desc="endpoint-to-node radial search")
    sidecar = traits.Dict()


class _SCOutput(TraitedSpec):
    matrices = traits.Dict(traits.Str, File(exists=True), desc="file key (see sc_files) → file")


SC_MEASURES = ("StreamlineCount", "StreamlineCountVolumeNormalized", "MeanLength", "MeanFA")


def sc_files() -> dict[str, tuple[str, str]]:
    """Every file StructuralConnectivity writes: key (``MeanFA.json``) → (measure, extension)."""
    return {f"{measure}{ext}": (measure, ext) for measure in SC_MEASURES for ext in (".tsv", ".json")}


class StructuralConnectivity(ConntoolInterface):
    """Structural connectivity matrices of one atlas from a tractogram."""

    input_spec = _SCInput
    output_spec = _SCOutput

    def _run_interface(self, runtime):
        from dipy.io.streamline import load_tractogram

        atlas = node_atlas(self.inputs)
        reference = nib.load(self.inputs.reference)
        sft = load_tractogram(self.inputs.tractogram, self.inputs.reference, bbox_valid_check=False)
        labels = np.asarray(nib.load(self.inputs.labels).dataobj)
        fa = np.asarray(nib.load(self.inputs.fa).dataobj, float)
        radius = self.inputs.search_radius_mm / float(np.mean(reference.header.get_zooms()[:3]))
        matrices = tracking.structural_matrices(sft.streamlines, reference.affine, labels, atlas.label_ids, fa,
                                                search_radius_voxels=radius)
        present = np.isin(atlas.label_ids, np.unique(labels))
        self._results["matrices"] = {}
        for key, (measure, ext) in sc_files().items():
            path = os.path.join(runtime.cwd, key)
            self._results["matrices"][key] = path
            if ext == ".tsv":
                write_tsv(path, pd.DataFrame(matrices[measure], columns=list(atlas.label_names)))
                continue
            write_json(path, {**self.inputs.sidecar, "Measure": measure, "NodeCount": atlas.n_nodes,
                              "NodesNotInDwiFieldOfView": [n for n, p in zip(atlas.label_names, present)
                                                           if not p and n not in atlas.labels_not_in_image],
                              "StreamlineCount": len(sft.streamlines)})
        return runtime
