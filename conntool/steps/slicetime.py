"""Slice-timing correction.

Hand-written because nilearn and dipy have none and nipype's wraps FSL/SPM/AFNI
binaries: each slice's series is re-sampled in time by a cubic spline.
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline


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
    n_vols = bold.shape[-1]
    frames = np.arange(n_vols) * tr
    data = np.moveaxis(bold, slice_axis, 0)
    out = np.empty(data.shape, np.float32)
    for z, t_slice in enumerate(slice_times):
        acquired = frames + t_slice
        wanted = np.clip(frames + ref_time, acquired[0], acquired[-1])
        out[z] = CubicSpline(acquired, data[z], axis=-1)(wanted)
    return np.moveaxis(out, 0, slice_axis)
