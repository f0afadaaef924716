"""dMRI path: raw DWI (+ reverse phase-encoding pair) + T1w → tractogram → structural connectomes.

The T1w is processed once per participant; the DWI of each session is processed on its own
(series of one session are combined, sessions never are) and written under
``sub-X[/ses-Y]/dwi/``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from conntool.atlases import Atlas
from conntool.bids import DwiRun, Participant, PeImage, opposite_pair
from conntool.config import DmriConfig, PipelineConfig
from conntool.interfaces.connectome import DerivativesSink
from conntool.interfaces.dmri import (DwiCoregistration, DwiDenoise, DwiMotionCorrection, GibbsRemoval,
                                      StructuralConnectivity, TemplateToDwi, TensorMaps, TissuesToDwi, Tractography,
                                      sc_files)
from conntool.interfaces.fieldmap import UnwarpSeries
from conntool.interfaces.report import DwiFigures, StructuralFigures
from conntool.outputs import bids_name, subject_folder
from conntool.steps.dwi_preproc import B0_THRESHOLD
from conntool.steps.fieldmap import pe_axis_and_sign
from conntool.templates import output_template
from conntool.workflows import node_safe
from conntool.workflows.fieldmap import pepolar_field_node
from conntool.workflows.anat import anat_outputs_to_check, init_anat_wf
from conntool.workflows.connectome import atlas_provenance
from conntool.workflows.report import add_anat_figures, add_participant_report, figures_node, sink_outputs
from conntool.workflows.resources import DWI, dwi_shape, resources


def dwi_sessions(participant: Participant) -> dict[str, tuple[DwiRun, ...]]:
    """The participant's DWI series by session label (``""`` for series without a session),
    sessions sorted, series in their given order."""
    labels = sorted({str(run.entities.get("session", "")) for run in participant.dwi})
    return {label: tuple(r for r in participant.dwi if str(r.entities.get("session", "")) == label)
            for label in labels}


def pepolar_pair(runs: tuple[DwiRun, ...]) -> tuple[PeImage, PeImage] | None:
    """The b=0 volumes of a session's first DWI series and the first image of the opposite
    phase encoding (another series' b=0 volumes, or an ``fmap/*_epi`` intended for a series).

    None when there is no such image, or when some series lacks its phase-encoding direction
    or readout time or is encoded along another axis (it could not be unwarped with the field).
    """
    if any(r.phase_encoding_dir is None or r.total_readout_time is None for r in runs):
        return None
    axis = pe_axis_and_sign(runs[0].phase_encoding_dir)[0]
    if any(pe_axis_and_sign(r.phase_encoding_dir)[0] != axis for r in runs):
        return None

    def b0s(run: DwiRun) -> PeImage:
        volumes = np.flatnonzero(np.loadtxt(run.bval, ndmin=1) <= B0_THRESHOLD)
        return PeImage(run.path, tuple(int(v) for v in volumes), run.phase_encoding_dir, run.total_readout_time)

    return opposite_pair(b0s(runs[0]), [b0s(r) for r in runs[1:]] + [e for r in runs for e in r.epi])


def distortion_correction(pair: tuple[PeImage, PeImage] | None, d: DmriConfig) -> str:
    """What the provenance says of a session's susceptibility distortion correction, with the
    session's :func:`pepolar_pair`."""
    if not d.distortion_correction.pepolar:
        return "none: switched off in the preset"
    if pair is None:
        return "none: no b=0 image of the opposite phase-encoding direction for this session's DWI"
    return f"pepolar ({pair[0].path.name} and {pair[1].path.name})"


def dwi_paths(out_dir: Path, participant: Participant, cfg: PipelineConfig, atlas_names: list[str]) -> dict:
    """Destination of every file the dMRI path writes for one participant.

    Returns ``{session: {"preproc": {...}, "maps": {...}, "tractography": {...},
    "atlases": {atlas name: {"labels": path, "matrices": {file key: path}}}}}`` with
    ``session`` as in :func:`dwi_sessions`; each inner mapping is the ``out_paths`` of one sink.
    """
    model = "csd" if cfg.dmri.model == "csd" else "tensor"
    paths = {}
    for session in dwi_sessions(participant):
        ents = {"sub": participant.label, "ses": session, "space": "dwi"}
        folder = subject_folder(out_dir, ents, "dwi")
        preproc = {**ents, "desc": "preproc"}
        tract = {**ents, "model": model, "desc": cfg.dmri.tracking}
        paths[session] = {
            "preproc": {"dwi": folder / bids_name(preproc, "dwi", ".nii.gz"),
                        "bval": folder / bids_name(preproc, "dwi", ".bval"),
                        "bvec": folder / bids_name(preproc, "dwi", ".bvec"),
                        "mask": folder / bids_name({**ents, "desc": "brain"}, "mask", ".nii.gz")},
            "maps": {p.lower(): folder / bids_name({**ents, "model": "tensor", "desc": p}, "dwimap", ".nii.gz")
                     for p in ("FA", "MD", "AD", "RD")},
            "tractography": {"tractogram": folder / bids_name(tract, "tractography", ".trx"),
                             "sidecar": folder / bids_name(tract, "tractography", ".json")},
            "atlases": {},
        }
        pair = pepolar_pair(dwi_sessions(participant)[session]) if cfg.dmri.distortion_correction.pepolar else None
        if pair is not None:
            fmap = {"sub": participant.label, "ses": session, "fmapid": pair[1].identifier, "desc": "preproc"}
            stem = subject_folder(out_dir, ents, "fmap") / bids_name(fmap, "fieldmap", "")
            paths[session]["fieldmap"] = {"field": Path(f"{stem}.nii.gz"), "sidecar": Path(f"{stem}.json")}
        for name in atlas_names:
            seg = {**ents, "seg": name}
            paths[session]["atlases"][name] = {
                "labels": folder / bids_name(seg, "dseg", ".nii.gz"),
                "matrices": {key: folder / bids_name({**seg, "meas": measure}, "relmat", ext)
                             for key, (measure, ext) in sc_files().items()},
            }
    return paths


def expected_outputs(participant: Participant, atlases: list[Atlas], cfg: PipelineConfig, out_dir: Path) -> list:
    """Every file a run of this participant writes (for the overwrite check)."""
    found = anat_outputs_to_check(out_dir, participant, cfg.dmri, cfg.seed)
    for per_session in dwi_paths(out_dir, participant, cfg, [a.name for a in atlases]).values():
        for group in ("preproc", "maps", "tractography", "fieldmap"):
            found += list(per_session.get(group, {}).values())
        for per_atlas in per_session["atlases"].values():
            found += [per_atlas["labels"], *per_atlas["matrices"].values()]
    return found


def _out_paths(group: dict) -> dict:
    return {key: {k: str(p) for k, p in value.items()} if isinstance(value, dict) else str(value)
            for key, value in group.items()}


def init_dwi_wf(runs: tuple[DwiRun, ...], atlases: list[tuple[str, Atlas]], atlas_dir: str, cfg: PipelineConfig,
                paths: dict, name: str, report_to: tuple[Path, dict] | None = None) -> pe.Workflow:
    """DWI of one session → preprocessed DWI, tensor maps, tractogram, structural connectomes.

    Every series is denoised and de-Gibbsed (along its own slice axis), unwarped with the
    field of a reversed phase-encoding pair when the session has one (:func:`pepolar_pair`;
    the field is estimated from the raw b=0 images), then all are registered together and
    combined. inputnode ``t1w_brain``, ``inverse_coordmap``, ``wm``,
    ``gm``, ``csf`` (from the anatomical workflow); ``paths`` is this session's entry of :func:`dwi_paths`. Sinks
    write every result, so the workflow has no outputnode. Nodes declare their memory and
    threads from the series' sizes (:mod:`conntool.workflows.resources`): per series for the
    MapNodes (the largest series), the session's series concatenated for the rest.
    ``report_to`` (output folder, the session's file-name entities) adds the QC figures.
    """
    d = cfg.dmri
    largest = max((dwi_shape([r.path]) for r in runs), key=lambda shape: np.prod(shape, dtype=float))
    combined = dwi_shape([r.path for r in runs])
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(["dwi", "bval", "bvec", "t1w_brain", "inverse_coordmap", "wm", "gm", "csf"]),
                        name="inputnode")
    inputnode.inputs.dwi = [str(r.path) for r in runs]
    inputnode.inputs.bval = [str(r.bval) for r in runs]
    inputnode.inputs.bvec = [str(r.bvec) for r in runs]
    denoise = pe.MapNode(DwiDenoise(method=d.denoise), iterfield=["in_file", "bval", "bvec"], name="denoise",
                         **resources(DWI, "denoise", largest))
    motion = pe.Node(DwiMotionCorrection(correct=d.motion_correction, sampling_proportion=d.motion_sampling_proportion,
                                         seed=cfg.seed), name="motion_eddy", **resources(DWI, "motion_eddy", combined))
    wf.connect([(inputnode, denoise, [("dwi", "in_file"), ("bval", "bval"), ("bvec", "bvec")]),
                (inputnode, motion, [("bval", "bvals"), ("bvec", "bvecs")])])
    series = denoise
    if d.gibbs_removal:
        gibbs = pe.MapNode(GibbsRemoval(), iterfield=["in_file", "slice_axis"], name="gibbs",
                           **resources(DWI, "gibbs", largest))
        gibbs.inputs.slice_axis = [r.slice_axis for r in runs]
        wf.connect(denoise, "out_file", gibbs, "in_file")
        series = gibbs
    pair = pepolar_pair(runs) if d.distortion_correction.pepolar else None
    if pair is not None:
        first, reverse = pair
        field = pepolar_field_node(*pair, d.distortion_correction.regularization,
                                   {"IntendedFor": [str(r.path) for r in runs]}, **resources(DWI, "pepolar_field"))
        unwarp = pe.MapNode(UnwarpSeries(), iterfield=["in_file", "phase_encoding_dir", "readout_s"], name="unwarp",
                            **resources(DWI, "unwarp", largest))
        unwarp.inputs.phase_encoding_dir = [r.phase_encoding_dir for r in runs]
        unwarp.inputs.readout_s = [r.total_readout_time for r in runs]
        sink_field = pe.Node(DerivativesSink(out_paths=_out_paths(paths["fieldmap"])), name="sink_fieldmap")
        wf.connect([(series, unwarp, [("out_file", "in_file")]), (field, unwarp, [("field_hz", "field_hz")]),
                    (field, sink_field, [("field_hz", "field"), ("sidecar", "sidecar")])])
        series = unwarp
    wf.connect(series, "out_file", motion, "in_files")
    tensor = pe.Node(TensorMaps(), name="tensor_maps", **resources(DWI, "tensor_maps", combined))
    coreg = pe.Node(DwiCoregistration(), name="dwi_to_t1w", **resources(DWI, "dwi_to_t1w", combined))
    tissue = pe.Node(TissuesToDwi(), name="tissue_to_dwi")
    track = pe.Node(Tractography(
        model=d.model, dti_odf_power=d.dti_odf_power, tracking=d.tracking, stopping=d.stopping,
        fa_threshold=d.fa_threshold, seed_fa_threshold=d.seed_fa_threshold, seed_wm_threshold=d.seed_wm_threshold,
        seeds_per_voxel=d.seeds_per_voxel,
        step_size_mm=d.step_size_mm, max_angle_deg=d.max_angle_deg, min_length_mm=d.min_length_mm,
        max_length_mm=d.max_length_mm, seed=cfg.seed,
        sidecar={"Pipeline": cfg.name, "ConfigHash": cfg.digest(), "Sources": [str(r.path) for r in runs],
                 "Denoising": d.denoise, "GibbsRemoval": d.gibbs_removal, "MotionCorrection": d.motion_correction,
                 "MotionSamplingProportion": d.motion_sampling_proportion if d.motion_correction else None,
                 "TissueSegmentation": d.segmentation.method,
                 "DistortionCorrection": distortion_correction(pair, d)}),
        name="tractography", **resources(DWI, "tractography", combined))
    sink_preproc = pe.Node(DerivativesSink(out_paths=_out_paths(paths["preproc"])), name="sink_preproc")
    sink_maps = pe.Node(DerivativesSink(out_paths=_out_paths(paths["maps"])), name="sink_maps")
    sink_track = pe.Node(DerivativesSink(out_paths=_out_paths(paths["tractography"])), name="sink_tractography")
    wf.connect([
        (inputnode, coreg, [("t1w_brain", "t1w")]),
        (inputnode, tissue, [("wm", "wm"), ("gm", "gm"), ("csf", "csf")]),
        (motion, tensor, [("out_file", "in_file"), ("bval", "bval"), ("bvec", "bvec"), ("mask", "mask")]),
        (motion, coreg, [("out_file", "dwi"), ("bval", "bval"), ("bvec", "bvec")]),
        (motion, tissue, [("mask", "reference")]),
        (coreg, tissue, [("t1w_to_dwi", "t1w_to_dwi")]),
        (motion, track, [("out_file", "dwi"), ("bval", "bval"), ("bvec", "bvec"), ("mask", "mask")]),
        (tensor, track, [("fa", "fa")]),
        (tissue, track, [("wm", "wm"), ("gm", "gm"), ("csf", "csf")]),
        (motion, sink_preproc, [("out_file", "dwi"), ("bval", "bval"), ("bvec", "bvec"), ("mask", "mask")]),
        (tensor, sink_maps, [(key, key) for key in paths["maps"]]),
        (track, sink_track, [("tractogram", "tractogram"), ("sidecar", "sidecar")]),
    ])
    if report_to:
        out_dir, entities = report_to
        figures, _ = figures_node(wf, DwiFigures(), "dwi", out_dir, entities, name="dwi_figures",
                                  **resources(DWI, "dwi_figures", combined))
        wf.connect([(motion, figures, [("out_file", "dwi"), ("bval", "bval"), ("bvec", "bvec"), ("mask", "mask")]),
                    (tensor, figures, [("fa", "fa")]), (track, figures, [("tractogram", "tractogram")])])
        if pair is not None:
            wf.connect(field, "references", figures, "pepolar_references")
            wf.connect(field, "field_hz", figures, "field_hz")
    template = output_template(d.normalization.template).name
    for spec, atlas in atlases:
        tag = node_safe(atlas.name)
        labels = pe.Node(TemplateToDwi(atlas=spec, atlas_dir=atlas_dir, atlas_map=atlas.atlas_map),
                         name=f"atlas_to_dwi_{tag}")
        sc = pe.Node(StructuralConnectivity(atlas=spec, atlas_dir=atlas_dir, search_radius_mm=d.search_radius_mm,
                                            sidecar={
            "Pipeline": cfg.name, "ConfigHash": cfg.digest(), "NormalizationTemplate": template,
            **atlas_provenance(atlas, template),
            "RandomSeed": cfg.seed, "SearchRadiusMM": d.search_radius_mm, "TissueSegmentation": d.segmentation.method}),
                     name=f"structural_{tag}")
        sink = pe.Node(DerivativesSink(out_paths=_out_paths(paths["atlases"][atlas.name])), name=f"sink_{tag}")
        wf.connect([
            (inputnode, labels, [("inverse_coordmap", "inverse_coordmap")]),
            (motion, labels, [("mask", "reference")]),
            (coreg, labels, [("t1w_to_dwi", "t1w_to_dwi")]),
            (track, sc, [("tractogram", "tractogram")]),
            (motion, sc, [("mask", "reference")]),
            (labels, sc, [("labels", "labels")]),
            (tensor, sc, [("fa", "fa")]),
            (labels, sink, [("labels", "labels")]),
            (sc, sink, [("matrices", "matrices")]),
        ])
        if report_to:
            out_dir, entities = report_to
            figures, _ = figures_node(wf, StructuralFigures(), "dwi_atlas", out_dir, {**entities, "seg": atlas.name},
                                      name=f"sc_figures_{tag}")
            wf.connect(sc, "matrices", figures, "matrices")
    return wf


def init_dmri_wf(participant: Participant, atlases: list[tuple[str, Atlas]], atlas_dir: str, cfg: PipelineConfig,
                 out_dir: Path, name: str | None = None, report: bool = True) -> pe.Workflow:
    """Whole dMRI path for one participant: the T1w once, then one DWI workflow per session
    (see :func:`init_dwi_wf`). ``atlases`` pairs each ``--atlas`` value with its :class:`Atlas`;
    ``report`` draws the QC figures and writes ``OUT/sub-<label>.html`` after every other output."""
    wf = pe.Workflow(name=name or f"dmri_sub_{participant.label}")
    anat = init_anat_wf(participant=participant, section=cfg.dmri, seed=cfg.seed, out_dir=out_dir)
    paths = dwi_paths(out_dir, participant, cfg, [a.name for _, a in atlases])
    written = sink_outputs(anat)
    if report:
        anat_figures, anat_sink = add_anat_figures(wf, anat, cfg.dmri.normalization, out_dir, participant.label)
        written.append((anat_sink, "out_files"))
    for session, runs in dwi_sessions(participant).items():
        entities = {"sub": participant.label, "ses": session}
        dwi = init_dwi_wf(runs, atlases, atlas_dir, cfg, paths[session],
                          name=f"dwi_ses_{node_safe(session)}_wf" if session else "dwi_wf",
                          report_to=(out_dir, {k: v for k, v in entities.items() if v}) if report else None)
        wf.connect([(anat, dwi, [("outputnode.t1w_brain", "inputnode.t1w_brain"),
                                 ("outputnode.inverse_coordmap", "inputnode.inverse_coordmap"),
                                 *[(f"outputnode.{t}", f"inputnode.{t}") for t in ("wm", "gm", "csf")]])])
        written += sink_outputs(dwi)
    if report:
        add_participant_report(wf, out_dir, participant.label, written)
    return wf
