import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.interfaces.fmriprep.load_confounds_scrub import optimize_scrub

from conntool.config import load_pipeline
from conntool.interfaces.fmri import Denoise
from conntool.interfaces.io import save_image
from conntool.outputs import write_tsv
from conntool.steps import confounds
from conntool.steps.denoise import (censoring_mask, denoise, drop_short_segments, exclusion_reason, motion_summary,
                                    filter_min_volumes)

MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
TISSUE = ["white_matter", "csf", "global_signal"]


def _expansion(columns):
    return (columns + [f"{c}_derivative1" for c in columns] + [f"{c}_power2" for c in columns]
            + [f"{c}_derivative1_power2" for c in columns])


def _make_table(n, n_components=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (6, 6, 6)
    data = rng.normal(100, 1, shape + (n,)).astype(np.float32)
    masks = {"brain": np.ones(shape, bool), "wm": np.zeros(shape, bool), "csf": np.zeros(shape, bool)}
    masks["wm"][:3] = True
    masks["csf"][3:] = True
    means, series = confounds.tissue_signals([data[..., :n // 2], data[..., n // 2:]], masks)
    return confounds.confounds_table(rng.normal(0, 0.1, (n, 6)), np.zeros(n), (np.zeros(n), np.zeros(n)),
                                     means, series, n_components=n_components)


@pytest.fixture
def table():
    return _make_table(40)


# The column lists conntool selected before strategies became YAML files.
FORMER_COLUMNS = {
    "6P": MOTION,
    "9P": MOTION + TISSUE,
    "24P": _expansion(MOTION),
    "36P": _expansion(MOTION) + _expansion(TISSUE),
    "aCompCor": _expansion(MOTION) + [f"w_comp_cor_{k:02d}" for k in range(3)]
    + [f"c_comp_cor_{k:02d}" for k in range(3)],
}


@pytest.mark.parametrize("strategy,count", [("6P", 6), ("9P", 9), ("24P", 24), ("36P", 36), ("aCompCor", 30)])
def test_strategies_pick_the_published_regressors(table, strategy, count):
    picked = confounds.select(table, strategy)
    assert list(picked.columns) == FORMER_COLUMNS[strategy]
    assert picked.shape[1] == count
    assert np.isfinite(picked.to_numpy()).all()


def test_strategy_naming_a_missing_column_is_an_error(table):
    with pytest.raises(ValueError, match="white_matter"):
        confounds.select(table.drop(columns="white_matter"), "9P")


def test_friston_expansion_names():
    frame = pd.DataFrame(np.arange(12.0).reshape(2, 6), columns=confounds.MOTION)
    expanded = confounds.expand(frame)
    assert "trans_x_derivative1_power2" in expanded and expanded.shape[1] == 24
    assert expanded["trans_x_derivative1"].tolist() == [0.0, 6.0]


def test_censoring_mask():
    fd = np.array([0.0, 0.1, 0.9, 0.2])
    dvars = np.array([np.nan, 1.0, 1.0, 2.0])
    assert censoring_mask(fd, dvars, 0.5, 1.5, 0).tolist() == [True, True, False, False]
    assert censoring_mask(fd, dvars, None, None, 5).all()


def test_short_segments_dropped_by_hand():
    keep = np.array([1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0], bool)
    assert drop_short_segments(keep, 5).tolist() == [False] * 3 + [True] * 5 + [False] * 5
    assert drop_short_segments(keep, 2).tolist() == keep.tolist()
    assert drop_short_segments(np.ones(3, bool), 5).all()  # nothing censored: rule not applied (as nilearn)


@pytest.mark.parametrize("seed", range(6))
def test_segment_rule_agrees_with_nilearn_scrub(seed):
    rng = np.random.default_rng(seed)
    n = 150
    fd = np.abs(rng.normal(0, 0.25, n))  # about 5 % of volumes above 0.5 mm
    fd[rng.choice(n, 8, replace=False)] += 1.0
    outliers = np.flatnonzero(fd > 0.5)
    expected = np.ones(n, bool)
    expected[optimize_scrub(outliers, n, 5)] = False
    ours = censoring_mask(fd, np.zeros(n), 0.5, None, 5)
    assert ours.tolist() == expected.tolist()
    assert (~ours).sum() > outliers.size  # the segment rule censored more than the FD limit alone


def test_denoise_removes_a_confound_and_censors():
    rng = np.random.default_rng(0)
    n = 120
    nuisance = rng.normal(size=n)
    signal = rng.normal(size=(n, 5))
    series = signal + 5 * nuisance[:, None]
    keep = np.ones(n, bool)
    keep[[10, 50]] = False
    cleaned = denoise(series, pd.DataFrame({"x": nuisance}), keep, tr=2.0, detrend=True,
                      high_pass_hz=None, low_pass_hz=None, order=5)
    assert cleaned.shape == (n - 2, 5)
    assert abs(np.corrcoef(cleaned[:, 0], nuisance[keep])[0, 1]) < 0.05
    assert np.corrcoef(cleaned[:, 0], signal[keep, 0])[0, 1] > 0.95


@pytest.mark.parametrize("tr,high,low", [(1.0, 0.01, 0.08), (2.0, None, 0.1), (0.8, 0.01, None)])
def test_filter_length_rule_is_where_nilearn_starts_to_work(tr, high, low):
    need = filter_min_volumes(tr, high, low, 5)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="padlen"):
        denoise(rng.normal(size=(need - 1, 2)), pd.DataFrame(), np.ones(need - 1, bool), tr, True, high, low, 5)
    assert denoise(rng.normal(size=(need, 2)), pd.DataFrame(), np.ones(need, bool), tr, True, high, low,
                   5).shape == (need, 2)
    assert filter_min_volumes(tr, None, None, 5) == 0


def test_exclusion_reasons_in_order():
    default = load_pipeline("fmri-default").fmri
    band = filter_min_volumes(1.0, default.filter.high_pass_hz, default.filter.low_pass_hz, default.filter.order)
    short = np.ones(20, bool)  # the real 20-volume run, TR 1 s
    assert "20 s long" in exclusion_reason(short, 1.0, default.censoring.min_time_s, 36, True, band)
    assert "20 volumes to band-pass" in exclusion_reason(short, 1.0, 0, 36, True, band)
    assert "no degrees of freedom" in exclusion_reason(short, 1.0, 0, 36, True, 0)
    assert exclusion_reason(short, 1.0, 0, 6, True, 0) is None
    censored = np.ones(100, bool)
    censored[:50] = False
    assert "50 s retained after censoring" in exclusion_reason(censored, 1.0, 60, 6, True, band)
    assert exclusion_reason(np.zeros(5, bool), 1.0, 0, 6, True, 0) == "every volume was censored"
    gappy = np.zeros(100, bool)
    gappy[[0, 99]] = True  # 2 kept volumes, but a 100-volume span to filter
    assert "no degrees of freedom" in exclusion_reason(gappy, 1.0, 0, 0, True, band)


def _run_denoise(tmp_path, monkeypatch, n, tr=1.0, preset="fmri-default", fd_mm=0.0):
    """Run the Denoise node on an n-volume series (FD ``fd_mm`` throughout) with a preset's
    settings; return (QC, image)."""
    f = load_pipeline(preset).fmri
    rng = np.random.default_rng(1)
    monkeypatch.chdir(tmp_path)
    brain = np.ones((6, 6, 6), bool)
    bold = save_image(rng.normal(100, 1, (6, 6, 6, n)).astype(np.float32), np.eye(4), "bold.nii", str(tmp_path),
                      tr=tr)
    mask = save_image(brain.astype(np.uint8), np.eye(4), "mask.nii", str(tmp_path))
    frame = _make_table(n)
    frame["framewise_displacement"] = fd_mm
    table = str(write_tsv(tmp_path / "confounds.tsv", frame))
    result = Denoise(in_file=bold, confounds=table, brain_mask=mask, strategy=f.confounds.strategy,
                     fd_mm=f.censoring.fd_mm, dvars_std=f.censoring.dvars_std,
                     min_segment_volumes=f.censoring.min_segment_volumes, min_time_s=f.censoring.min_time_s,
                     detrend=f.filter.detrend, high_pass_hz=f.filter.high_pass_hz, low_pass_hz=f.filter.low_pass_hz,
                     filter_order=f.filter.order, coreg_similarity=1.3, t1w_similarity=0.9).run()
    return json.loads(open(result.outputs.qc).read()), nib.load(result.outputs.out_file)


def test_short_run_is_excluded_not_crashed(tmp_path, monkeypatch):
    qc, img = _run_denoise(tmp_path, monkeypatch, 20)
    assert qc["Excluded"] is True and qc["Reason"].startswith("run is 20 s long")
    assert qc["BandPassApplied"] is False and qc["FilterMinimumVolumes"] == 34
    assert qc["CoregistrationNMI"] == 1.3 and qc["NormalizationCorrelation"] == 0.9
    assert img.shape == (6, 6, 6, 20) and np.isfinite(np.asarray(img.dataobj)).all()


def test_long_enough_run_is_band_passed(tmp_path, monkeypatch):
    qc, img = _run_denoise(tmp_path, monkeypatch, 120)
    assert qc["Excluded"] is False and "Reason" not in qc and qc["BandPassApplied"] is True
    assert img.shape == (6, 6, 6, 120)


def test_fully_censored_run_is_excluded_and_keeps_every_volume_unfiltered(tmp_path, monkeypatch):
    qc, img = _run_denoise(tmp_path, monkeypatch, 120, tr=2.0, preset="fmri-36p-scrub", fd_mm=0.8)
    assert qc["Excluded"] is True and qc["Reason"].startswith("0 s retained after censoring")
    assert qc["VolumesKept"] == 0 and len(qc["CensoredVolumes"]) == 120 and qc["BandPassApplied"] is False
    assert img.shape == (6, 6, 6, 120)


def test_motion_summary_leaves_out_non_steady_state_volumes_and_na():
    fd = np.array([np.nan, 0.1, 0.3, 0.2, 1.0])
    keep = np.array([False, True, True, True, False])
    assert motion_summary(fd, keep, 0) == pytest.approx(
        {"MeanFD": 0.4, "MaxFD": 1.0, "CensoredFraction": 0.4})
    assert motion_summary(fd, keep, 2) == pytest.approx(
        {"MeanFD": 0.5, "MaxFD": 1.0, "CensoredFraction": 1 / 3})
    assert motion_summary(np.array([np.nan, np.nan]), np.ones(2, bool), 1) == {
        "MeanFD": None, "MaxFD": None, "CensoredFraction": 0.0}
