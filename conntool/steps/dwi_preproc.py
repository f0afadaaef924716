"""Diffusion preprocessing on arrays: gradient checks, denoising (Gibbs removal is in
:mod:`conntool.steps.gibbs`), per-volume affine motion/eddy correction with b-vector rotation, brain mask."""
from __future__ import annotations

import numpy as np
from dipy.core.gradients import GradientTable, gradient_table

B0_THRESHOLD = 50.0


def check_gradients(n_volumes: int, bvals: np.ndarray, bvecs: np.ndarray, name: str) -> None:
    """Raise ValueError naming ``name`` when volumes, b-values and b-vectors disagree."""
    if bvecs.shape[0] != 3 and bvecs.shape[1] == 3:
        bvecs = bvecs.T
    if len(bvals) != n_volumes or bvecs.shape[1] != n_volumes:
        raise ValueError(f"{name}: {n_volumes} volumes but {len(bvals)} b-values and {bvecs.shape[1]} b-vectors")
    weighted = bvals > B0_THRESHOLD
    if not weighted.any() or weighted.all():
        raise ValueError(f"{name}: need both b=0 and diffusion-weighted volumes")
    norms = np.linalg.norm(bvecs[:, weighted], axis=0)
    if np.any(np.abs(norms - 1) > 0.1):
        raise ValueError(f"{name}: b-vectors of weighted volumes must have unit norm (found {norms.min():.2f}"
                         f"-{norms.max():.2f})")


def shells(bvals: np.ndarray, tolerance: float = 100.0) -> list[float]:
    """Distinct b-values (shells), rounded to ``tolerance``."""
    return sorted({float(np.round(b / tolerance) * tolerance) for b in bvals})


def make_gtab(bvals: np.ndarray, bvecs: np.ndarray) -> GradientTable:
    """DIPY gradient table from b-values (T,) and b-vectors (3, T) as in a ``.bvec`` file, or (T, 3)."""
    bvecs = bvecs.T if bvecs.shape[0] == 3 and bvecs.shape[1] != 3 else bvecs
    return gradient_table(bvals, bvecs=bvecs, b0_threshold=B0_THRESHOLD)


def denoise(data: np.ndarray, gtab: GradientTable, method: str) -> np.ndarray:
    """MP-PCA (Veraart 2016; :mod:`conntool.steps.mppca`, DIPY's result 3x faster) or Patch2Self
    (Fadnavis 2020, DIPY's)."""
    if method == "none":
        return data
    if method == "mppca":
        from scipy import ndimage

        from conntool.steps.mppca import mppca

        head = ndimage.binary_dilation(brain_mask(data, gtab), iterations=3)  # skip the background: 3x faster
        return mppca(np.ascontiguousarray(data, np.float32), mask=head, patch_radius=2)
    from dipy.denoise.patch2self import patch2self

    return patch2self(data, gtab.bvals, model="ols", shift_intensity=True, clip_negative_vals=False,
                      b0_threshold=B0_THRESHOLD).astype(np.float32)


def _one_blas_thread() -> None:
    """Initialiser of the registration processes: one BLAS/OpenMP thread each (they inherit the
    node's thread budget, which the processes already use up)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _register_volume(reference: np.ndarray, volume: np.ndarray, affine: np.ndarray, seed: int,
                     sampling_proportion: float) -> np.ndarray:
    """4x4 world transform, reference point → the same point in ``volume`` (both on ``affine``'s grid)."""
    import nibabel as nib

    from conntool.steps.motion import estimate_linear

    return estimate_linear(nib.Nifti1Image(reference, affine), nib.Nifti1Image(volume, affine),
                           pipeline=("translation", "affine"), level_iters=(100, 20), sigmas=(1.0, 0.0),
                           factors=(2, 1), sampling_proportion=sampling_proportion, seed=seed)


def correct_motion(data: np.ndarray, affine: np.ndarray, gtab: GradientTable, seed: int,
                   sampling_proportion: float, n_processes: int = 1) -> tuple[np.ndarray, GradientTable, np.ndarray]:
    """Affine registration of every volume to the first b0, one resampling per volume, and
    b-vector rotation by each affine's rotation.

    Registration is DIPY's (mutual information on ``sampling_proportion`` of the voxels,
    drawn with ``seed``). About 2 s a volume for a 3 mm series at 0.25; dense sampling, or
    DIPY's ``motion_correction``, takes about 5 s. Volumes are registered in ``n_processes``
    processes (DIPY's registration holds the GIL); each is seeded on its own, so the result
    does not depend on how many.

    Parameters
    ----------
    data : (X, Y, Z, T) series on the grid of ``affine`` (voxel → world, mm).
    gtab : gradient table of the T volumes, b-vectors in the b-vector frame of ``affine``
        (BIDS/FSL convention, see :mod:`conntool.steps.dwi_space`).

    Returns
    -------
    corrected : (X, Y, Z, T) float32 series on the same grid.
    gtab : the gradient table with rotated b-vectors (same frame).
    affines : (T, 4, 4) world (mm) transforms, first-b0 point → the same point in volume t.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    import nibabel as nib

    from conntool.steps.dwi_space import rotate_bvecs
    from conntool.steps.resample import grid_world_coords, resample_volumes, series_fov

    first_b0 = np.flatnonzero(gtab.b0s_mask)[0]
    reference = data[..., first_b0]
    others = [t for t in range(data.shape[-1]) if t != first_b0]
    register = partial(_register_volume, reference, affine=affine, seed=seed, sampling_proportion=sampling_proportion)
    volumes = (data[..., t] for t in others)
    if n_processes > 1:
        with ProcessPoolExecutor(n_processes, mp_context=multiprocessing.get_context("forkserver"),
                                 initializer=_one_blas_thread) as pool:
            found = list(pool.map(register, volumes))
    else:
        found = list(map(register, volumes))
    affines = np.repeat(np.eye(4)[None], data.shape[-1], axis=0)
    affines[others] = found
    coords = grid_world_coords(nib.Nifti1Image(reference, affine))
    corrected = resample_volumes(data, affine, coords, affines, series_fov(data.shape, affine, coords, affines),
                                 n_threads=n_processes)
    return corrected, make_gtab(gtab.bvals, rotate_bvecs(gtab.bvecs, affine, affines)), affines


def brain_mask(data: np.ndarray, gtab: GradientTable) -> np.ndarray:
    """Mask from the mean b0 (median Otsu, DIPY)."""
    from dipy.segment.mask import median_otsu

    mean_b0 = data[..., gtab.b0s_mask].mean(axis=-1)
    _, mask = median_otsu(mean_b0, median_radius=2, numpass=1)
    return mask
