"""Registration of a subject's T1w to the template (affine + nonlinear), two backends.

Whatever the backend, the result is a *coordinate map*: a (X, Y, Z, 3) image on the
template grid whose voxels hold the T1w world coordinates (mm) they correspond to
(NaN outside the T1w). It is made by warping images of the T1w's own x, y, z
coordinates, which linear interpolation reproduces exactly, so any backend's
transforms become one plain array that composes with rigid matrices by arithmetic.
"""
from __future__ import annotations

import os
import tempfile

import nibabel as nib
import numpy as np
from scipy import ndimage

from conntool.steps.motion import estimate_linear, preset_sampling
from conntool.steps.resample import grid_world_coords


def _to_ants(img: nib.Nifti1Image):
    """nibabel image → ANTs image (through a file: ANTs reads NIfTI headers exactly)."""
    import ants

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "img.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine), path)
        return ants.image_read(path)


def _coordinate_images(img: nib.Nifti1Image) -> list[nib.Nifti1Image]:
    """x, y, z world-coordinate images of ``img``'s grid, then an all-ones image."""
    coords = grid_world_coords(img)
    channels = [coords[..., k] for k in range(3)] + [np.ones(img.shape[:3])]
    return [nib.Nifti1Image(c.astype(np.float32), img.affine) for c in channels]


def _finish_coordmap(channels: list[np.ndarray], affine: np.ndarray) -> nib.Nifti1Image:
    """Stack warped coordinate channels; NaN where the warped ones-image fell below 1."""
    coords = np.stack(channels[:3], axis=-1).astype(np.float32)
    coords[channels[3] < 0.999] = np.nan
    return nib.Nifti1Image(coords, affine)


def normalize_ants(t1w: nib.Nifti1Image, template: nib.Nifti1Image,
                   seed: int) -> tuple[nib.Nifti1Image, nib.Nifti1Image, float]:
    """ANTs affine (MI) then SyN (cross-correlation) of the skull-stripped T1w.

    Returns the coordinate maps template → T1w (on the template grid) and T1w → template
    (on the T1w grid), and the correlation of the warped T1w with the template. Even
    single-threaded and seeded, antsRegistration's results differ slightly run to run.
    """
    import ants
    from ants.config import set_ants_deterministic

    set_ants_deterministic(on=False, seed_value=seed)  # antspyx's seed; on=True refuses SyN
    fixed, moving = _to_ants(template), _to_ants(t1w)
    affine_reg = ants.registration(fixed, moving, type_of_transform="Affine")
    syn = ants.registration(fixed, moving, type_of_transform="SyNOnly",
                            initial_transform=affine_reg["fwdtransforms"][0], syn_metric="CC",
                            syn_sampling=2, reg_iterations=(40, 20, 0))
    channels = [
        ants.apply_transforms(fixed, _to_ants(c), syn["fwdtransforms"], interpolator="linear").numpy()
        for c in _coordinate_images(t1w)
    ]
    inverse = [
        ants.apply_transforms(moving, _to_ants(c), syn["invtransforms"], interpolator="linear",
                              whichtoinvert=[True, False]).numpy()
        for c in _coordinate_images(template)
    ]
    warped = syn["warpedmovout"].numpy()
    return (_finish_coordmap(channels, template.affine), _finish_coordmap(inverse, t1w.affine),
            _similarity(warped, template))


def voxel_sizes(img: nib.Nifti1Image) -> np.ndarray:
    """(3,) voxel edge lengths, mm, from the affine's columns."""
    return np.sqrt((np.asarray(img.affine)[:3, :3] ** 2).sum(axis=0))


def at_resolution(img: nib.Nifti1Image, voxel_mm: float) -> nib.Nifti1Image:
    """``img`` on a grid of ``voxel_mm`` voxels with the same axes and field of view: smoothed
    (Gaussian of FWHM ``voxel_mm``, so the coarser grid does not alias), then resampled
    (trilinear), both with nilearn."""
    from nilearn.image import resample_img, smooth_img

    target = np.asarray(img.affine)[:3, :3] * (voxel_mm / voxel_sizes(img))
    return resample_img(smooth_img(img, voxel_mm), target_affine=target, interpolation="linear",
                        force_resample=True, copy_header=True)


def normalize_dipy(t1w: nib.Nifti1Image, template: nib.Nifti1Image, seed: int, affine_sampling: float = 1.0,
                   coarse_affine: bool = True) -> tuple[nib.Nifti1Image, nib.Nifti1Image, float]:
    """DIPY affine (MI: centre of mass, translation, rigid, affine) then SyN (CC).

    The affine steps' mutual information is computed on ``affine_sampling`` of the template's
    voxels, drawn with ``seed`` (1: all of them). They took three quarters of the time with all
    voxels; a fifth gave the same accuracy against the simulation's known warp, in half the time
    (``bench/bench_registration.py``).

    A T1w finer than the template (1 mm against 2 mm) goes through the affine steps at the
    template's resolution (:func:`at_resolution`; ``coarse_affine=False`` does not): they took three quarters of the time at 1 mm,
    and twelve parameters do not need the finer grid. SyN then sees the T1w at its own
    resolution, which keeps the warp's accuracy (``bench/bench_registration.py --profile hcp``).
    """
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
    from dipy.align.metrics import CCMetric

    static = np.asarray(template.dataobj, np.float32)
    moving = np.asarray(t1w.dataobj, np.float32)
    template_mm = float(voxel_sizes(template).min())
    finer = coarse_affine and voxel_sizes(t1w).max() < 0.75 * template_mm
    linear_t1w = at_resolution(t1w, template_mm) if finer else t1w
    template_to_t1w = estimate_linear(template, linear_t1w,
                                      pipeline=("center_of_mass", "translation", "rigid", "affine"), seed=seed,
                                      sampling_proportion=preset_sampling(affine_sampling))
    sdr = SymmetricDiffeomorphicRegistration(CCMetric(3), level_iters=[40, 20, 5])
    mapping = sdr.optimize(static, moving, static_grid2world=template.affine, moving_grid2world=t1w.affine,
                           prealign=template_to_t1w)
    channels = [mapping.transform(np.asarray(c.dataobj), interpolation="linear") for c in _coordinate_images(t1w)]
    inverse = [mapping.transform_inverse(np.asarray(c.dataobj), interpolation="linear")
               for c in _coordinate_images(template)]
    warped = mapping.transform(moving, interpolation="linear")
    return (_finish_coordmap(channels, template.affine), _finish_coordmap(inverse, t1w.affine),
            _similarity(warped, template))


def _similarity(warped: np.ndarray, template: nib.Nifti1Image) -> float:
    """Pearson correlation of warped T1w and template inside the template brain."""
    ref = np.asarray(template.dataobj, float)
    inside = ref > 0
    return float(np.corrcoef(warped[inside], ref[inside])[0, 1])


def normalize(t1w_brain: nib.Nifti1Image, template: nib.Nifti1Image, backend: str, seed: int,
              affine_sampling: float = 1.0) -> tuple[nib.Nifti1Image, nib.Nifti1Image, float]:
    """Skull-stripped T1w → skull-stripped template with the chosen backend ('ants' or
    'dipy', whose affine steps sample ``affine_sampling`` of the voxels); see module docstring."""
    if backend == "ants":
        return normalize_ants(t1w_brain, template, seed)
    return normalize_dipy(t1w_brain, template, seed, affine_sampling)


def map_points(coordmap: nib.Nifti1Image, points_mm: np.ndarray) -> np.ndarray:
    """Points carried through a coordinate map (linear interpolation; NaN stays NaN).

    Parameters
    ----------
    coordmap : (I, J, K, 3) image; voxel → world (mm) of space A by its affine, holding world
        coordinates (mm) of space B (NaN where unknown).
    points_mm : (..., 3) world coordinates (mm) in space A.

    Returns
    -------
    (..., 3) world coordinates (mm) in space B; NaN outside the map or where it is unknown.
    """
    data = np.asarray(coordmap.dataobj, float)
    ijk = np.moveaxis(nib.affines.apply_affine(np.linalg.inv(coordmap.affine), np.nan_to_num(points_mm, nan=-1e6)),
                      -1, 0)
    valid = np.isfinite(data).all(axis=-1).astype(float)
    filled = np.nan_to_num(data)
    out = np.stack([ndimage.map_coordinates(filled[..., k], ijk, order=1, cval=np.nan) for k in range(3)], axis=-1)
    keep = ndimage.map_coordinates(valid, ijk, order=1, cval=0.0) > 0.999
    out[~keep] = np.nan
    return out


def resample_coordmap(coordmap: nib.Nifti1Image, target: nib.Nifti1Image) -> np.ndarray:
    """Coordinate map re-gridded (linear) onto ``target``'s grid; NaN stays NaN."""
    return map_points(coordmap, grid_world_coords(target))
