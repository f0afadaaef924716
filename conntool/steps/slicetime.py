"""Slice-timing correction.

Hand-written because nilearn and dipy have none and nipype's wraps FSL/SPM/AFNI
binaries: each slice's series is re-sampled in time by a cubic spline (not-a-knot, as
``scipy.interpolate.CubicSpline``'s default).
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline


def shift_series(series: np.ndarray, shift: float) -> np.ndarray:
    """Not-a-knot cubic spline through the uniformly sampled ``series`` (T, ...) (unit spacing),
    evaluated at ``k + shift`` for every sample k, |shift| < 1; samples beyond either end hold
    the end value.

    Equal to ``CubicSpline(arange(T), series)(clip(arange(T) + shift, 0, T - 1))`` up to
    floating-point order (a test checks it), about ten times faster: on a uniform grid the
    not-a-knot conditions fix the second derivatives next to each end (``6 M_1 = r_1``), which
    leaves a tridiagonal system (1, 4, 1) solved for every voxel at once (:func:`_solve_141`),
    then the spline's closed form at one fractional position. Series shorter than 6 samples go
    to ``CubicSpline``.
    """
    n = series.shape[0]
    y = np.asarray(series, np.float64)
    if n < 6:
        grid = np.arange(n, dtype=float)
        return CubicSpline(grid, y, axis=0)(np.clip(grid + shift, 0, n - 1))
    # in place, in the order of operations of the formulas in the comments (bit for bit the
    # same), because each temporary of a slice's series costs its allocation and page faults
    r = np.multiply(y[1:-1], 2)
    np.subtract(y[:-2], r, out=r)
    r += y[2:]
    r *= 6  # r = 6 (y[:-2] - 2 y[1:-1] + y[2:]), 6 × second differences at samples 1 .. n-2
    m = np.empty_like(y)  # second derivatives
    m[1], m[-2] = r[0] / 6, r[-1] / 6
    rhs = r[1:-1]
    rhs[0] -= m[1]
    rhs[-1] -= m[-2]
    m[2:-2] = _solve_141(rhs)  # r is scratch from here
    m[0], m[-1] = 2 * m[1] - m[2], 2 * m[-2] - m[-3]
    out = np.empty_like(y)
    if shift >= 0:  # sample k + u lies between k and k + 1
        u, v = shift, 1 - shift
        target, edge = slice(None, -1), -1
    else:  # between k - 1 and k, at fraction 1 + shift from k - 1
        u, v = 1 + shift, -shift
        target, edge = slice(1, None), 0
    # out[target] = v y[:-1] + u y[1:] + ((v³ - v) m[:-1] + (u³ - u) m[1:]) / 6
    values, scratch = out[target], np.multiply(y[1:], u)
    np.multiply(y[:-1], v, out=values)
    values += scratch
    curvature = np.multiply(m[:-1], v ** 3 - v)
    curvature += np.multiply(m[1:], u ** 3 - u, out=scratch)
    curvature /= 6
    values += curvature
    out[edge] = y[edge]
    return out


def _solve_141(rhs: np.ndarray) -> np.ndarray:
    """Solution x (n, ...) of the tridiagonal system with 4 on the diagonal and 1 beside it,
    ``x[i-1] + 4 x[i] + x[i+1] = rhs[i]``, for every column of ``rhs`` (float64) at once,
    written over ``rhs``.

    Thomas' algorithm, whose elimination factors depend on the matrix only and are computed
    once: LAPACK's banded solver (``scipy.linalg.solve_banded``) factorises the same matrix
    again for every call, which took a third of slice-timing correction. The matrix is strictly
    diagonally dominant, so no pivoting is needed.
    """
    n = rhs.shape[0]
    factor = np.empty(n)  # c'_i = 1 / (4 - c'_{i-1}), the reciprocal of the eliminated diagonal
    factor[0] = 0.25
    for i in range(1, n):
        factor[i] = 1.0 / (4.0 - factor[i - 1])
    x = rhs
    x[0] *= factor[0]
    for i in range(1, n):  # elimination: x[i] becomes (rhs[i] - x[i-1]) c'_i
        x[i] -= x[i - 1]
        x[i] *= factor[i]
    below = np.empty_like(x[0])
    for i in range(n - 2, -1, -1):  # back substitution
        x[i] -= np.multiply(x[i + 1], factor[i], out=below)
    return x


def slice_time_correct(bold: np.ndarray, slice_times: np.ndarray, tr: float,
                       ref_time: float | None = None, slice_axis: int = 2) -> np.ndarray:
    """Re-sample every slice's time series at ``k * tr + ref_time``.

    Parameters
    ----------
    bold : (X, Y, Z, T) array
    slice_times : (n_slices,) acquisition time of each slice within the TR, in s
    tr : repetition time, s
    ref_time : time within the TR all slices are aligned to; default the middle of
        the acquisition times (as fMRIPrep does)
    slice_axis : spatial axis along which slices are stacked

    Returns
    -------
    (X, Y, Z, T) float32 array. Edge volumes are held (no extrapolation).
    """
    slice_times = np.asarray(slice_times, float)
    if slice_times.size != bold.shape[slice_axis]:
        raise ValueError(f"{slice_times.size} slice times for {bold.shape[slice_axis]} slices")
    if ref_time is None:
        ref_time = (slice_times.min() + slice_times.max()) / 2
    data = np.moveaxis(bold, slice_axis, 0)
    out = np.empty(data.shape, np.float32)
    for z, t_slice in enumerate(slice_times):
        out[z] = np.moveaxis(shift_series(np.moveaxis(data[z], -1, 0), (ref_time - t_slice) / tr), 0, -1)
    return np.moveaxis(out, 0, slice_axis)
