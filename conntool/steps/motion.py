"""Rigid head-motion: estimation, parameters, framewise displacement.

All transforms are 4x4 matrices in RAS world millimetres that map a point of the
reference volume to where it is found in another volume (the direction in which
images are resampled).
"""
from __future__ import annotations

from collections.abc import Iterable

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation


def estimate_linear(fixed: nib.Nifti1Image, moving: nib.Nifti1Image,
                    pipeline: tuple[str, ...] = ("center_of_mass", "translation", "rigid"),
                    level_iters: tuple[int, ...] = (1000, 100, 10), sigmas: tuple[float, ...] = (3.0, 1.0, 0.0),
                    factors: tuple[int, ...] = (4, 2, 1), sampling_proportion: float | None = None,
                    seed: int = 0) -> np.ndarray:
    """Linear registration of ``moving`` to ``fixed`` through DIPY's ``pipeline`` of steps
    (default: rigid); RAS 4x4 fixed point → moving point.

    Mutual information, over all voxels (``sampling_proportion`` None: DIPY's dense metric) or
    DIPY's sparse metric on a ``sampling_proportion`` of them (every k-th voxel, slightly
    jittered; at 1 every voxel, jittered), so the same inputs always give the same matrix
    (ANTs's antsRegistration does not, even single-threaded and seeded, unless it samples
    densely, and is then no faster). ``seed`` seeds numpy's global generator for DIPY versions
    that draw the samples from it; DIPY 1.12 does not (its matrices are the same for any seed).
    The image with fewer voxels is the static one, which sets the cost of every metric
    evaluation; the result is inverted when that is ``moving``.
    """
    from dipy.align import affine_registration

    swap = np.prod(moving.shape[:3]) < np.prod(fixed.shape[:3])
    static, other = (moving, fixed) if swap else (fixed, moving)
    np.random.seed(seed)
    _, matrix = affine_registration(
        np.asarray(other.dataobj, np.float32), np.asarray(static.dataobj, np.float32),
        moving_affine=other.affine, static_affine=static.affine, pipeline=list(pipeline),
        level_iters=list(level_iters), sigmas=list(sigmas), factors=list(factors),
        sampling_proportion=sampling_proportion,
    )
    return np.linalg.inv(matrix) if swap else matrix


def preset_sampling(share: float) -> float | None:
    """``sampling_proportion`` of :func:`estimate_linear` for a preset's share of voxels in
    (0, 1]: 1 (all) is DIPY's dense metric."""
    return share if share < 1 else None


def estimate_motion(volumes: Iterable[np.ndarray], affine: np.ndarray, reference: np.ndarray,
                    smoothing_mm: float = 4.0, separation_mm: float = 0.0, max_iter: int = 20,
                    tol_mm: float = 1e-3) -> np.ndarray:
    """Per-volume rigid transforms (T, 4, 4) from ``reference`` to each of the (X, Y, Z)
    ``volumes`` (an iterable, so a series can be streamed), all on the grid of ``affine``.

    Gauss-Newton least squares with the reference's spatial derivatives, the
    algorithm of SPM's realign, written here because ANTs needs about 1 s a volume
    and this 0.1 s; accuracy is checked against simulated motion in the tests.
    Volumes are smoothed by ``smoothing_mm`` FWHM, and each volume starts from the
    previous volume's estimate. As in SPM (``sep``), the reference's voxels are sampled
    every ``separation_mm`` along each voxel axis (every ``round(separation_mm / voxel size)``-th
    voxel, at least every voxel): after smoothing, neighbours add little, and the cost falls
    with the number of points (8 times fewer for 2 mm voxels at 4 mm).
    """
    voxel_mm = nib.affines.voxel_sizes(affine)
    sigma = smoothing_mm / 2.3548 / voxel_mm
    ref = ndimage.gaussian_filter(reference.astype(np.float64), sigma)
    mask = ref > 0.4 * ref[ref > np.median(ref)].mean()
    step = np.maximum(1, np.round(separation_mm / voxel_mm)).astype(int)
    sampled = np.zeros_like(mask)
    sampled[::step[0], ::step[1], ::step[2]] = True
    mask &= sampled
    ijk = np.argwhere(mask).astype(float)
    points = nib.affines.apply_affine(affine, ijk)
    centre = points.mean(axis=0)
    target = ref[mask]
    gradient_ijk = np.stack([g[mask] for g in np.gradient(ref)], axis=1)
    gradient = gradient_ijk @ np.linalg.inv(affine[:3, :3])  # d/d(world) = d/d(ijk) · d(ijk)/d(world)
    arm = points - centre
    # d I(x + t + w × arm)/d(t, w) = [grad, arm × grad]
    jacobian = np.hstack([gradient, np.cross(arm, gradient)])
    solve = np.linalg.pinv(jacobian)
    to_voxel = np.linalg.inv(affine)
    transforms = []
    current = np.eye(4)
    for volume in volumes:
        volume = ndimage.gaussian_filter(volume.astype(np.float64), sigma)
        for _ in range(max_iter):
            moved = nib.affines.apply_affine(to_voxel @ current, points)
            sampled = ndimage.map_coordinates(volume, moved.T, order=1, mode="nearest")
            step = solve @ (target - sampled)
            current = rigid_matrix(step, centre) @ current
            if np.abs(step[:3]).max() < tol_mm and np.abs(step[3:]).max() * 50 < tol_mm:
                break
        transforms.append(current)
    return np.asarray(transforms)


#: volumes a run's motion reference and BOLD reference are medians of (at most)
REFERENCE_VOLUMES = 100


def reference_volumes(n_volumes: int) -> np.ndarray:
    """Indices of at most `REFERENCE_VOLUMES` evenly spaced volumes of a run, the first and last
    included: the references are medians of these, as fMRIPrep's is the median of a few volumes,
    so that their cost and memory do not grow with the run."""
    return np.unique(np.linspace(0, n_volumes - 1, min(REFERENCE_VOLUMES, n_volumes)).round().astype(int))


def rigid_matrix(params: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4x4 rigid transform from (tx, ty, tz, rx, ry, rz) about ``centre`` (mm, radians)."""
    out = np.eye(4)
    rotation = Rotation.from_euler("xyz", params[3:6]).as_matrix()
    out[:3, :3] = rotation
    out[:3, 3] = centre + params[:3] - rotation @ centre
    return out


def motion_parameters(transforms: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(T, 6) translations (mm, of ``centre``) and x-y-z Euler rotations (rad)."""
    params = np.zeros((len(transforms), 6))
    for t, matrix in enumerate(transforms):
        params[t, :3] = matrix[:3, :3] @ centre + matrix[:3, 3] - centre
        params[t, 3:] = Rotation.from_matrix(matrix[:3, :3]).as_euler("xyz")
    return params


def framewise_displacement(motion: np.ndarray, radius_mm: float = 50.0) -> np.ndarray:
    """Power et al. 2012 FD from (T, 6) rigid parameters (mm, radians); FD[0] = 0."""
    d = np.abs(np.diff(motion, axis=0))
    d[:, 3:] *= radius_mm
    return np.concatenate([[0.0], d.sum(axis=1)])


def volume_centre(img: nib.Nifti1Image) -> np.ndarray:
    """World coordinates (mm) of the centre of the image's grid."""
    return nib.affines.apply_affine(img.affine, (np.asarray(img.shape[:3]) - 1) / 2)
