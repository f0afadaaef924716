"""Parcel time series with per-parcel coverage; uncovered parcels become NaN, never dropped."""
from __future__ import annotations

import nibabel as nib
import numpy as np
from nilearn.maskers import NiftiLabelsMasker


def parcel_coverage(labels: np.ndarray, label_ids: tuple[int, ...], valid: np.ndarray) -> np.ndarray:
    """Fraction of each parcel's voxels where there is valid data (0 for an empty parcel)."""
    counts = np.bincount(labels.ravel(), minlength=max(label_ids) + 1)
    covered = np.bincount(labels[valid].ravel(), minlength=max(label_ids) + 1)
    ids = np.asarray(label_ids)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[ids] > 0, covered[ids] / np.maximum(counts[ids], 1), 0.0)


def parcel_timeseries(img: nib.Nifti1Image, labels_img: nib.Nifti1Image, label_ids: tuple[int, ...],
                      valid: np.ndarray, min_coverage: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean signal of each parcel (``NiftiLabelsMasker``) over valid voxels, in atlas order.

    Returns
    -------
    timeseries : (T, n_nodes), NaN columns for parcels with coverage < ``min_coverage``
    coverage : (n_nodes,)
    """
    labels = np.asarray(labels_img.dataobj).astype(np.int64)
    coverage = parcel_coverage(labels, label_ids, valid)
    series = np.full((img.shape[-1], len(label_ids)), np.nan)
    kept = coverage >= min_coverage
    if kept.any():
        masker = NiftiLabelsMasker(labels_img=labels_img, mask_img=nib.Nifti1Image(valid.astype(np.uint8),
                                                                                   labels_img.affine),
                                   strategy="mean", resampling_target=None, standardize=None)
        values = masker.fit_transform(img)
        found = {int(label): col for col, label in masker.region_ids_.items() if col != "background"}
        for node, label in enumerate(label_ids):
            if kept[node] and label in found:
                series[:, node] = values[:, found[label]]
    return series, coverage
