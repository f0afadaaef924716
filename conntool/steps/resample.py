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
    return _within(apply_affine_to_coords(np.linalg.inv(affine), coords), shape)


def _within(ijk: np.ndarray, shape: tuple[int, ...], margin: np.ndarray | float = 0.0) -> np.ndarray:
    """Boolean: which voxel coordinates ``ijk`` (..., 3) lie inside the grid ``shape`` (its voxels'
    outer faces, half a voxel beyond the first and last centres), by at least ``margin`` voxels."""
    upper = np.asarray(shape[:3]) - 1
    return np.all((ijk >= -0.5 + margin) & (ijk <= upper + 0.5 - margin), axis=-1)


def series_fov(shape: tuple[int, ...], series_affine: np.ndarray, coords: np.ndarray,
               per_volume: np.ndarray) -> np.ndarray:
    """(...) bool: the output voxels (world ``coords`` of the reference, (..., 3), NaN where the
    chain maps outside its source) that every volume of a series of ``shape`` covers, through
    the ``per_volume`` (T, 4, 4) transforms reference → volume t. Geometry only: no data is read.

    Only the points near the grid's edge are tested volume by volume. A point's voxel
    coordinates in volume t differ from those in the first volume by an affine function of the
    point, largest at a corner of the points' bounding box; a point farther than that from the
    edge (with 1e-6 voxel to spare for rounding) is inside every volume it is inside of the first.
    """
    in_fov = np.all(np.isfinite(coords), axis=-1)
    points = coords[in_fov]
    to_voxels = [np.linalg.inv(series_affine) @ matrix for matrix in per_volume]
    first = apply_affine_to_coords(to_voxels[0], points)
    inside = _within(first, shape)
    if len(points) and len(to_voxels) > 1:
        corners = np.array(np.meshgrid(*zip(points.min(0), points.max(0)), indexing="ij")).reshape(3, -1).T
        at_corners = np.array([apply_affine_to_coords(matrix, corners) for matrix in to_voxels])
        spread = np.abs(at_corners - at_corners[0]).max(axis=(0, 1)) + 1e-6
        near_edge = np.flatnonzero(inside & ~_within(first, shape, spread))
        near = points[near_edge]
        kept = np.ones(len(near_edge), bool)
        for matrix in to_voxels[1:]:
            kept &= _within(apply_affine_to_coords(matrix, near), shape)
        inside[near_edge] = kept
    in_fov[in_fov] = inside
    return in_fov


def resample_volumes(volumes: np.ndarray, series_affine: np.ndarray, coords: np.ndarray, per_volume: np.ndarray,
                     in_fov: np.ndarray, order: int = 3, n_threads: int = 1) -> np.ndarray:
    """Resample consecutive volumes (X, Y, Z, n) of a series at world ``coords`` of the reference.

    Only the voxels in ``in_fov`` are interpolated (the others are 0), each through one matrix:
    series voxel ← world ← reference.

    Parameters
    ----------
    volumes : (X, Y, Z, n) with voxel→world ``series_affine``
    coords : (..., 3) world coordinates, in the reference volume's space, of the output voxels
    per_volume : (n, 4, 4) transforms reference → each of the volumes
    in_fov : (...) bool, output voxels kept (:func:`series_fov`)
    n_threads : volumes interpolated side by side (``ndimage`` releases the GIL); the result
        does not depend on it

    Returns
    -------
    (..., n) float32, Fortran-ordered (each volume contiguous, as NIfTI stores it)
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    points = coords[in_fov]
    out = np.zeros(coords.shape[:-1] + (volumes.shape[-1],), np.float32, order="F")

    def one(t: int) -> None:
        ijk = apply_affine_to_coords(np.linalg.inv(series_affine) @ per_volume[t], points)
        out[..., t][in_fov] = ndimage.map_coordinates(volumes[..., t], ijk.T, order=order, mode="nearest")

    with ThreadPoolExecutor(max(1, n_threads)) as pool, threadpool_limits(1):  # a BLAS thread per worker
        list(pool.map(one, range(volumes.shape[-1])))
    return out


def resample_series(series: np.ndarray, series_affine: np.ndarray, coords: np.ndarray,
                    per_volume: np.ndarray, order: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A whole 4D series held in memory through :func:`series_fov` and :func:`resample_volumes`.

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
    in_fov = series_fov(series.shape, series_affine, coords, per_volume)
    return resample_volumes(series, series_affine, coords, per_volume, in_fov, order), in_fov
