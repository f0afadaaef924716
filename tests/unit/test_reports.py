"""Report pages and QC-FC on small made-up output folders (the figures' own tests are in
test_report_*_figures.py; pages rendered in a browser: tests/report)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from conntool.cli import main
from conntool.config import load_pipeline
from conntool.outputs import dataset_description, write_json, write_tsv
from conntool.reports.group import write_group_report
from conntool.reports.layout import figure_path
from conntool.reports.methods import dmri_methods, fmri_methods
from conntool.reports.participant import write_participant_report
from conntool.reports.qcfc import qc_fc

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def test_qc_fc_equals_scipy_per_edge_and_leaves_incomplete_edges_out():
    rng = np.random.default_rng(0)
    n, k = 12, 5
    fd = rng.uniform(0.05, 0.5, n)
    matrices = rng.normal(size=(n, k, k)) * 0.1
    matrices[:, 0, 1] += 2 * fd  # one edge follows motion
    matrices = (matrices + matrices.transpose(0, 2, 1)) / 2
    matrices[3, 2, 4] = matrices[3, 4, 2] = np.nan
    result = qc_fc(matrices, fd)
    upper = [(i, j) for i in range(k) for j in range(i + 1, k) if (i, j) != (2, 4)]
    expected = [stats.pearsonr(matrices[:, i, j], fd) for i, j in upper]
    assert result.n_edges_left_out == 1 and result.r.size == len(upper)
    assert np.allclose(result.r, [e.statistic for e in expected])
    assert np.allclose(result.p, [e.pvalue for e in expected])
    assert result.fraction_significant == np.mean([e.pvalue < 0.05 for e in expected])
    assert result.p[0] < 1e-3 and result.fraction_significant_fdr >= 1 / len(upper)


def test_qc_fc_needs_four_participants():
    with pytest.raises(ValueError, match="at least 4"):
        qc_fc(np.zeros((3, 2, 2)), np.zeros(3))


def _run(out: Path, sub: str, mean_fd: float, censored: float, excluded: bool, cfg_hash: str,
         last_node_coverage: float = 1.0) -> None:
    func = out / f"sub-{sub}" / "func"
    stem = f"sub-{sub}_task-rest"
    write_json(func / f"{stem}_desc-denoise_qc.json", {
        "VolumesTotal": 100, "VolumesKept": 90, "RetainedSeconds": 180.0, "CensoredVolumes": [0, 1],
        "NonSteadyStateVolumes": 2, "Regressors": 36, "MeanFD": mean_fd, "MaxFD": 3 * mean_fd,
        "CensoredFraction": censored, "CoregistrationNMI": 1.2, "NormalizationCorrelation": 0.95,
        "Excluded": excluded, **({"Reason": "run is 20 s long"} if excluded else {})})
    names = ["7Networks_LH_Vis_1", "7Networks_LH_Vis_2", "7Networks_RH_Default_1", "7Networks_RH_Default_2"]
    atlas = f"{stem}_space-MNI152NLin2009aSym_seg-Toy"
    write_tsv(func / f"{atlas}_stat-coverage_bold.tsv",
              pd.DataFrame({"node": names, "index": [1, 2, 3, 4], "coverage": [1, 1, 0.9, last_node_coverage],
                            "included": [True, True, True, last_node_coverage >= 0.5]}))
    if not excluded:
        matrix = np.full((4, 4), 0.3 + mean_fd)
        np.fill_diagonal(matrix, 1)
        if last_node_coverage < 0.5:
            matrix[3, :] = matrix[:, 3] = np.nan
        write_tsv(func / f"{atlas}_meas-PearsonCorrelation_relmat.tsv", pd.DataFrame(matrix, columns=names))
        write_json(func / f"{atlas}_meas-PearsonCorrelation_relmat.json", {"ConfigHash": cfg_hash})
    for desc in ("motion", "carpet"):
        path = figure_path(out, "run", desc, {"sub": sub, "task": "rest"})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PNG)


@pytest.fixture
def out_dir(tmp_path):
    cfg = load_pipeline("fmri-36p-scrub")
    out = tmp_path / "out"
    dataset_description(out, "0.1.0", "connectome", cfg.to_dict(), cfg.digest(), "conntool connectome ...", {},
                        ["MNI152NLin2009cAsym"])
    for k, fd in enumerate([0.05, 0.1, 0.12, 0.15]):
        _run(out, f"{k + 1:02d}", fd, 0.05, False, cfg.digest())
    _run(out, "05", 0.6, 0.05, False, cfg.digest(), last_node_coverage=0.2)
    _run(out, "06", 0.1, 0.9, True, cfg.digest())
    return out


def test_participant_page_shows_numbers_figures_and_methods(out_dir):
    page = write_participant_report(out_dir, "05")
    text = page.read_text()
    assert page == out_dir / "sub-05.html"
    assert "0.600 / 1.800" in text and "mean FD 0.60 mm &gt; 0.25" in text
    assert 'src="sub-05/figures/sub-05_task-rest_desc-motion_bold.svg"' in text
    assert "3 of 4 nodes with data" in text and "7Networks_RH_Default_2 (20%)" in text
    assert "Parcel coverage: not drawn" in text  # no such figure on disk: said, not hidden
    assert "preset fmri-36p-scrub" in text and "censored" in text
    cited = re.findall(r"\[(\d+)\]", text)
    assert cited and max(map(int, cited)) == text.count("<li class=\"reference\">")


def test_group_page_rows_flags_and_cohort_figures(out_dir):
    page = write_group_report(out_dir)
    text = page.read_text()
    assert text.count('<tr class="flagged">') == 2  # sub-05 (mean FD, coverage) and sub-06 (excluded, censored)
    assert "excluded: run is 20 s long" in text and "Toy: 75% of nodes with data &lt; 90%" in text
    for src in re.findall(r'src="([^"]+)"', text):
        assert (out_dir / src).is_file(), src
    assert (out_dir / "group" / "figures" / "atlas-Toy_desc-qcfc_bold.svg").is_file()
    assert "QC-FC" in text and "5 runs" in text
    assert (out_dir / "sub-01.html").is_file()  # participant pages rebuilt too


def test_methods_follow_the_preset():
    cfg = load_pipeline("fmri-default").to_dict()
    text = fmri_methods(cfg, "0.1.0", from_fmriprep=False)
    assert "No volumes were censored" in text and "36P" in text and "0.01 Hz to 0.08 Hz" in text
    assert "[scrubbing]" not in text and "[syn]" in text
    assert "Atropos [atropos]" in text and "susceptibility distortion [sdc]" in text and "6 mm FWHM" in text
    older = {**cfg, "fmri": {k: v for k, v in cfg["fmri"].items() if k not in ("segmentation", "distortion_correction")}}
    assert "template's priors" in fmri_methods(older, "0.1.0", from_fmriprep=False)
    assert "Susceptibility distortion was not corrected" in fmri_methods(older, "0.1.0", from_fmriprep=False)
    assert "Other runs with two spin-echo EPI references" in text and "[topup]" in text
    assert "nilearn's MNI152 2009a template (MNI152NLin2009aSym)" in text  # outputs that record no space
    assert "the MNI152NLin2009cAsym template (TemplateFlow)" in fmri_methods(cfg, "0.1.0", from_fmriprep=False,
                                                                            spaces=["MNI152NLin2009cAsym"])
    dmri = load_pipeline("dmri-csd-prob").to_dict()
    text = dmri_methods(dmri, "0.1.0", spaces=["MNI152NLin2009cAsym"])
    assert "normalised to the MNI152NLin2009cAsym template (TemplateFlow)" in text
    assert "[topup]" in text and "white-matter probability above 0.5" in text
    older = {**dmri, "dmri": {k: v for k, v in dmri["dmri"].items()
                              if k not in ("distortion_correction", "seed_wm_threshold")}}
    assert "[topup]" not in dmri_methods(older, "0.1.0") and "white-matter probability" not in dmri_methods(
        older, "0.1.0")
    scrub = load_pipeline("fmri-36p-scrub").to_dict()
    text = fmri_methods(scrub, "0.1.0", from_fmriprep=True)
    assert "above 0.5 mm" in text and "[scrubbing]" in text and "fMRIPrep" in text and "[syn]" not in text


def test_report_command_refuses_a_folder_without_results(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a conntool output folder" in result.output and len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_figures_are_bitwise_reproducible(tmp_path):
    from matplotlib.figure import Figure

    from conntool.reports.layout import save_figure

    def draw(path):
        fig = Figure()
        ax = fig.add_subplot()
        ax.plot([1, 3, 2])
        ax.axvspan(0.5, 1.5, alpha=0.3)  # clip paths and hatches get hashed ids in SVG
        return save_figure(fig, path).read_bytes()

    for ext in (".svg", ".png"):
        assert draw(tmp_path / f"a{ext}") == draw(tmp_path / f"b{ext}")
