"""One-shot resampling of a BOLD series through a chain of transforms.

A chain is: output grid → (coordinate map, e.g. template → T1w, nonlinear) →
(4x4, e.g. T1w → BOLD reference) → (per-volume 4x4, reference → volume t).
Composing the chain first and interpolating once avoids the blur of resampling
each transform in turn.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage


def grid_world_coords(img: nib.Nifti1Image) -> np.ndarray:
    """(X, Y, Z, 3) world coordinates (mm) of every voxel of ``img``'s grid."""
    ijk = np.indices(img.shape[:3], dtype=float)
    return nib.affines.apply_affine(img.affine, np.moveaxis(ijk, 0, -1))


def apply_affine_to_coords(matrix: np.ndarray, coords: np.ndarray) -> np.ndarray:
    return coords @ matrix[:3, :3].T + matrix[:3, 3]


def sample_volume(volume: np.ndarray, affine: np.ndarray, coords: np.ndarray, order: int = 3) -> np.ndarray:
    """Interpolate ``volume`` (with voxel→world ``affine``) at world ``coords`` (..., 3)."""
    ijk = apply_affine_to_coords(np.linalg.inv(affine), coords)
    return ndimage.map_coordinates(volume, np.moveaxis(ijk, -1, 0), order=order, mode="nearest")


def inside_grid(shape: tuple[int, ...], affine: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Boolean: which world ``coords`` fall inside the voxel grid ``shape``/``affine``."""
    ijk = apply_affine_to_coords(np.linalg.inv(affine), coords)
    upper = np.asarray(shape[:3]) - 1
    return np.all((ijk >= -0.5) & (ijk <= upper + 0.5), axis=-1)


def resample_series(series: np.ndarray, series_affine: np.ndarray, coords: np.ndarray,
                    per_volume: np.ndarray, order: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Resample a 4D series at world ``coords`` of the reference, through per-volume transforms.

    Parameters
    ----------
    series : (X, Y, Z, T) array with voxel→world ``series_affine``
    coords : (..., 3) world coordinates, in the reference volume's space, of the output voxels
        (NaN where the chain maps outside its source)
    per_volume : (T, 4, 4) transforms reference → volume t

    Returns
    -------
    data : (..., T) float32, 0 outside the field of view
    in_fov : (...) bool, True where every volume covered the output voxel
    """
    valid = np.all(np.isfinite(coords), axis=-1)
    safe = np.where(valid[..., None], coords, 0.0)
    out = np.zeros(coords.shape[:-1] + (series.shape[-1],), np.float32)
    in_fov = valid.copy()
    for t in range(series.shape[-1]):
        moved = apply_affine_to_coords(per_volume[t], safe)
        out[..., t] = sample_volume(series[..., t], series_affine, moved, order=order)
        in_fov &= inside_grid(series.shape, series_affine, moved)
    out[~in_fov] = 0.0
    return out, in_fov
