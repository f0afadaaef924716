import nibabel as nib
import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from conntool.interfaces.fmri import PrepareSeries
from conntool.interfaces.io import save_image
from conntool.steps.nonsteady import count_nonsteady_volumes
from conntool.steps.slicetime import shift_series, slice_time_correct


def test_slice_timing_realigns_each_slice_to_the_reference_time():
    tr, n_vols = 2.0, 80
    slice_times = np.array([0.0, 1.0, 0.5, 1.5])
    wave = lambda t: np.sin(2 * np.pi * 0.05 * t)  # noqa: E731 - 0.05 Hz, well sampled at TR 2 s
    frames = np.arange(n_vols) * tr
    bold = np.zeros((2, 2, 4, n_vols))
    for z, st in enumerate(slice_times):
        bold[:, :, z, :] = wave(frames + st)
    corrected = slice_time_correct(bold, slice_times, tr)
    expected = wave(frames + 0.75)
    inner = slice(2, -2)
    for z in range(4):
        assert np.abs(corrected[0, 0, z, inner] - expected[inner]).max() < 2e-3
    assert np.abs(bold[0, 0, 0, inner] - expected[inner]).max() > 0.1  # the correction did something


def test_nonsteady_volumes_are_counted():
    rng = np.random.default_rng(0)
    bold = 100 + rng.normal(0, 1, (4, 4, 4, 60))
    bold[..., :3] *= np.array([2.0, 1.5, 1.25])
    assert count_nonsteady_volumes(bold) == 3
    assert count_nonsteady_volumes(100 + rng.normal(0, 1, (4, 4, 4, 60))) == 0


def test_nonsteady_detection_ignores_scanner_drift():
    rng = np.random.default_rng(1)
    bold = 100 + rng.normal(0, 0.05, (4, 4, 4, 60)) + np.linspace(-1, 1, 60)  # 2 % drift, low noise
    bold[..., :3] *= np.array([2.0, 1.5, 1.25])
    assert count_nonsteady_volumes(bold) == 3



def test_slice_axis_0_equals_axis_2_on_the_transposed_array(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    bold = rng.normal(size=(5, 3, 4, 30)).astype(np.float32)  # 5 slices along axis 0
    slice_times = np.array([0.0, 0.8, 0.4, 1.2, 1.6])
    along_0 = slice_time_correct(bold, slice_times, 2.0, slice_axis=0)
    transposed = np.transpose(bold, (2, 1, 0, 3))  # the same slices, now along axis 2
    along_2 = slice_time_correct(transposed, slice_times, 2.0, slice_axis=2)
    assert np.array_equal(np.transpose(along_2, (2, 1, 0, 3)), along_0)
    assert not np.allclose(along_0, bold, atol=0.1)  # the correction did something
    monkeypatch.chdir(tmp_path)
    path = save_image(bold, np.eye(4), "bold.nii", str(tmp_path), tr=2.0)
    for chunk_mb, n_dummy in ((256.0, 0), (0.001, 0), (0.001, 2)):  # whole; a slab / volume at a time; dummies
        result = PrepareSeries(in_file=path, n_dummy=n_dummy, slice_times=slice_times.tolist(), tr=2.0,
                               slice_axis=0, chunk_mb=chunk_mb).run()
        expected = slice_time_correct(bold[..., n_dummy:], slice_times, 2.0, slice_axis=0)
        assert np.array_equal(np.asarray(nib.load(result.outputs.out_file).dataobj), expected)
        assert np.array_equal(np.asarray(nib.load(result.outputs.median).dataobj), np.median(expected, axis=-1))  # < 100 volumes: all


@pytest.mark.parametrize("n_volumes", [4, 6, 7, 50, 300])
@pytest.mark.parametrize("shift", [0.3, -0.45, 0.0, 0.99])
def test_shift_series_equals_scipy_cubic_spline(n_volumes, shift):
    y = np.cumsum(np.random.default_rng(n_volumes).normal(size=(n_volumes, 20)), axis=0) + 100
    grid = np.arange(n_volumes, dtype=float)
    expected = CubicSpline(grid, y, axis=0)(np.clip(grid + shift, 0, n_volumes - 1))
    np.testing.assert_allclose(shift_series(y, shift), expected, rtol=0, atol=1e-11)
