"""fMRIPrep derivatives → connectomes: the denoising and connectome tail of the fMRI path on
series another tool already preprocessed into a standard space."""
from __future__ import annotations

from pathlib import Path

from nipype.pipeline import engine as pe

from conntool.atlases import Atlas
from conntool.bids import short_entities
from conntool.config import PipelineConfig
from conntool.fmriprep import PreprocParticipant, PreprocRun
from conntool.interfaces.connectome import DerivativesSink
from conntool.interfaces.report import FmriRunFigures
from conntool.outputs import bids_name, subject_folder
from conntool.templates import output_template
from conntool.workflows import node_safe
from conntool.workflows.connectome import atlas_provenance, connectome_paths, init_connectome_wf
from conntool.workflows.denoise import init_denoise_wf
from conntool.workflows.report import add_participant_report, figures_node, sink_outputs
from conntool.workflows.resources import FMRI, image_shape, resources


def preproc_entities(run: PreprocRun) -> dict:
    """BIDS entities of the run's outputs: the source's, with its standard space."""
    return {**short_entities(run.entities), "space": run.space}


def preproc_run_paths(out_dir: Path, run: PreprocRun, save_bold: bool = False) -> dict:
    """Destinations of the per-run (atlas-independent) files: the denoising QC JSON, and with
    ``save_bold`` the denoised series (float32) and its sidecar."""
    ents = short_entities(run.entities)
    folder = subject_folder(out_dir, ents, "func")
    paths = {"qc": folder / bids_name({**ents, "desc": "denoise"}, "qc", ".json")}
    if save_bold:
        stem = bids_name({**ents, "space": run.space, "desc": "denoised"}, "bold", "")
        paths.update(denoised=folder / f"{stem}.nii.gz", denoised_sidecar=folder / f"{stem}.json")
    return paths


def preproc_provenance(run: PreprocRun, cfg: PipelineConfig) -> dict:
    f = cfg.fmri
    return {
        "Space": run.space, "Pipeline": cfg.name, "ConfigHash": cfg.digest(), "Source": str(run.path),
        "ConfoundsSource": str(run.confounds), "Preprocessing": "fMRIPrep derivatives", "RepetitionTime": run.tr,
        "ConfoundStrategy": f.confounds.strategy, "SmoothingFWHM": f.smoothing.fwhm_mm,
        "HighPass": f.filter.high_pass_hz, "LowPass": f.filter.low_pass_hz,
    }


def expected_preproc_outputs(participant: PreprocParticipant, atlases: list[Atlas], cfg: PipelineConfig,
                             out_dir: Path, save_bold: bool = False) -> list[Path]:
    """Every file a run of this participant writes (for the overwrite check)."""
    paths = []
    for run in participant.bold:
        paths += list(preproc_run_paths(out_dir, run, save_bold).values())
        for atlas in atlases:
            found = connectome_paths(out_dir, preproc_entities(run), atlas.name, cfg.fmri.connectivity)
            paths += [found["timeseries"], found["coverage"], *found["matrices"].values()]
    return paths


def init_preproc_connectome_wf(participant: PreprocParticipant, atlases: list[tuple[str, Atlas]], atlas_dir: str,
                               cfg: PipelineConfig, out_dir: Path, name: str | None = None,
                               save_bold: bool = False, report: bool = True) -> pe.Workflow:
    """Every preprocessed run × every atlas of one participant: smoothing (if the preset asks),
    denoising with the run's fMRIPrep confounds (its non-steady-state volumes left out),
    parcellation within the fMRIPrep brain mask, connectivity, derivatives; with ``report``
    the QC figures (registration is fMRIPrep's: see its report) and ``OUT/sub-<label>.html``."""
    wf = pe.Workflow(name=name or f"connectome_sub_{participant.label}")
    written = []
    for index, run in enumerate(participant.bold):
        tag = node_safe(bids_name(short_entities(run.entities), "bold", ""))
        shape = image_shape(run.path)
        denoise = init_denoise_wf(cfg.fmri, name=f"denoise_{index}_{tag}", series_shape=shape)
        denoise.inputs.inputnode.bold = str(run.path)
        denoise.inputs.inputnode.confounds = str(run.confounds)
        denoise.inputs.inputnode.brain_mask = str(run.mask)
        denoise.inputs.inputnode.n_dummy = run.n_dummy
        paths = preproc_run_paths(out_dir, run, save_bold)
        sink = pe.Node(DerivativesSink(out_paths={k: str(p) for k, p in paths.items()}), name=f"sink_run_{index}")
        wf.connect([(denoise, sink, [(f"outputnode.{key}", key) for key in paths])])
        written.append((sink, "out_files"))
        if report:
            figures, figures_sink = figures_node(
                wf, FmriRunFigures(preproc_bold=str(run.path), brain_mask=str(run.mask), confounds=str(run.confounds),
                                   fd_threshold_mm=cfg.fmri.censoring.fd_mm),
                "run", out_dir, short_entities(run.entities), name=f"run_figures_{index}",
                **resources(FMRI, "run_figures", template=shape))
            wf.connect([(denoise, figures, [(f"outputnode.{key}", key)
                                            for key in ("denoised", "denoised_sidecar", "qc")])])
            written.append((figures_sink, "out_files"))
        for spec, atlas in atlases:
            tail = init_connectome_wf(spec, atlas, atlas_dir, cfg.fmri.parcellation.min_coverage,
                                      cfg.fmri.connectivity, out_dir, preproc_entities(run),
                                      {**preproc_provenance(run, cfg), **atlas_provenance(atlas, run.space)},
                                      output_template(run.space),
                                      name=f"connectome_{index}_{node_safe(atlas.name)}", series_shape=shape,
                                      report=report)
            tail.inputs.inputnode.valid_mask = str(run.mask)
            wf.connect([(denoise, tail, [("outputnode.denoised", "inputnode.bold"),
                                         ("outputnode.qc", "inputnode.qc")])])
            written += sink_outputs(tail)
    if report:
        add_participant_report(wf, out_dir, participant.label, written)
    return wf
