"""The group page, ``OUTPUT_DIR/group.html``: one sortable row per run and session with its QC
numbers, thumbnails and the preset's flags, and cohort figures (mean FD, mean FC, QC-FC)
in ``OUTPUT_DIR/group/figures/``."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from conntool.outputs import read_tsv, write_text, write_tsv
from conntool.reports import html
from conntool.reports.collect import FmriRun, Participant, fmri_config, participants, qc_flags, read_participant
from conntool.reports.fmri_figures import plot_fc_matrix
from conntool.reports.layout import save_figure
from conntool.reports.participant import report_path, write_participant_report
from conntool.reports.qcfc import QcFc, qc_fc


@dataclass
class CohortMatrices:
    """Pearson matrices of one atlas over the kept runs, with the runs' mean FD."""

    atlas: str
    node_names: list[str]
    matrices: np.ndarray  # (N runs, k, k)
    mean_fd: np.ndarray   # (N,) mm


def pearson_path(out_dir: Path, run: FmriRun, atlas: str) -> Path | None:
    folder = Path(out_dir) / f"sub-{run.entities['sub']}"
    if "ses" in run.entities:
        folder = folder / f"ses-{run.entities['ses']}"
    stem = run.label
    found = sorted((folder / "func").glob(f"{stem}_space-*_seg-{atlas}_meas-PearsonCorrelation_relmat.tsv"))
    return found[0] if found else None


def cohort_matrices(out_dir: Path, people: list[Participant]) -> list[CohortMatrices]:
    """Per atlas, the Pearson matrices and mean FD of every run that was kept."""
    by_atlas: dict[str, list[tuple[np.ndarray, float]]] = {}
    names: dict[str, list[str]] = {}
    for person in people:
        for run in person.runs:
            if run.qc.get("Excluded") or run.qc.get("MeanFD") is None:
                continue
            for atlas in run.atlases:
                path = pearson_path(out_dir, run, atlas.name)
                if path is None:
                    continue
                table = read_tsv(path)
                names.setdefault(atlas.name, list(table.columns))
                by_atlas.setdefault(atlas.name, []).append((table.to_numpy(float), run.qc["MeanFD"]))
    return [CohortMatrices(atlas, names[atlas], np.stack([m for m, _ in pairs]), np.array([fd for _, fd in pairs]))
            for atlas, pairs in sorted(by_atlas.items())]


def plot_mean_fd(mean_fd: np.ndarray, limit: float | None, out_file: Path) -> Path:
    """Histogram of the runs' mean FD (mm) with the preset's limit."""
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    ax.hist(mean_fd, bins=min(30, max(5, len(mean_fd))), color="#4477aa")
    if limit is not None:
        ax.axvline(limit, color="#cc3311", ls="--", label=f"QC limit {limit:g} mm")
        ax.legend(frameon=False)
    ax.set(xlabel="mean framewise displacement (mm)", ylabel="runs", title=f"Mean FD of {len(mean_fd)} runs")
    return save_figure(fig, out_file, bbox_inches="tight")


def plot_qc_fc(result: QcFc, atlas: str, out_file: Path) -> Path:
    """Distribution of the edges' QC-FC correlations, with the fraction related to motion."""
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    ax.hist(result.r, bins=50, range=(-1, 1), color="#777777")
    ax.axvline(0, color="black", lw=0.8)
    ax.set(xlabel="QC-FC: correlation of edge FC with mean FD across runs", ylabel="edges",
           title=f"{atlas}: {result.fraction_significant_fdr:.1%} of edges related to motion "
                 f"(FDR q<0.05; {result.fraction_significant:.1%} at p<0.05), N={result.n_participants}")
    ax.title.set_fontsize(9)
    return save_figure(fig, out_file, bbox_inches="tight")


def _thumbs(run: FmriRun, page: Path) -> str:
    images = [run.figures[k] for k in ("motion", "carpet") if k in run.figures]
    return "".join(f'<img class="thumb" src="{html.esc(html.relative(p, page))}" alt="{html.esc(p.stem)}">'
                   for p in images)


def _run_row(out_dir: Path, run: FmriRun, page: Path) -> tuple[str, bool]:
    found = fmri_config(out_dir, run.config_hash)
    thresholds = found[1]["fmri"].get("qc") if found else None
    flags = qc_flags(run, thresholds) if thresholds else []
    qc = run.qc
    coverage = min((a.node_coverage for a in run.atlases), default=None)
    link = html.relative(report_path(out_dir, run.entities["sub"]), page)
    cells = [f'<td><a href="{html.esc(link)}">{html.esc(run.label)}</a></td>',
             html.number(qc.get("VolumesKept"), "{:d}"), html.number(qc.get("MeanFD")), html.number(qc.get("MaxFD")),
             html.number(qc.get("CensoredFraction"), "{:.1%}"), html.number(coverage, "{:.0%}"),
             html.number(qc.get("CoregistrationNMI")), html.number(qc.get("NormalizationCorrelation")),
             f'<td class="flag" data-value="{len(flags)}">{html.esc("; ".join(flags))}</td>',
             f"<td>{_thumbs(run, page)}</td>"]
    cls = ' class="flagged"' if flags else ""
    return f"<tr{cls}>{''.join(cells)}</tr>", bool(flags)


def _cohort_section(out_dir: Path, cohort: CohortMatrices, page: Path) -> str:
    folder = Path(out_dir) / "group" / "figures"
    parts = [f"<h3>Atlas {html.esc(cohort.atlas)} ({len(cohort.matrices)} runs)</h3>"]
    if len(cohort.matrices):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an n/a node in every run stays n/a
            mean_fc = np.nanmean(cohort.matrices, axis=0)
        tsv = write_tsv(Path(out_dir) / "group" / f"atlas-{cohort.atlas}_meas-PearsonCorrelation_desc-mean_relmat.tsv",
                        pd.DataFrame(mean_fc, columns=cohort.node_names))
        png = plot_fc_matrix(tsv, folder / f"atlas-{cohort.atlas}_desc-meanfc_bold.png")
        parts.append(f'<figure><img src="{html.esc(html.relative(png, page))}" alt="mean FC">'
                     f"<figcaption><b>Mean functional connectivity</b> (Pearson, kept runs).</figcaption></figure>")
    if len(cohort.matrices) >= 4:
        result = qc_fc(cohort.matrices, cohort.mean_fd)
        svg = plot_qc_fc(result, cohort.atlas, folder / f"atlas-{cohort.atlas}_desc-qcfc_bold.svg")
        parts.append(f'<figure><img src="{html.esc(html.relative(svg, page))}" alt="QC-FC">'
                     f"<figcaption><b>QC-FC</b> (Ciric 2017): for every edge, the correlation across runs between "
                     f"its FC and the run's mean FD. {result.fraction_significant_fdr:.1%} of "
                     f"{result.r.size} edges are significantly related to motion after FDR correction "
                     f"(median |r| = {result.median_abs_r:.3f}); no covariates are modelled.</figcaption></figure>")
    else:
        parts.append('<p class="missing">QC-FC needs at least 4 kept runs.</p>')
    return "".join(parts)


def write_group_report(out_dir: Path) -> Path:
    """Rebuild every participant page, then write ``OUT/group.html``."""
    out_dir = Path(out_dir)
    page = out_dir / "group.html"
    people = [read_participant(out_dir, label) for label in participants(out_dir)]
    for person in people:
        write_participant_report(out_dir, person.label)
    parts = [f"<p>{len(people)} participants.</p>"]
    runs = [(run, _run_row(out_dir, run, page)) for person in people for run in person.runs]
    if runs:
        n_flagged = sum(flagged for _, (_, flagged) in runs)
        parts.append(f"<h2>Functional runs</h2><p>{len(runs)} runs, {n_flagged} flagged by the preset's QC limits "
                     "(click a column to sort).</p>")
        parts.append(html.table(["run", "volumes kept", "mean FD (mm)", "max FD (mm)", "censored", "nodes with data",
                                 "BOLD-T1w NMI", "T1w-template r", "flags", "motion, carpet"],
                                [row for _, (row, _) in runs], sortable=True))
        fds = np.array([run.qc["MeanFD"] for run, _ in runs if run.qc.get("MeanFD") is not None])
        if fds.size:
            found = fmri_config(out_dir, runs[0][0].config_hash)
            limit = found[1]["fmri"].get("qc", {}).get("max_mean_fd_mm") if found else None
            svg = plot_mean_fd(fds, limit, out_dir / "group" / "figures" / "desc-meanfd_bold.svg")
            parts.append(f'<figure><img src="{html.esc(html.relative(svg, page))}" alt="mean FD">'
                         "<figcaption><b>Head motion across the cohort.</b></figcaption></figure>")
        parts += [_cohort_section(out_dir, cohort, page) for cohort in cohort_matrices(out_dir, people)]
    sessions = [s for person in people for s in person.sessions]
    if sessions:
        rows = []
        for s in sessions:
            link = html.relative(report_path(out_dir, s.entities["sub"]), page)
            thumb = s.figures.get("tractogram")
            image = (f'<img class="thumb" src="{html.esc(html.relative(thumb, page))}" alt="tractogram">'
                     if thumb else "")
            rows.append(f'<tr><td><a href="{html.esc(link)}">{html.esc(s.label)}</a></td>'
                        f"{html.number(s.tractography.get('StreamlineCount'), '{:d}')}"
                        f"<td>{html.esc(', '.join(f'{b:g}' for b in s.tractography.get('Shells', [])))}</td>"
                        f"<td>{image}</td></tr>")
        parts.append("<h2>Diffusion sessions</h2>" +
                     html.table(["session", "streamlines", "shells", "tractogram"], rows, sortable=True))
    return write_text(page, html.page("conntool group report", "\n".join(parts), script=html.SORT_SCRIPT))
