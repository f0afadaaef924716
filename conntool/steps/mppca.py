"""MP-PCA denoising (Veraart 2016) batched over patches, with the result of DIPY 1.12's ``localpca.mppca``."""
from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import numpy as np
from scipy.linalg import eigh, get_lapack_funcs


class _Lapack(NamedTuple):
    sytrd: Callable
    sterf: Callable
    stemr: Callable
    ormqr: Callable
    sytrd_lwork: int


def mppca(arr: np.ndarray, mask: np.ndarray | None = None, patch_radius: int = 2, *,
          batch_size: int = 256) -> np.ndarray:
    """Marchenko-Pastur PCA denoising of a 4D series; same result as ``dipy.denoise.localpca.mppca``.

    Hand-written because DIPY's version loops in Python over voxels, with a full ``eigh`` each, and
    takes 2-3 times as long. Here the patches, covariances and reconstructions of ``batch_size`` centres
    go through each NumPy call, and the eigenvectors, the bulk of ``eigh``, are computed only for
    the few components each patch keeps.

    The arithmetic is DIPY's (``genpca`` with ``sigma=None``, ``pca_method='eig'``): every voxel of
    the mask at least ``patch_radius`` from the volume's edge is a patch centre; its patch, in the
    mask or not, is centred on its mean; the covariance over the patch's voxels is divided by their
    number; the MP classifier estimates the noise variance; components with eigenvalue below
    ``(1 + sqrt(N / voxels))**2`` times that variance are dropped; and each reconstructed patch is
    averaged into its voxels with weight ``1 / (1 + kept components)``. Float64 input is computed
    in float64, anything else in float32, as in DIPY.

    Parameters
    ----------
    arr : (X, Y, Z, N) series in signal units; each spatial axis of size 1 or at least a patch wide.
    mask : (X, Y, Z) bool, voxels to denoise (and patch centres); ``None`` is the whole volume.
    patch_radius : voxels; 2 gives 5x5x5 patches (radius 0 along axes of size 1).
    batch_size : patch centres computed together; for N = 96 and radius 2 the batch's arrays take
        about 0.35 MB (float64) or 0.18 MB (float32) per centre, 45 MB in float32 by default.

    Returns
    -------
    (X, Y, Z, N) array of ``arr``'s dtype, clipped to >= 0 and zero outside the mask. As in DIPY,
    a mask voxel that no centre's patch covers (one near the volume's edge) is NaN.
    """
    if arr.ndim != 4:
        raise ValueError(f"MP-PCA needs a 4D array, got shape {arr.shape}")
    shape, n_vols = arr.shape[:3], arr.shape[3]
    mask = np.ones(shape, bool) if mask is None else np.asarray(mask).astype(bool)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} does not match the series' {shape}")
    radius = np.where(np.array(shape) == 1, 0, patch_radius)
    if np.any((np.array(shape) != 1) & (np.array(shape) < 2 * radius + 1)):
        raise ValueError(f"series of shape {arr.shape} is narrower than a patch of radius {patch_radius}")
    if not radius.any():
        raise ValueError("a patch of one voxel cannot be denoised: increase patch_radius")

    calc = np.float64 if arr.dtype == np.float64 else np.float32
    flat = np.ascontiguousarray(arr, dtype=calc).reshape(-1, n_vols)
    steps = np.array([shape[1] * shape[2], shape[2], 1])
    grid = np.meshgrid(*[np.arange(-r, r + 1) for r in radius], indexing="ij")
    offsets = np.stack(grid, axis=-1).reshape(-1, 3) @ steps
    inner = tuple(slice(r, n - r) for r, n in zip(radius, shape))
    centre_mask = np.zeros(shape, bool)
    centre_mask[inner] = mask[inner]
    centres = np.flatnonzero(centre_mask)

    theta = np.zeros(flat.shape[0], calc)
    thetax = np.zeros(flat.shape, calc)
    for start in range(0, centres.size, batch_size):
        batch = centres[start:start + batch_size]
        estimates, weights = _denoise_patches(flat, batch, offsets)
        for k, offset in enumerate(offsets):
            theta[batch + offset] += weights
            thetax[batch + offset] += estimates[:, k]

    with np.errstate(invalid="ignore"):
        thetax /= theta[:, None]
    thetax.clip(min=0, out=thetax)
    thetax[~mask.ravel()] = 0
    return thetax.reshape(arr.shape).astype(arr.dtype, copy=False)


def _denoise_patches(flat: np.ndarray, centres: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted denoised patches (centres, voxels, N) and their weights (centres,) around flat voxel indices
    ``centres`` of ``flat`` (voxels, N), the patches' voxels being ``centres + offsets``.

    Each covariance is decomposed by the steps of LAPACK's ``?syevr``, the driver of DIPY's
    ``scipy.linalg.eigh``: ``?sytrd`` to tridiagonal form, then its eigenvalues (``?sterf``) for
    the MP classifier, then the eigenvectors of the kept components only (``?stemr``, ``?ormqr``).
    """
    n_samples, n_vols = offsets.size, flat.shape[1]
    lapack = _lapack(flat.dtype.char, n_vols)
    patches = flat[centres[:, None] + offsets]
    means = patches.mean(axis=1, keepdims=True)
    patches -= means
    cov = np.matmul(patches.transpose(0, 2, 1), patches) / n_samples
    tridiagonal = [_checked(lapack.sytrd(c, lower=1, lwork=lapack.sytrd_lwork)) for c in cov]
    eigvals = np.array([_checked(lapack.sterf(diagonal, off_diag))[0] for _, diagonal, off_diag, _ in tridiagonal])
    tau = (1 + np.sqrt(n_vols / n_samples)) ** 2 * _mp_noise_variance(eigvals, n_samples).astype(np.float64)
    n_keep = n_vols - np.sum(eigvals < tau[:, None], axis=1)

    signal = np.zeros((centres.size, n_vols, n_keep.max()), flat.dtype)
    for b in np.flatnonzero(n_keep):
        signal[b, :, :n_keep[b]] = _top_eigenvectors(cov[b], tridiagonal[b], n_keep[b], lapack)
    estimates = np.matmul(np.matmul(patches, signal), signal.transpose(0, 2, 1), out=patches)
    estimates += means
    weights = (1.0 / (1.0 + n_keep)).astype(flat.dtype)
    estimates *= weights[:, None, None]
    return estimates, weights


def _mp_noise_variance(eigvals: np.ndarray, n_samples: int) -> np.ndarray:
    """Noise variance (batch,) from ascending eigenvalues (batch, N) of patches of ``n_samples`` voxels.

    DIPY's ``_pca_classifier``: keep the last ``n_samples - 1`` eigenvalues L, walk c down from the
    last while ``L[c] - L[0] > 4 sqrt((c + 1) / n_samples) mean(L[:c + 1])`` and return that mean
    at the first c where it fails (NaN if it never does).
    """
    eigvals = eigvals[:, -(n_samples - 1):]
    count = np.arange(1, eigvals.shape[1] + 1)
    running_mean = np.cumsum(eigvals, axis=1) / count
    stops = ~(eigvals - eigvals[:, :1] - 4 * np.sqrt(count / n_samples) * running_mean > 0)
    last_stop = eigvals.shape[1] - 1 - np.argmax(stops[:, ::-1], axis=1)
    variance = np.take_along_axis(running_mean, last_stop[:, None], axis=1)[:, 0]
    return np.where(stops.any(axis=1), variance, np.nan)


def _top_eigenvectors(matrix: np.ndarray, tridiagonal: tuple, count: int, lapack: _Lapack) -> np.ndarray:
    """Eigenvectors (n, count) of the ``count`` largest eigenvalues of a symmetric (n, n) ``matrix``,
    ascending, from its lower ``?sytrd`` reduction. Where MRRR fails (rarely, on such subsets), the
    matrix goes to ``scipy.linalg.eigh`` itself, which then falls back to inverse iteration.
    """
    reflectors, diagonal, off_diagonal, scales = tridiagonal
    n = diagonal.size
    found, _, vectors, info = lapack.stemr(diagonal, np.append(off_diagonal, 0), 2, 0, 0, n - count + 1, n)
    if info or found != count:
        return eigh(matrix)[1][:, n - count:]
    vectors = vectors[:, :count]
    vectors[1:] = _checked(lapack.ormqr("L", "N", reflectors[1:, :-1], scales, vectors[1:], 64 * count))[0]
    return vectors


@cache
def _lapack(dtype_char: str, n: int) -> _Lapack:
    """LAPACK routines for real ``dtype_char`` matrices of order ``n``."""
    funcs = get_lapack_funcs(("sytrd", "sterf", "stemr", "ormqr", "sytrd_lwork"), dtype=np.dtype(dtype_char))
    return _Lapack(*funcs[:4], sytrd_lwork=int(funcs[4](n, lower=1)[0]))


def _checked(lapack_out: tuple) -> tuple:
    """A LAPACK wrapper's outputs without the trailing ``info``, which must be 0."""
    *out, info = lapack_out
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK failed with info={info} in MP-PCA")
    return tuple(out)
