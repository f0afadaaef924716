"""Parcel time series with per-parcel coverage; uncovered parcels become NaN, never dropped."""
from __future__ import annotations

import nibabel as nib
import numpy as np

from conntool.series import CHUNK_MB, volume_chunks


def parcel_coverage(labels: np.ndarray, label_ids: tuple[int, ...], valid: np.ndarray) -> np.ndarray:
    """Fraction of each parcel's voxels where there is valid data (0 for an empty parcel)."""
    counts = np.bincount(labels.ravel(), minlength=max(label_ids) + 1)
    covered = np.bincount(labels[valid].ravel(), minlength=max(label_ids) + 1)
    ids = np.asarray(label_ids)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[ids] > 0, covered[ids] / np.maximum(counts[ids], 1), 0.0)


def parcel_timeseries(img: nib.Nifti1Image, labels_img: nib.Nifti1Image, label_ids: tuple[int, ...],
                      valid: np.ndarray, min_coverage: float, chunk_mb: float = CHUNK_MB) -> tuple[np.ndarray, np.ndarray]:
    """Mean signal of each parcel over valid voxels, in atlas order, read ``chunk_mb`` at a time.

    The mean is ``NiftiLabelsMasker(strategy="mean")``'s (its ``ndimage.mean`` sums with
    ``np.bincount`` in voxel order, as here; a test compares the two), written out because the
    masker loads the whole series.

    Parameters
    ----------
    img : (X, Y, Z, T) series (open it with :func:`conntool.series.opened` when gzipped)
    labels_img : (X, Y, Z) integer labels on the series' grid
    valid : (X, Y, Z) bool, voxels with data

    Returns
    -------
    timeseries : (T, n_nodes), NaN columns for parcels with coverage < ``min_coverage``
    coverage : (n_nodes,)
    """
    labels = np.asarray(labels_img.dataobj).astype(np.int64)
    coverage = parcel_coverage(labels, label_ids, valid)
    series = np.full((img.shape[-1], len(label_ids)), np.nan)
    kept = np.flatnonzero(coverage >= min_coverage)
    if kept.size:
        selected = valid & np.isin(labels, np.asarray(label_ids)[kept])
        node = np.searchsorted(np.asarray(label_ids)[kept], labels[selected])
        counts = np.bincount(node, minlength=kept.size)
        for chunk in volume_chunks(img.shape, chunk_mb):
            values = np.asarray(img.dataobj[..., chunk], np.float32)[selected]
            for t in range(values.shape[1]):
                series[chunk.start + t, kept] = np.bincount(node, weights=values[:, t], minlength=kept.size) / counts
    return series, coverage
