import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conntool.steps import confounds
from conntool.steps.denoise import censoring_mask, denoise


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    n = 40
    shape = (6, 6, 6)
    data = rng.normal(100, 1, shape + (n,)).astype(np.float32)
    masks = {"brain": np.ones(shape, bool), "wm": np.zeros(shape, bool), "csf": np.zeros(shape, bool)}
    masks["wm"][:3] = True
    masks["csf"][3:] = True
    return confounds.confounds_table(rng.normal(0, 0.1, (n, 6)), np.zeros(n), (np.zeros(n), np.zeros(n)),
                                     nib.Nifti1Image(data, np.eye(4)), masks, n_components=3)


@pytest.mark.parametrize("strategy,count", [("6P", 6), ("9P", 9), ("24P", 24), ("36P", 36), ("aCompCor", 30)])
def test_strategies_pick_the_published_regressor_counts(table, strategy, count):
    picked = confounds.select(table, strategy)
    assert picked.shape[1] == count
    assert np.isfinite(picked.to_numpy()).all()


def test_friston_expansion_names():
    frame = pd.DataFrame(np.arange(12.0).reshape(2, 6), columns=confounds.MOTION)
    expanded = confounds.expand(frame)
    assert "trans_x_derivative1_power2" in expanded and expanded.shape[1] == 24
    assert expanded["trans_x_derivative1"].tolist() == [0.0, 6.0]


def test_censoring_mask():
    fd = np.array([0.0, 0.1, 0.9, 0.2])
    dvars = np.array([np.nan, 1.0, 1.0, 2.0])
    assert censoring_mask(fd, dvars, 0.5, 1.5).tolist() == [True, True, False, False]
    assert censoring_mask(fd, dvars, None, None).all()


def test_denoise_removes_a_confound_and_censors():
    rng = np.random.default_rng(0)
    n = 120
    nuisance = rng.normal(size=n)
    signal = rng.normal(size=(n, 5))
    series = signal + 5 * nuisance[:, None]
    keep = np.ones(n, bool)
    keep[[10, 50]] = False
    cleaned = denoise(series, pd.DataFrame({"x": nuisance}), keep, tr=2.0, detrend=True,
                      high_pass_hz=None, low_pass_hz=None)
    assert cleaned.shape == (n - 2, 5)
    assert abs(np.corrcoef(cleaned[:, 0], nuisance[keep])[0, 1]) < 0.05
    assert np.corrcoef(cleaned[:, 0], signal[keep, 0])[0, 1] > 0.95
