"""fMRI path: raw BOLD + T1w → denoised template-space BOLD → connectomes."""
from __future__ import annotations

import dataclasses

from pathlib import Path

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from conntool.atlases import Atlas
from conntool.bids import BoldRun, Fieldmap, Participant, PeImage, short_entities
from conntool.config import DistortionCorrection, FmriConfig, PipelineConfig
from conntool.interfaces.connectome import DerivativesSink
from conntool.interfaces.fieldmap import FieldmapHz, FieldToReference
from conntool.interfaces.fmri import (Confounds, Coregistration, MotionCorrection, NonSteadyState, PrepareSeries,
                                      ResampleToTemplate, TissueMasks)
from conntool.interfaces.report import FmriRunFigures
from conntool.outputs import bids_name, subject_folder
from conntool.templates import output_template
from conntool.workflows import node_safe
from conntool.workflows.anat import anat_outputs_to_check, init_anat_wf
from conntool.workflows.connectome import atlas_provenance, connectome_paths, init_connectome_wf
from conntool.workflows.denoise import init_denoise_wf
from conntool.workflows.fieldmap import pepolar_field_node
from conntool.workflows.report import add_anat_figures, add_participant_report, figures_node, sink_outputs
from conntool.workflows.resources import FMRI, bold_shapes, resources


def run_entities(run: BoldRun) -> dict:
    """BIDS file-name entities of a run (every one of them: ``echo``, ``ce``, ... are kept)."""
    return short_entities(run.entities)


def std_entities(run: BoldRun, cfg: FmriConfig) -> dict:
    """:func:`run_entities` of the run in the template space the preset ``cfg`` gives."""
    return {**run_entities(run), "space": output_template(cfg.normalization.template).name}


def qc_path(out_dir: Path, run: BoldRun) -> Path:
    """The run's denoising QC JSON (``desc-denoise_qc.json``)."""
    ents = run_entities(run)
    return subject_folder(out_dir, ents, "func") / bids_name({**ents, "desc": "denoise"}, "qc", ".json")


def run_paths(out_dir: Path, run: BoldRun, cfg: FmriConfig, save_bold: bool = False) -> dict:
    """Destinations of the per-run (atlas-independent) files under the preset ``cfg``; with
    ``save_bold`` also the denoised template-space series (float32) and its sidecar, for
    voxel-wise models; when the run's distortion is corrected (a fieldmap or a PEPOLAR pair)
    the field in Hz on the fieldmap's (or the pair's first image's) grid and its sidecar, as
    fMRIPrep names them (``fmap/..._fmapid-<id>_desc-preproc_fieldmap``)."""
    ents, std = run_entities(run), std_entities(run, cfg)
    folder = subject_folder(out_dir, ents, "func")
    paths = {
        "confounds": folder / bids_name({**ents, "desc": "confounds"}, "timeseries", ".tsv"),
        "qc": qc_path(out_dir, run),
        "brain_mask": folder / bids_name({**std, "desc": "brain"}, "mask", ".nii.gz"),
        "boldref": folder / bids_name(std, "boldref", ".nii.gz"),
    }
    source = field_source(run, cfg.distortion_correction)
    if source is not None:
        identifier = source.identifier if source is run.fieldmap else source[0].identifier
        fmap = {k: ents.get(k) for k in ("sub", "ses")} | {"fmapid": identifier, "desc": "preproc"}
        stem = subject_folder(out_dir, ents, "fmap") / bids_name(fmap, "fieldmap", "")
        paths.update(fieldmap=Path(f"{stem}.nii.gz"), fieldmap_sidecar=Path(f"{stem}.json"))
    if save_bold:
        stem = bids_name({**std, "desc": "denoised"}, "bold", "")
        paths.update(denoised=folder / f"{stem}.nii.gz", denoised_sidecar=folder / f"{stem}.json")
    return paths


def init_bold_wf(run: BoldRun, cfg: FmriConfig, name: str) -> pe.Workflow:
    """inputnode ``bold``, ``t1w`` (skull-stripped), ``coordmap`` (template → T1w),
    ``t1w_similarity`` (of the normalised T1w and the template), ``wm`` and ``csf`` (tissue
    probabilities on the T1w grid) → outputnode ``denoised``,
    ``brain_mask``, ``confounds``, ``qc``, and for the report ``preproc_bold`` (before
    denoising), ``wm_mask``, ``csf_mask`` (all in template space).

    Every node declares its memory and threads from the run's size (see
    :mod:`conntool.workflows.resources`)."""
    template = output_template(cfg.normalization.template)
    native, std = bold_shapes(run.path, run.n_volumes, template.grid(cfg.normalization.resolution_mm))

    def sized(node: str) -> dict:
        return resources(FMRI, node, native, std)

    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(["bold", "t1w", "coordmap", "t1w_similarity", "wm", "csf"]),
                        name="inputnode")
    outputnode = pe.Node(IdentityInterface(["denoised", "denoised_sidecar", "brain_mask", "confounds", "qc",
                                            "preproc_bold", "wm_mask", "csf_mask", "boldref", "fieldmap",
                                            "fieldmap_sidecar", "boldref_acquired", "boldref_corrected",
                                            "field_reference"]),
                         name="outputnode")
    dummies = pe.Node(NonSteadyState(dummy_scans=cfg.dummy_scans), name="nonsteady", **sized("nonsteady"))
    prepare = pe.Node(PrepareSeries(tr=run.tr), name="prepare_series", **sized("prepare_series"))
    if cfg.slice_timing and run.slice_times is not None:
        prepare.inputs.slice_times = list(run.slice_times)
        prepare.inputs.slice_axis = run.slice_axis
    mc = pe.Node(MotionCorrection(separation_mm=cfg.motion_separation_mm), name="motion_correction",
                 **sized("motion_correction"))
    coreg = pe.Node(Coregistration(sampling=cfg.coregistration_sampling), name="boldref_to_t1w",
                    **sized("boldref_to_t1w"))
    resample = pe.Node(ResampleToTemplate(template=dataclasses.asdict(template),
                                          resolution_mm=cfg.normalization.resolution_mm), name="resample",
                       **sized("resample"))
    tissue = pe.Node(TissueMasks(template=dataclasses.asdict(template), threshold=cfg.tissue_masks.threshold,
                                 erode_voxels=cfg.tissue_masks.erode_voxels,
                                 min_voxels_to_erode=cfg.tissue_masks.min_voxels_to_erode), name="tissue_masks",
                     **sized("tissue_masks"))
    nuisance = pe.Node(Confounds(acompcor_components=cfg.confounds.acompcor_components), name="confounds",
                       **sized("confounds"))
    denoise = init_denoise_wf(cfg, series_shape=std, qc_extra=distortion_correction(run, cfg))
    wf.connect([
        (inputnode, dummies, [("bold", "in_file")]),
        (inputnode, prepare, [("bold", "in_file")]),
        (dummies, prepare, [("n_dummy", "n_dummy")]),
        (prepare, mc, [("out_file", "in_file"), ("median", "reference")]),
        (prepare, resample, [("out_file", "in_file")]),
        (inputnode, coreg, [("t1w", "t1w")]),
        (inputnode, resample, [("coordmap", "coordmap")]),
        (mc, resample, [("boldref", "boldref")]),
        (mc, resample, [("transforms", "motion_transforms")]),
        (coreg, resample, [("t1w_to_boldref", "t1w_to_boldref")]),
        (resample, tissue, [("fov_mask", "fov_mask")]),
        (inputnode, tissue, [("coordmap", "coordmap"), ("wm", "wm"), ("csf", "csf")]),
        (resample, nuisance, [("out_file", "in_file")]),
        (mc, nuisance, [("parameters", "motion")]),
        (tissue, nuisance, [("brain_mask", "brain_mask"), ("wm_mask", "wm_mask"), ("csf_mask", "csf_mask")]),
        (resample, denoise, [("out_file", "inputnode.bold")]),
        (nuisance, denoise, [("confounds", "inputnode.confounds")]),
        (tissue, denoise, [("brain_mask", "inputnode.brain_mask")]),
        (coreg, denoise, [("similarity", "inputnode.coreg_similarity")]),
        (inputnode, denoise, [("t1w_similarity", "inputnode.t1w_similarity")]),
        (denoise, outputnode, [("outputnode.denoised", "denoised"), ("outputnode.qc", "qc"),
                               ("outputnode.denoised_sidecar", "denoised_sidecar")]),
        (tissue, outputnode, [("brain_mask", "brain_mask"), ("wm_mask", "wm_mask"), ("csf_mask", "csf_mask")]),
        (resample, outputnode, [("out_file", "preproc_bold"), ("boldref_std", "boldref")]),
        (nuisance, outputnode, [("confounds", "confounds")]),
    ])
    source = field_source(run, cfg.distortion_correction)
    if source is not None:
        sidecar = {"Units": "Hz", "IntendedFor": [str(run.path)], **distortion_correction(run, cfg)}
        if source is run.fieldmap:
            field = pe.Node(FieldmapHz(images=[str(p) for p in source.images], magnitude=str(source.magnitude),
                                       kind=source.kind, units=source.units,
                                       smoothing_fwhm_mm=cfg.distortion_correction.smoothing_fwhm_mm,
                                       sidecar=sidecar), name="fieldmap", **sized("fieldmap"))
            if source.echo_times is not None:
                field.inputs.echo_times = list(source.echo_times)
            anatomy = "magnitude_brain"
        else:
            field = pepolar_field_node(*source, cfg.distortion_correction.regularization, sidecar,
                                       **sized("pepolar_field"))
            anatomy = "corrected"
        unwarp = pe.Node(FieldToReference(phase_encoding_dir=run.phase_encoding_dir,
                                          readout_s=run.total_readout_time), name="fieldmap_to_boldref",
                         **sized("fieldmap_to_boldref"))
        resample.inputs.phase_encoding_dir = run.phase_encoding_dir
        wf.connect([(field, unwarp, [("field_hz", "field_hz"), (anatomy, "magnitude_brain")]),
                    (mc, unwarp, [("boldref", "reference")]),
                    (unwarp, coreg, [("unwarped", "boldref")]),
                    (unwarp, resample, [("shift", "shift")]),
                    (field, outputnode, [("field_hz", "fieldmap"), ("sidecar", "fieldmap_sidecar")]),
                    (mc, outputnode, [("boldref", "boldref_acquired")]),
                    (unwarp, outputnode, [("unwarped", "boldref_corrected"), ("field_reference", "field_reference")])])
    else:
        wf.connect(mc, "boldref", coreg, "boldref")
    return wf


def field_source(run: BoldRun, correction: DistortionCorrection) -> Fieldmap | tuple[PeImage, PeImage] | None:
    """Where the run's field comes from under the preset: its B0 fieldmap, else its PEPOLAR
    pair of ``fmap/*_epi`` (:meth:`BoldRun.pepolar_pair`), else nothing."""
    if run.fieldmap is not None and correction.fieldmap:
        return run.fieldmap
    return run.pepolar_pair() if correction.pepolar else None


def distortion_correction(run: BoldRun, cfg: FmriConfig) -> dict:
    """What the QC JSON and every sidecar record about susceptibility distortion correction."""
    source = field_source(run, cfg.distortion_correction)
    if source is None:
        if run.fieldmap is None and run.pepolar_pair() is None:
            return {"DistortionCorrection": "none: the run has no fieldmap and no fmap/*_epi pair of opposite "
                                            "phase encoding"}
        return {"DistortionCorrection": "none: switched off in the preset"}
    if source is run.fieldmap:
        return {"DistortionCorrection": f"fieldmap ({run.fieldmap.kind})",
                "FieldmapSources": [str(p) for p in (*run.fieldmap.images, run.fieldmap.magnitude)],
                "FieldmapSmoothingFWHM": cfg.distortion_correction.smoothing_fwhm_mm}
    return {"DistortionCorrection": f"pepolar ({source[0].path.name} and {source[1].path.name})",
            "FieldmapSources": [str(image.path) for image in source],
            "PepolarRegularization": cfg.distortion_correction.regularization}


def provenance(run: BoldRun, cfg: PipelineConfig) -> dict:
    """What every matrix sidecar records about how it was made."""
    f = cfg.fmri
    return {
        "Space": output_template(f.normalization.template).name, "Pipeline": cfg.name, "ConfigHash": cfg.digest(), "Source": str(run.path),
        "RepetitionTime": run.tr,
        "SliceTimingCorrected": bool(f.slice_timing and run.slice_times is not None),
        "SliceEncodingAxis": "ijk"[run.slice_axis], "PhaseEncodingDirection": run.phase_encoding_dir,
        "TotalReadoutTime": run.total_readout_time,
        "ConfoundStrategy": f.confounds.strategy, "SmoothingFWHM": f.smoothing.fwhm_mm,
        "HighPass": f.filter.high_pass_hz, "LowPass": f.filter.low_pass_hz,
        "NormalizationBackend": f.normalization.backend, "TissueSegmentation": f.segmentation.method,
        **distortion_correction(run, f),
    }


def expected_outputs(participant: Participant, atlases: list[Atlas], cfg: PipelineConfig, out_dir: Path,
                     save_bold: bool = False) -> list:
    """Every file a run of this participant writes (for the overwrite check)."""
    paths = anat_outputs_to_check(out_dir, participant, cfg.fmri, cfg.seed)
    for run in participant.bold:
        paths += list(run_paths(out_dir, run, cfg.fmri, save_bold).values())
        for atlas in atlases:
            found = connectome_paths(out_dir, std_entities(run, cfg.fmri), atlas.name, cfg.fmri.connectivity)
            paths += [found["timeseries"], found["coverage"], *found["matrices"].values()]
    return paths


def init_fmri_wf(participant: Participant, atlases: list[tuple[str, Atlas]], atlas_dir: str, cfg: PipelineConfig,
                 out_dir: Path, name: str | None = None, save_bold: bool = False, report: bool = True) -> pe.Workflow:
    """Whole fMRI path for one participant: every BOLD run × every atlas.

    ``atlases`` pairs each ``--atlas`` value with its resolved :class:`Atlas`; ``save_bold``
    also writes the denoised template-space series; ``report`` draws the QC figures and
    writes ``OUT/sub-<label>.html`` after every other output.
    """
    wf = pe.Workflow(name=name or f"fmri_sub_{participant.label}")
    template = output_template(cfg.fmri.normalization.template)
    anat = init_anat_wf(participant=participant, section=cfg.fmri, seed=cfg.seed, out_dir=out_dir)
    written = sink_outputs(anat)
    if report:
        anat_figures, anat_sink = add_anat_figures(wf, anat, cfg.fmri.normalization, out_dir, participant.label)
        written.append((anat_sink, "out_files"))
    for index, run in enumerate(participant.bold):
        tag = node_safe(bids_name(run_entities(run), "bold", ""))
        bold = init_bold_wf(run, cfg.fmri, name=f"bold_{index}_{tag}")
        _, std = bold_shapes(run.path, run.n_volumes, template.grid(cfg.fmri.normalization.resolution_mm))
        bold.inputs.inputnode.bold = str(run.path)
        wf.connect([(anat, bold, [("outputnode.coordmap", "inputnode.coordmap"),
                                  ("outputnode.t1w_brain", "inputnode.t1w"),
                                  ("outputnode.wm", "inputnode.wm"), ("outputnode.csf", "inputnode.csf"),
                                  ("outputnode.similarity", "inputnode.t1w_similarity")])])
        paths = run_paths(out_dir, run, cfg.fmri, save_bold)
        sink = pe.Node(DerivativesSink(out_paths={k: str(p) for k, p in paths.items()}), name=f"sink_run_{index}")
        wf.connect([(bold, sink, [(f"outputnode.{key}", key) for key in paths])])
        written.append((sink, "out_files"))
        if report:
            figures, figures_sink = figures_node(
                wf, FmriRunFigures(fd_threshold_mm=cfg.fmri.censoring.fd_mm), "run", out_dir, run_entities(run),
                name=f"run_figures_{index}", **resources(FMRI, "run_figures", template=std))
            wf.connect([(bold, figures, [(f"outputnode.{key}", key) for key in (
                             "preproc_bold", "denoised", "denoised_sidecar", "brain_mask", "wm_mask", "csf_mask",
                             "confounds", "qc")]),
                        (anat_figures, figures, [("t1w_template", "t1w_template")])])
            if "fieldmap" in paths:
                wf.connect(bold, "outputnode.boldref_acquired", figures, "boldref")
                wf.connect(bold, "outputnode.boldref_corrected", figures, "boldref_corrected")
                wf.connect(bold, "outputnode.field_reference", figures, "field_reference")
            written.append((figures_sink, "out_files"))
        for spec, atlas in atlases:
            tail = init_connectome_wf(spec, atlas, atlas_dir, cfg.fmri.parcellation.min_coverage,
                                      cfg.fmri.connectivity, out_dir, std_entities(run, cfg.fmri),
                                      {**provenance(run, cfg), **atlas_provenance(atlas, template.name)}, template,
                                      name=f"connectome_{index}_{node_safe(atlas.name)}", series_shape=std,
                                      report=report)
            wf.connect([(bold, tail, [("outputnode.denoised", "inputnode.bold"),
                                      ("outputnode.brain_mask", "inputnode.valid_mask"),
                                      ("outputnode.qc", "inputnode.qc")])])
            written += sink_outputs(tail)
    if report:
        add_participant_report(wf, out_dir, participant.label, written)
    return wf
