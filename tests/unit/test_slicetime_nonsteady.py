import nibabel as nib
import numpy as np

from conntool.interfaces.fmri import SliceTiming
from conntool.interfaces.io import save_image
from conntool.steps.nonsteady import count_nonsteady_volumes
from conntool.steps.slicetime import slice_time_correct


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
    result = SliceTiming(in_file=path, slice_times=slice_times.tolist(), tr=2.0, slice_axis=0).run()
    assert np.allclose(np.asarray(nib.load(result.outputs.out_file).dataobj), along_0)
