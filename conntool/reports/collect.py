"""Read what a run of conntool left in OUTPUT_DIR, for the reports: runs, sessions, their QC
numbers, figures and the configuration that made them. Only files on disk are used, so
``conntool report`` can rebuild every page from a finished (or copied) output folder."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from conntool.bids import filename_entities
from conntool.outputs import read_tsv
from conntool.reports.dmri_figures import streamline_length_summary
from conntool.reports.fmri_figures import excluded_nodes
from conntool.reports.layout import FIGURES, figure_path

#: Modalities of ``dataset_description.json`` whose results are fMRI runs.
FMRI_MODALITIES = ("fmri", "connectome")
#: Entities conntool adds to the source's when naming what it derives.
DERIVED_ENTITIES = ("space", "seg", "stat", "meas", "desc", "model")


@dataclass
class AtlasResult:
    name: str
    n_nodes: int
    n_with_data: int
    excluded_nodes: list[tuple[str, float]]
    figures: dict[str, Path]

    @property
    def node_coverage(self) -> float:
        return self.n_with_data / self.n_nodes if self.n_nodes else 0.0


@dataclass
class _Acquisition:
    """A run (fMRI) or session (dMRI): its file-name entities, atlases and figures."""

    entities: dict[str, str]
    atlases: list[AtlasResult]
    figures: dict[str, Path]

    @property
    def label(self) -> str:
        return "_".join(f"{k}-{v}" for k, v in self.entities.items())


@dataclass
class FmriRun(_Acquisition):
    qc: dict = field(default_factory=dict)
    config_hash: str | None = None


@dataclass
class DwiSession(_Acquisition):
    tractography: dict = field(default_factory=dict)  # the tractogram's sidecar
    lengths: dict = field(default_factory=dict)       # count, median_mm, mean_mm of its streamlines


@dataclass
class Participant:
    label: str
    runs: list[FmriRun] = field(default_factory=list)
    sessions: list[DwiSession] = field(default_factory=list)
    anat_figures: dict[str, Path] = field(default_factory=dict)


def generated_by(out_dir: Path) -> list[dict]:
    """The ``GeneratedBy`` entries of ``OUT/dataset_description.json`` (one per command run)."""
    path = Path(out_dir) / "dataset_description.json"
    return json.loads(path.read_text()).get("GeneratedBy", []) if path.is_file() else []


def participants(out_dir: Path) -> list[str]:
    """Labels of the participants with results in ``out_dir``, sorted."""
    return sorted(p.name[4:] for p in Path(out_dir).glob("sub-*") if p.is_dir())


def _of(path: Path, entities: dict[str, str]) -> bool:
    """Whether ``path`` was derived from the run or session named by ``entities``."""
    return {k: v for k, v in filename_entities(path).items() if k not in DERIVED_ENTITIES} == entities


def _existing(paths: dict[str, Path]) -> dict[str, Path]:
    return {key: path for key, path in paths.items() if path.is_file()}


def _figures(out_dir: Path, kind: str, entities: dict[str, str]) -> dict[str, Path]:
    return _existing({desc: figure_path(out_dir, kind, desc, entities) for desc in FIGURES[kind]})


def _atlas_results(out_dir: Path, folder: Path, entities: dict[str, str], pattern: str, kind: str) -> list[AtlasResult]:
    """One entry per atlas of a run/session: coverage from ``*_stat-coverage_bold.tsv`` (fMRI)
    or node count from the matrix (dMRI), and its figures."""
    results = []
    for path in sorted(folder.glob(pattern)):
        ents = filename_entities(path)
        if not _of(path, entities) or "seg" not in ents:
            continue
        table = read_tsv(path)
        if "coverage" in table:
            excluded = excluded_nodes(path)
            n_nodes, n_with_data = len(table), len(table) - len(excluded)
        else:  # a structural matrix: every node is there
            n_nodes = n_with_data = len(table.columns)
            excluded = []
        results.append(AtlasResult(ents["seg"], n_nodes, n_with_data, excluded,
                                   _figures(out_dir, kind, {**entities, "seg": ents["seg"]})))
    return results


def _config_hash(folder: Path, entities: dict[str, str]) -> str | None:
    """Config hash recorded in any matrix sidecar of the run (None for an excluded run)."""
    for path in sorted(folder.glob("*_relmat.json")):
        if _of(path, entities):
            return json.loads(path.read_text()).get("ConfigHash")
    return None


def read_participant(out_dir: Path, label: str) -> Participant:
    out_dir = Path(out_dir)
    subject_dir = out_dir / f"sub-{label}"
    result = Participant(label, anat_figures=_figures(out_dir, "anat", {"sub": label}))
    for qc_path in sorted(subject_dir.glob("**/func/*_desc-denoise_qc.json")):
        entities = {k: v for k, v in filename_entities(qc_path).items() if k not in DERIVED_ENTITIES}
        folder = qc_path.parent
        result.runs.append(FmriRun(
            entities, _atlas_results(out_dir, folder, entities, "*_stat-coverage_bold.tsv", "atlas"),
            _figures(out_dir, "run", entities), qc=json.loads(qc_path.read_text()),
            config_hash=_config_hash(folder, entities)))
    for sidecar in sorted(subject_dir.glob("**/dwi/*_tractography.json")):
        entities = {k: v for k, v in filename_entities(sidecar).items() if k not in DERIVED_ENTITIES}
        folder = sidecar.parent
        result.sessions.append(DwiSession(
            entities, _atlas_results(out_dir, folder, entities, "*_meas-StreamlineCount_relmat.tsv", "dwi_atlas"),
            _figures(out_dir, "dwi", entities), tractography=json.loads(sidecar.read_text()),
            lengths=streamline_length_summary(sidecar.with_suffix(".trx"))))
    return result


def fmri_config(out_dir: Path, config_hash: str | None) -> tuple[str, dict] | None:
    """(modality, configuration) of the fMRI command that made a run: the entry whose hash
    matches, else the first fMRI entry."""
    entries = [g for g in generated_by(out_dir) if g.get("Modality") in FMRI_MODALITIES]
    for entry in entries:
        if entry.get("ConfigHash") == config_hash:
            return entry["Modality"], entry["PipelineConfig"]
    return (entries[0]["Modality"], entries[0]["PipelineConfig"]) if entries else None


def qc_flags(run: FmriRun, thresholds: dict) -> list[str]:
    """Why a run fails the preset's QC limits (``fmri.qc``); empty when it passes."""
    qc, flags = run.qc, []

    def beyond(value, limit, above: bool) -> bool:
        return value is not None and limit is not None and (value > limit if above else value < limit)

    if qc.get("Excluded"):
        flags.append(f"excluded: {qc.get('Reason', '')}")
    if beyond(qc.get("MeanFD"), thresholds["max_mean_fd_mm"], True):
        flags.append(f"mean FD {qc['MeanFD']:.2f} mm > {thresholds['max_mean_fd_mm']:g}")
    if beyond(qc.get("CensoredFraction"), thresholds["max_censored_fraction"], True):
        flags.append(f"censored {qc['CensoredFraction']:.0%} > {thresholds['max_censored_fraction']:.0%}")
    for atlas in run.atlases:
        if beyond(atlas.node_coverage, thresholds["min_node_coverage"], False):
            flags.append(f"{atlas.name}: {atlas.node_coverage:.0%} of nodes with data "
                         f"< {thresholds['min_node_coverage']:.0%}")
    if beyond(qc.get("CoregistrationNMI"), thresholds["min_coregistration_nmi"], False):
        flags.append(f"BOLD-T1w NMI {qc['CoregistrationNMI']:.3f} < {thresholds['min_coregistration_nmi']:g}")
    if beyond(qc.get("NormalizationCorrelation"), thresholds["min_normalization_correlation"], False):
        flags.append(f"T1w-template r {qc['NormalizationCorrelation']:.3f} "
                     f"< {thresholds['min_normalization_correlation']:g}")
    return flags
