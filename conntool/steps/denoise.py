"""Censoring and nuisance regression / filtering of voxel time series."""
from __future__ import annotations

import numpy as np
import pandas as pd
from nilearn import signal


def censoring_mask(fd: np.ndarray, std_dvars: np.ndarray, fd_mm: float | None,
                   dvars_std: float | None) -> np.ndarray:
    """Boolean mask of volumes kept: below the FD and standardised DVARS limits (Power 2014)."""
    keep = np.ones(len(fd), bool)
    if fd_mm is not None:
        keep &= np.nan_to_num(fd) <= fd_mm
    if dvars_std is not None:
        keep &= np.nan_to_num(std_dvars) <= dvars_std
    return keep


def denoise(series: np.ndarray, confounds: pd.DataFrame, keep: np.ndarray, tr: float, detrend: bool,
            high_pass_hz: float | None, low_pass_hz: float | None) -> np.ndarray:
    """Regress confounds, detrend and band-pass with ``nilearn.signal.clean`` (orthogonal to
    the filter), censoring volumes not in ``keep``; returns (n_kept, V)."""
    return signal.clean(
        series, confounds=confounds.to_numpy(float) if confounds.shape[1] else None,
        sample_mask=np.flatnonzero(keep), t_r=tr, detrend=detrend,
        high_pass=high_pass_hz, low_pass=low_pass_hz, standardize=None, standardize_confounds=True,
        filter="butterworth",
        butterworth__copy=True,  # vectorised filtering: 70 s → 1 s for 70k voxels, at the cost of one copy
    )
