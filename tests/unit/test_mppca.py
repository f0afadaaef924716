import warnings

import numpy as np
import pytest
from dipy.denoise.localpca import mppca as dipy_mppca

from conntool.steps import mppca as mppca_module
from conntool.steps.mppca import mppca

SHAPE = (12, 12, 10)


def _phantom(n_vols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless and noisy (X, Y, Z, n_vols) series: four smooth tissue-like maps mixing four signal
    curves (intensities 20-300), plus Gaussian noise of SD 5."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(0, 1, n) for n in SHAPE], indexing="ij")
    maps = np.stack([np.ones_like(x), np.sin(3 * x) ** 2, np.cos(2 * y + z) ** 2, x * y * z], axis=-1)
    clean = maps @ rng.uniform(20, 100, (4, n_vols))
    return clean, clean + rng.normal(0, 5, clean.shape)


def _ball_mask() -> np.ndarray:
    """A ball touching the volume's edge plus one corner voxel that no patch centre's patch covers."""
    x, y, z = np.indices(SHAPE)
    mask = (x - 5) ** 2 + (y - 6) ** 2 + (z - 4) ** 2 < 30
    mask[-1, -1, -1] = True
    return mask


def _dipy(noisy: np.ndarray, mask: np.ndarray | None, patch_radius: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 0/0 where no patch reaches, and fewer samples than volumes
        return dipy_mppca(noisy, mask=mask, patch_radius=patch_radius, suppress_warning=True)


# 125 or 27 samples per patch: more than the volumes, or (27 <= 30) fewer, where DIPY's classifier drops eigenvalues
@pytest.mark.parametrize("patch_radius, n_vols", [(2, 30), (1, 20), (1, 30)])
@pytest.mark.parametrize("masked", [False, True])
def test_equals_dipy(patch_radius, n_vols, masked):
    _, noisy = _phantom(n_vols)
    mask = _ball_mask() if masked else None
    expected = _dipy(noisy, mask, patch_radius)
    result = mppca(noisy, mask=mask, patch_radius=patch_radius, batch_size=100)
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-10 * noisy.max())
    if masked:
        assert not result[~mask].any()
        assert np.isnan(result[-1, -1, -1]).all()  # as DIPY's: in the mask, but in no patch


def test_float32_computed_and_returned_in_float32_as_dipy():
    _, noisy = _phantom(30)
    noisy = noisy.astype(np.float32)
    result = mppca(noisy, mask=_ball_mask())
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, _dipy(noisy, _ball_mask(), 2), rtol=0, atol=1e-5 * noisy.max())


def test_zero_filled_slab_equals_dipy():
    """Patches that are partly or wholly zero are rank-deficient: DIPY's classifier then runs out of
    eigenvalues (variance NaN, every component kept)."""
    _, noisy = _phantom(30)
    noisy[:, :, 6:] = 0
    np.testing.assert_allclose(mppca(noisy), _dipy(noisy, None, 2), rtol=0, atol=1e-10 * noisy.max())


def test_mrrr_failure_falls_back_to_eigh(monkeypatch):
    lapack = mppca_module._lapack("d", 30)
    failing = lapack._replace(stemr=lambda d, *args: (0, d, np.zeros((d.size, d.size)), 1))
    monkeypatch.setattr(mppca_module, "_lapack", lambda dtype_char, n: failing)
    _, noisy = _phantom(30)
    np.testing.assert_allclose(mppca(noisy), _dipy(noisy, None, 2), rtol=0, atol=1e-10 * noisy.max())


def test_reduces_noise():
    clean, noisy = _phantom(30)
    denoised = mppca(noisy)
    assert np.sqrt(np.mean((denoised - clean) ** 2)) < 0.5 * np.sqrt(np.mean((noisy - clean) ** 2))


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="4D"):
        mppca(np.zeros(SHAPE))
    with pytest.raises(ValueError, match="narrower"):
        mppca(np.zeros((3, 12, 10, 5)))
    with pytest.raises(ValueError, match="mask shape"):
        mppca(np.zeros(SHAPE + (5,)), mask=np.ones((12, 12, 9), bool))
