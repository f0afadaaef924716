"""Geometry of DWI space: the frame b-vectors are written in, their rotation by head motion,
and where every DWI voxel lies in template space.

Frames used here: *world* is the RAS+ millimetre frame of the NIfTI affines; the *b-vector
frame* is the one of BIDS/FSL ``.bvec`` files: the image's voxel axes (i, j, k) as unit
directions, with the first axis negated when the affine's determinant is positive (FSL
reads every image in a radiological voxel order).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.linalg import polar

from conntool.steps.resample import apply_affine_to_coords


def bvec_frame_to_world(affine: np.ndarray) -> np.ndarray:
    """Matrix (3, 3) taking a direction in the b-vector frame of an image to world (RAS).

    Parameters
    ----------
    affine : (4, 4) voxel → world (mm) affine of the DWI image.

    Returns
    -------
    (3, 3) array ``B``: ``B @ b`` is the world direction of b-vector ``b``. Its columns are the
    world directions of the voxel axes (the affine's columns divided by the voxel sizes), the
    first negated when ``det(affine) > 0``. Orthogonal unless the affine has shear.
    """
    linear = np.asarray(affine, float)[:3, :3]
    to_world = linear / np.linalg.norm(linear, axis=0)
    if np.linalg.det(linear) > 0:
        to_world = to_world @ np.diag([-1.0, 1.0, 1.0])
    return to_world


def bvecs_for_dipy(bvecs: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """BIDS (FSL) b-vectors (T, 3) → the frame DIPY's models and trackers read them in.

    DIPY takes b-vectors along the image's plain voxel axes; BIDS and FSL give them along
    the voxel axes with the first one negated when ``det(affine) > 0`` (images stored
    neurologically). Without this, fibres of such images are mirrored left-right.
    """
    flip = np.array([-1.0, 1.0, 1.0]) if np.linalg.det(np.asarray(affine, float)[:3, :3]) > 0 else np.ones(3)
    return np.asarray(bvecs, float) * flip


def world_to_bvecs(directions: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (RAS) unit directions (T, 3) → BIDS b-vectors (T, 3) of an image with ``affine``."""
    return np.asarray(directions, float) @ np.linalg.inv(bvec_frame_to_world(affine)).T


def rotate_bvecs(bvecs: np.ndarray, affine: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """b-vectors of volumes resampled onto a reference, rotated with the head.

    Volume ``t`` was acquired with the head moved by ``transforms[t]``; once resampled onto
    the reference, its gradient, seen from the head, points along ``R_t⁻¹ g`` (world), where
    ``R_t`` is the rotation of ``transforms[t]`` (polar decomposition: scaling and shear of an
    eddy-current affine are left out). The rotation is done in world and expressed back in
    the b-vector frame: ``b' = B⁻¹ R_t⁻¹ B b`` with ``B = bvec_frame_to_world(affine)``.

    Parameters
    ----------
    bvecs : (T, 3) b-vectors in the b-vector frame of the image with ``affine`` (b0 rows may
        be zero; they stay zero).
    affine : (4, 4) voxel → world (mm) affine of the image (reference and volumes share it).
    transforms : (T, 4, 4) world (mm) transforms, reference point → the same anatomical point
        in volume ``t`` (the direction images are resampled in).

    Returns
    -------
    (T, 3) rotated b-vectors in the same b-vector frame, with the norms of ``bvecs``.
    """
    bvecs = np.asarray(bvecs, float)
    to_world = bvec_frame_to_world(affine)
    from_world = np.linalg.inv(to_world)
    rotated = np.empty_like(bvecs)
    for t, (vector, transform) in enumerate(zip(bvecs, transforms)):
        rotation, _ = polar(np.asarray(transform, float)[:3, :3])
        rotated[t] = from_world @ rotation.T @ to_world @ vector  # rotation.T = R⁻¹
    norms = np.linalg.norm(rotated, axis=1, keepdims=True)
    return np.divide(rotated * np.linalg.norm(bvecs, axis=1, keepdims=True), norms, out=np.zeros_like(rotated),
                     where=norms > 0)


def t1w_points_of_dwi(shape: tuple[int, int, int], affine: np.ndarray, t1w_to_dwi: np.ndarray) -> np.ndarray:
    """(X, Y, Z, 3) T1w world coordinates (mm) of every voxel of the DWI grid ``shape`` with voxel →
    world ``affine``, through ``t1w_to_dwi`` ((4, 4) world transform, T1w point → DWI point)."""
    ijk = np.moveaxis(np.indices(shape, dtype=float), 0, -1)
    return apply_affine_to_coords(np.linalg.inv(t1w_to_dwi), apply_affine_to_coords(affine, ijk))


def template_points_of_dwi(shape: tuple[int, int, int], affine: np.ndarray, t1w_to_dwi: np.ndarray,
                           inverse_coordmap: np.ndarray, coordmap_affine: np.ndarray) -> np.ndarray:
    """Template coordinates of every DWI voxel: DWI → T1w (rigid) → template (warp).

    Parameters
    ----------
    shape : (X, Y, Z) DWI grid.
    affine : (4, 4) DWI voxel → world (mm).
    t1w_to_dwi : (4, 4) world (mm) transform, T1w point → the same point in DWI world.
    inverse_coordmap : (I, J, K, 3) on the T1w grid: the template world coordinates (mm) of
        each T1w voxel (NaN where unknown).
    coordmap_affine : (4, 4) T1w-grid voxel → T1w world (mm).

    Returns
    -------
    (X, Y, Z, 3) template world coordinates (mm), linearly interpolated in the coordinate map;
    NaN where a DWI voxel falls outside the T1w grid.
    """
    t1w_points = t1w_points_of_dwi(shape, affine, t1w_to_dwi)
    coordmap_ijk = np.moveaxis(apply_affine_to_coords(np.linalg.inv(coordmap_affine), t1w_points), -1, 0)
    channels = np.asarray(inverse_coordmap, float)
    return np.stack([ndimage.map_coordinates(np.nan_to_num(channels[..., k], nan=-1e6), coordmap_ijk, order=1,
                                             cval=np.nan) for k in range(3)], axis=-1)


def values_at_points(volume: np.ndarray, affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``volume`` at world ``points``.

    Parameters
    ----------
    volume : (I, J, K) array with voxel → world (mm) ``affine``.
    points : (..., 3) world coordinates (mm) in the frame of ``affine``; NaN allowed.

    Returns
    -------
    (...) values; 0 outside the grid and at NaN points.
    """
    ijk = apply_affine_to_coords(np.linalg.inv(affine), np.nan_to_num(points, nan=-1e6))
    return ndimage.map_coordinates(volume, np.moveaxis(ijk, -1, 0), order=1, cval=0.0)
