"""Report nodes: figures drawn from a run's intermediate and final files, and the participant's
page. They are separate nodes so that a failing figure never costs a matrix."""
from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterface, BaseInterfaceInputSpec, File, TraitedSpec, isdefined, traits

from conntool import series
from conntool.interfaces.base import (AtlasInputSpec, ConntoolInputSpec, ConntoolInterface, node_atlas, node_template,
                                     template_input)
from conntool.steps import segmentation
from conntool.steps.resample import sample_volume


class _FiguresOutput(TraitedSpec):
    figures = traits.Dict(desc="figure desc → file (the descs of conntool.reports.layout.FIGURES)")


def _path(cwd: str, name: str) -> str:
    return os.path.join(cwd, name)


def t1w_in_template(t1w: nib.Nifti1Image, coordmap: nib.Nifti1Image) -> nib.Nifti1Image:
    """The T1w on the template grid of ``coordmap`` (template voxel → T1w world mm); 0 where
    the map is undefined."""
    coords = np.asarray(coordmap.dataobj, float)
    valid = np.isfinite(coords).all(axis=-1)
    data = np.zeros(coords.shape[:3], np.float32)
    data[valid] = sample_volume(np.asarray(t1w.dataobj, np.float32), t1w.affine, coords[valid], order=1)
    return nib.Nifti1Image(data, coordmap.affine)


class _AnatInput(ConntoolInputSpec):
    t1w_brain = File(exists=True, mandatory=True)
    coordmap = File(exists=True, mandatory=True, desc="template grid → T1w world coordinates")
    template = template_input()
    template_resolution_mm = traits.Float(mandatory=True)
    gm = File(exists=True, desc="GM probability, T1w grid (with wm and csf: the segmentation figure)")
    wm = File(exists=True)
    csf = File(exists=True)


class _AnatOutput(_FiguresOutput):
    t1w_template = File(exists=True, desc="skull-stripped T1w on the template grid")


class AnatFigures(ConntoolInterface):
    """T1w → template (the normalised T1w with the template's edges) and the T1w's segmentation."""

    input_spec = _AnatInput
    output_spec = _AnatOutput

    def _run_interface(self, runtime):
        from conntool.reports.fmri_figures import plot_registration, plot_tissue_masks

        t1w = nib.load(self.inputs.t1w_brain)
        warped = t1w_in_template(t1w, nib.load(self.inputs.coordmap))
        self._results["t1w_template"] = _path(runtime.cwd, "t1w_template.nii.gz")
        nib.save(warped, self._results["t1w_template"])
        template = node_template(self.inputs).t1w(self.inputs.template_resolution_mm)
        figures = {"normalization": plot_registration(warped, template, _path(runtime.cwd, "normalization.png"),
                                                      title="T1w with template edges")}
        if isdefined(self.inputs.gm):
            found = {t: np.asarray(nib.load(getattr(self.inputs, t)).dataobj) for t in segmentation.TISSUES}
            labels = segmentation.hard_labels(found, sum(found.values()) > 0)
            masks = {t.upper(): nib.Nifti1Image((labels == value).astype(np.uint8), t1w.affine)
                     for t, value in segmentation.DSEG_LABELS.items()}
            figures["segmentation"] = plot_tissue_masks(t1w, _path(runtime.cwd, "segmentation.png"), masks,
                                                        title="Most probable tissue on the T1w")
        self._results["figures"] = {k: str(v) for k, v in figures.items()}
        return runtime


class _RunInput(ConntoolInputSpec):
    preproc_bold = File(exists=True, mandatory=True, desc="series in template space, before denoising")
    denoised = File(exists=True, mandatory=True)
    denoised_sidecar = File(exists=True, desc="JSON with VolumesOfInput")
    brain_mask = File(exists=True, mandatory=True)
    wm_mask = File(exists=True)
    csf_mask = File(exists=True)
    confounds = File(exists=True, mandatory=True, desc="TSV with motion parameters and framewise_displacement")
    qc = File(exists=True, mandatory=True, desc="denoising QC JSON")
    fd_threshold_mm = traits.Either(None, traits.Float, desc="the preset's FD censoring limit")
    t1w_template = File(exists=True, desc="T1w on the template grid (its edges on the BOLD reference)")
    boldref = File(exists=True, desc="BOLD reference as acquired (with the two inputs below: the SDC figure)")
    boldref_corrected = File(exists=True, desc="the BOLD reference unwarped")
    field_reference = File(exists=True, desc="the field (Hz) on the BOLD reference's grid")


class FmriRunFigures(ConntoolInterface):
    """Motion, carpet, BOLD → T1w, distortion-correction (runs with a fieldmap) and nuisance-mask
    figures of one run."""

    input_spec = _RunInput
    output_spec = _FiguresOutput

    def _run_interface(self, runtime):
        from conntool.reports import fmri_figures as plots

        i = self.inputs
        qc = json.loads(open(i.qc).read())
        volumes = (json.loads(open(i.denoised_sidecar).read())["VolumesOfInput"]
                   if isdefined(i.denoised_sidecar) else None)
        wm = i.wm_mask if isdefined(i.wm_mask) else None
        csf = i.csf_mask if isdefined(i.csf_mask) else None
        figures = {
            "motion": plots.plot_motion(i.confounds, _path(runtime.cwd, "motion.svg"),
                                        fd_threshold_mm=i.fd_threshold_mm, censored=qc["CensoredVolumes"],
                                        n_dummy=qc.get("NonSteadyStateVolumes", 0)),
            "carpet": plots.plot_carpet(i.preproc_bold, i.denoised, i.brain_mask, _path(runtime.cwd, "carpet.png"),
                                        wm_mask=wm, csf_mask=csf, censored=qc["CensoredVolumes"],
                                        volumes_of_input=volumes),
        }
        preproc = nib.load(i.preproc_bold)
        boldref = nib.Nifti1Image(series.mean_volume(i.preproc_bold, i.chunk_mb).astype(np.float32), preproc.affine)
        if isdefined(i.t1w_template):
            figures["coregistration"] = plots.plot_registration(
                boldref, i.t1w_template, _path(runtime.cwd, "coregistration.png"), title="BOLD reference, T1w edges")
        if isdefined(i.field_reference):
            figures["sdc"] = plots.plot_distortion_correction(i.boldref, i.boldref_corrected, i.field_reference,
                                                              _path(runtime.cwd, "sdc.png"))
        if wm is not None and csf is not None:
            figures["tissues"] = plots.plot_tissue_masks(boldref, _path(runtime.cwd, "tissues.png"),
                                                         {"brain": i.brain_mask, "WM": wm, "CSF": csf})
        self._results["figures"] = {k: str(v) for k, v in figures.items()}
        return runtime


class _AtlasInput(AtlasInputSpec):
    template = template_input()
    coverage = File(exists=True, mandatory=True)
    matrices = traits.Dict(mandatory=True, desc="file key → path, as Connectivity writes them")
    reference = File(exists=True, mandatory=True, desc="an image on the series' grid (the brain mask)")


class AtlasFigures(ConntoolInterface):
    """Parcel coverage and the Pearson matrix of one run and atlas (no matrix: excluded run)."""

    input_spec = _AtlasInput
    output_spec = _FiguresOutput

    def _run_interface(self, runtime):
        from conntool.reports import fmri_figures as plots

        atlas = node_atlas(self.inputs)
        labels = atlas.labels_on_grid(nib.load(self.inputs.reference))
        figures = {"coverage": str(plots.plot_coverage(labels, self.inputs.coverage,
                                                       _path(runtime.cwd, "coverage.png"),
                                                       background=node_template(self.inputs).t1w(2.0)))}
        pearson = [p for k, p in self.inputs.matrices.items() if k.startswith("pearson") and p.endswith(".tsv")]
        if pearson:
            figures["connectivity"] = str(plots.plot_fc_matrix(sorted(pearson)[0],
                                                               _path(runtime.cwd, "connectivity.png")))
        self._results["figures"] = figures
        return runtime


class _DwiInput(ConntoolInputSpec):
    dwi = File(exists=True, mandatory=True)
    bval = File(exists=True, mandatory=True)
    bvec = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)
    fa = File(exists=True, mandatory=True)
    tractogram = File(exists=True, mandatory=True)
    pepolar_references = File(exists=True, desc="4D: first and reversed b=0 as acquired, then unwarped (PEPOLAR)")
    field_hz = File(exists=True, desc="the PEPOLAR field (Hz) on the first series' grid")


class DwiFigures(ConntoolInterface):
    """b=0 with mask, FA, gradient table, tractogram projections and streamline lengths; the
    distortion correction when a reversed phase-encoding pair gave a field."""

    input_spec = _DwiInput
    output_spec = _FiguresOutput

    def _run_interface(self, runtime):
        from conntool.reports import dmri_figures as plots

        i = self.inputs
        self._results["figures"] = {k: str(v) for k, v in {
            "b0": plots.plot_b0_mask(i.dwi, i.bval, i.mask, _path(runtime.cwd, "b0.png")),
            "fa": plots.plot_fa(i.fa, _path(runtime.cwd, "fa.png"), mask=i.mask),
            "gradients": plots.plot_gradient_table(i.bval, i.bvec, _path(runtime.cwd, "gradients.svg")),
            "tractogram": plots.plot_tractogram(i.tractogram, i.fa, _path(runtime.cwd, "tractogram.png")),
            "lengths": plots.plot_streamline_lengths(i.tractogram, _path(runtime.cwd, "lengths.svg")),
        }.items()}
        if isdefined(i.pepolar_references) and isdefined(i.field_hz):
            from nilearn.image import index_img

            from conntool.reports.fmri_figures import plot_distortion_correction

            pair = [index_img(i.pepolar_references, k) for k in range(4)]
            self._results["figures"]["sdc"] = str(plot_distortion_correction(
                pair[:2], pair[2:], i.field_hz, _path(runtime.cwd, "sdc.png"),
                title="Distortion correction: b=0 as acquired (first, reversed), corrected, field (Hz)"))
        return runtime


class _ScInput(ConntoolInputSpec):
    matrices = traits.Dict(mandatory=True, desc="file key → path, as StructuralConnectivity writes them")


class StructuralFigures(ConntoolInterface):
    """The streamline-count matrix of one atlas, log scale."""

    input_spec = _ScInput
    output_spec = _FiguresOutput

    def _run_interface(self, runtime):
        from conntool.reports.dmri_figures import plot_connectivity_matrix

        counts = self.inputs.matrices["StreamlineCount.tsv"]
        self._results["figures"] = {"connectivity": str(plot_connectivity_matrix(
            counts, _path(runtime.cwd, "connectivity.png"), log=True))}
        return runtime


class _ParticipantInput(BaseInterfaceInputSpec):
    out_dir = traits.Str(mandatory=True)
    subject = traits.Str(mandatory=True)
    written = traits.List(traits.Any, desc="outputs of the participant's sinks (the page waits for them)")


class _ParticipantOutput(TraitedSpec):
    out_file = File(desc="OUT/sub-<label>.html")


class ParticipantReport(BaseInterface):
    """Write ``OUT/sub-<label>.html`` from what is on disk; always runs (the page reflects the
    folder as it is now)."""

    input_spec = _ParticipantInput
    output_spec = _ParticipantOutput
    _always_run = True

    def _run_interface(self, runtime):
        from conntool.reports.participant import write_participant_report

        self._out = str(write_participant_report(self.inputs.out_dir, self.inputs.subject))
        return runtime

    def _list_outputs(self):
        return {"out_file": self._out}
