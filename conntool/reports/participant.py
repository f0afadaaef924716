"""A participant's HTML page, ``OUTPUT_DIR/sub-<label>.html``: per run and session the QC
numbers, the figures of ``sub-<label>/figures/`` and a methods paragraph."""
from __future__ import annotations

import re
from pathlib import Path

from conntool import __version__
from conntool.outputs import write_text
from conntool.reports import html
from conntool.reports.collect import (FMRI_MODALITIES, AtlasResult, DwiSession, FmriRun, Participant, fmri_config,
                                      generated_by, qc_flags, read_participant)
from conntool.reports.layout import FIGURES
from conntool.reports.methods import REFERENCES, dmri_methods, fmri_methods


def report_path(out_dir: Path, label: str) -> Path:
    return Path(out_dir) / f"sub-{label}.html"


def _figures(kind: str, found: dict[str, Path], page: Path) -> str:
    return "".join(html.figure(found.get(desc), spec, page) for desc, spec in FIGURES[kind].items())


def _rows(pairs: list[tuple[str, str]]) -> list[str]:
    return [f"<tr><th>{html.esc(k)}</th><td>{html.esc(v)}</td></tr>" for k, v in pairs]


def _fmt(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def _atlas_section(atlas: AtlasResult, kind: str, page: Path) -> str:
    missing = ""
    if atlas.excluded_nodes:
        names = ", ".join(f"{name} ({coverage:.0%})" for name, coverage in atlas.excluded_nodes)
        missing = f"<p>n/a nodes (coverage below the preset's minimum): {html.esc(names)}</p>"
    return (f"<h4>Atlas {html.esc(atlas.name)}: {atlas.n_with_data} of {atlas.n_nodes} nodes with data</h4>"
            f"{missing}{_figures(kind, atlas.figures, page)}")


def _run_section(run: FmriRun, thresholds: dict | None, config: dict | None, page: Path) -> str:
    qc = run.qc
    flags = qc_flags(run, thresholds) if thresholds else []
    verdict = ('<p class="ok">Within every QC limit of the preset.</p>' if not flags else
               '<ul class="flag">' + "".join(f"<li>{html.esc(f)}</li>" for f in flags) + "</ul>")
    rows = _rows([
        ("Volumes kept", f"{qc['VolumesKept']} of {qc['VolumesTotal']} ({qc.get('RetainedSeconds', 0):.0f} s)"),
        ("Non-steady-state volumes", str(qc.get("NonSteadyStateVolumes"))),
        ("Mean / max FD (mm)", f"{_fmt(qc.get('MeanFD'), '{:.3f}')} / {_fmt(qc.get('MaxFD'), '{:.3f}')}"),
        ("Fraction censored", _fmt(qc.get("CensoredFraction"), "{:.1%}")),
        ("BOLD-T1w similarity (NMI)", _fmt(qc.get("CoregistrationNMI"), "{:.3f}")),
        ("T1w-template correlation", _fmt(qc.get("NormalizationCorrelation"), "{:.3f}")),
        ("Confound regressors", str(qc.get("Regressors"))),
        ("Preset (hash)", f"{config['name'] if config else 'unknown'} ({run.config_hash or 'n/a'})"),
        ("Excluded", qc.get("Reason", "") if qc.get("Excluded") else "no"),
    ])
    atlases = "".join(_atlas_section(a, "atlas", page) for a in run.atlases)
    return (f"<h3>{html.esc(run.label)}</h3><table>{''.join(rows)}</table>{verdict}"
            f"{_figures('run', run.figures, page)}{atlases}")


def _session_section(session: DwiSession, page: Path) -> str:
    t = session.tractography
    rows = _rows([
        ("Streamlines", str(t.get("StreamlineCount"))),
        ("Median / mean length (mm)", f"{session.lengths['median_mm']:.1f} / {session.lengths['mean_mm']:.1f}"),
        ("Shells (s/mm²)", ", ".join(f"{b:g}" for b in t.get("Shells", []))),
        ("Unique directions", str(t.get("UniqueDirections"))),
        ("Model / tracking", f"{t.get('Model')} / {t.get('Tracking')}"),
        ("Preset (hash)", f"{t.get('Pipeline')} ({t.get('ConfigHash')})"),
    ])
    atlases = "".join(_atlas_section(a, "dwi_atlas", page) for a in session.atlases)
    return (f"<h3>{html.esc(session.label)}</h3><table>{''.join(rows)}</table>"
            f"{_figures('dwi', session.figures, page)}{atlases}")


def _methods(out_dir: Path, result: Participant) -> str:
    paragraphs = []
    for entry in generated_by(out_dir):
        modality, cfg = entry.get("Modality"), entry.get("PipelineConfig", {})
        version = entry.get("Version", __version__)
        if modality in FMRI_MODALITIES and result.runs and cfg.get("fmri"):
            paragraphs.append(fmri_methods(cfg, version, from_fmriprep=modality == "connectome",
                                           spaces=entry.get("Spaces")))
        elif modality == "dmri" and result.sessions and cfg.get("dmri"):
            paragraphs.append(dmri_methods(cfg, version, spaces=entry.get("Spaces")))
    cited = list(dict.fromkeys(re.findall(r"\[(\w+)\]", " ".join(paragraphs))))  # in order of first mention
    number = {key: n + 1 for n, key in enumerate(cited)}
    numbered = [re.sub(r"\[(\w+)\]", lambda m: f"[{number[m[1]]}]", p) for p in paragraphs]
    body = "".join(f"<p>{html.esc(p)}</p>" for p in numbered)
    refs = "".join(f'<li class="reference">{html.esc(REFERENCES[k])}</li>' for k in cited)
    return f'<h2>Methods</h2><div class="methods">{body}<ol>{refs}</ol></div>'


def write_participant_report(out_dir: Path, label: str) -> Path:
    """Write ``OUT/sub-<label>.html`` from the participant's results and figures on disk."""
    out_dir = Path(out_dir)
    page = report_path(out_dir, label)
    result = read_participant(out_dir, label)
    parts = [f"<p>conntool {html.esc(__version__)}; output folder {html.esc(out_dir.name)}.</p>"]
    if result.anat_figures:
        parts.append(f"<h2>Anatomy</h2>{_figures('anat', result.anat_figures, page)}")
    if result.runs:
        parts.append("<h2>Functional MRI</h2>")
        for run in result.runs:
            found = fmri_config(out_dir, run.config_hash)
            config = found[1] if found else None
            thresholds = config["fmri"].get("qc") if config else None
            parts.append(_run_section(run, thresholds, config, page))
    if result.sessions:
        parts.append("<h2>Diffusion MRI</h2>" + "".join(_session_section(s, page) for s in result.sessions))
    parts.append(_methods(out_dir, result))
    return write_text(page, html.page(f"conntool report: sub-{label}", "\n".join(parts)))
