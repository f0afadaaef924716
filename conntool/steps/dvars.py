"""DVARS (Power 2012) and its standardised form (Nichols 2013), as nipype's ``compute_dvars``,
from brain voxels given a slab at a time.

nipype's function loads the whole series and fits the lag-1 autocorrelation voxel by voxel in
Python; here each voxel's terms are vectorised and summed over slabs, so the memory is one
slab's, and the intensity normalisation's median of every brain value is found exactly in two
passes over a histogram (:func:`streamed_median`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

Slabs = Callable[[], Iterable[np.ndarray]]


def _sortable(values: np.ndarray) -> np.ndarray:
    """uint32 keys of float32 ``values`` in the order of the values."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    return np.where(bits & 0x80000000, ~bits, bits | 0x80000000)


def streamed_median(slabs: Slabs) -> np.float32:
    """``np.median`` of every float32 value of the arrays ``slabs()`` yields, in two passes.

    Pass one counts the values in 65,536 bins of their upper 16 bits; pass two keeps the
    values of the bins holding the middle rank(s) and selects among them.
    """
    counts = np.zeros(2 ** 16, np.int64)
    for values in slabs():
        counts += np.bincount((_sortable(values.ravel()) >> 16).astype(np.int64), minlength=2 ** 16)
    n = int(counts.sum())
    ranks = (n // 2, n // 2) if n % 2 else (n // 2 - 1, n // 2)
    cumulative = np.cumsum(counts)
    bins = {int(np.searchsorted(cumulative, rank, side="right")) for rank in ranks}
    kept = [v[np.isin(_sortable(v) >> 16, list(bins))] for v in (s.ravel() for s in slabs())]
    kept = np.sort(np.concatenate(kept).astype(np.float32))
    below = int(cumulative[min(bins) - 1]) if min(bins) > 0 else 0
    return np.float32(np.mean(kept[[ranks[0] - below, ranks[1] - below]]))


def _voxel_terms(mfunc: np.ndarray, remove_zerovariance: bool, variance_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """For (V, T) normalised series: each voxel's predicted SD of the temporal difference
    (V',) and the squared differences summed over voxels (T - 1,)."""
    n = mfunc.shape[1]
    k25, k75 = int(np.floor((n - 1) * 0.25)), int(np.floor((n - 1) * 0.75))  # numpy's "lower" percentiles
    quartiles = np.partition(mfunc, [k25, k75], axis=1)
    func_sd = (quartiles[:, k75] - quartiles[:, k25]) / 1.349  # robust SD, as FSL
    if remove_zerovariance:
        keep = func_sd > variance_tol
        mfunc, func_sd = mfunc[keep], func_sd[keep]
    centred = (mfunc - mfunc.mean(axis=1, dtype=np.float64, keepdims=True)).astype(np.float32)
    ar1 = ((centred[:, 1:] * centred[:, :-1]).sum(axis=1, dtype=np.float64)  # Yule-Walker, order 1
           / np.square(centred).sum(axis=1, dtype=np.float64))
    diff_sdhat = np.sqrt((1 - ar1) * 2) * func_sd
    return diff_sdhat, np.square(np.diff(mfunc, axis=1)).sum(axis=0, dtype=np.float64)


def dvars(slabs: Slabs, intensity_normalization: float = 1000.0, remove_zerovariance: bool = False,
          variance_tol: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Standardised and plain DVARS of a run, with NaN for the first volume.

    Parameters
    ----------
    slabs : callable returning an iterable of (V_i, T) arrays, the brain voxels' series a part
        at a time (called three times; every call must give the same parts)
    intensity_normalization : the median brain value is scaled to this (0: not scaled)
    remove_zerovariance, variance_tol : as nipype's: voxels whose robust SD is not above
        ``variance_tol`` are left out (fMRIPrep does this; ``compute_dvars``'s default does not)

    Returns
    -------
    std_dvars, dvars : (T,) each
    """
    median = streamed_median(slabs) if intensity_normalization else None
    sd_sum, n_voxels, squares = 0.0, 0, 0.0
    for slab in slabs():
        mfunc = np.asarray(slab, np.float32)
        if median is not None:
            mfunc = mfunc / median * np.float32(intensity_normalization)
        diff_sdhat, slab_squares = _voxel_terms(mfunc, remove_zerovariance, variance_tol)
        sd_sum += diff_sdhat.sum(dtype=np.float64)
        n_voxels += diff_sdhat.size
        squares = squares + slab_squares
    plain = np.sqrt(squares / n_voxels)
    return np.concatenate([[np.nan], plain / (sd_sum / n_voxels)]), np.concatenate([[np.nan], plain])
