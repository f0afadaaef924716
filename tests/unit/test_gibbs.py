import numpy as np
import pytest
from dipy.denoise.gibbs import gibbs_removal

from conntool.steps.gibbs import remove_gibbs


def test_gibbs_removal_works_in_the_planes_of_the_slice_axis():
    n = 32
    step = np.zeros((8, 8, n))
    step[..., n // 4: 3 * n // 4] = 100.0
    spectrum = np.fft.fftshift(np.fft.fft(step, axis=2), axes=2)
    spectrum[..., :8] = spectrum[..., -8:] = 0  # k-space truncated along axis 2 only: ringing along axis 2
    ringing = np.real(np.fft.ifft(np.fft.ifftshift(spectrum, axes=2), axis=2))[..., None].astype(np.float32)

    def error(x):
        return np.abs(x[..., 0] - step).mean()

    assert error(remove_gibbs(ringing, slice_axis=0)) < 0.9 * error(ringing)  # planes (1, 2) hold the ringing
    assert np.isclose(error(remove_gibbs(ringing, slice_axis=2)), error(ringing), rtol=1e-3)  # planes (0, 1): none


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_equals_dipy(slice_axis):
    """Same arithmetic as DIPY's, batched over slices and volumes in threads: the same floats."""
    rng = np.random.default_rng(0)
    series = np.zeros((30, 34, 12, 3), np.float32)
    series[8:22, 10:25] = 100.0
    series += rng.normal(0, 3, series.shape).astype(np.float32)
    expected = gibbs_removal(series.copy(), slice_axis=slice_axis, inplace=False)
    assert np.abs(expected - series).max() > 10  # something was corrected
    assert np.array_equal(remove_gibbs(series, slice_axis, n_threads=2), expected)
    assert np.array_equal(remove_gibbs(series[..., 1], slice_axis), expected[..., 1])
    assert np.array_equal(remove_gibbs(series, slice_axis, n_points=1),
                          gibbs_removal(series.copy(), slice_axis=slice_axis, n_points=1, inplace=False))


def test_rejects_a_2d_image():
    with pytest.raises(ValueError, match="3D or 4D"):
        remove_gibbs(np.zeros((8, 8), np.float32), 0)
