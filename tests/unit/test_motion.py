import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from conntool.steps.motion import (estimate_linear, estimate_motion, framewise_displacement, motion_parameters,
                                   reference_volumes, rigid_matrix, volume_centre)
from conntool.steps.resample import grid_world_coords, resample_series


def test_framewise_displacement_power2012():
    motion = np.zeros((3, 6))
    motion[1, 0] = 1.0          # 1 mm translation
    motion[2, 3] = 0.01         # 0.01 rad → 0.5 mm on a 50 mm sphere
    assert np.allclose(framewise_displacement(motion), [0.0, 1.0, 1.0 + 0.5])


def test_rigid_matrix_and_parameters_round_trip():
    centre = np.array([1.0, -20.0, 10.0])
    params = np.array([0.5, -1.2, 2.0, 0.02, -0.01, 0.03])
    recovered = motion_parameters(rigid_matrix(params, centre)[None], centre)[0]
    assert np.allclose(recovered, params)


def _blob_series(params_list):
    """A smooth 3D phantom moved rigidly by each parameter set (the ground truth)."""
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = -30
    shape = (20, 20, 20)
    rng = np.random.default_rng(1)
    ijk = np.indices(shape) - 9.5
    head = (ijk[0] ** 2 / 49 + ijk[1] ** 2 / 36 + ijk[2] ** 2 / 25) < 1  # an ellipsoid on zero background
    ref = ndimage.gaussian_filter(head * (500 + 500 * ndimage.gaussian_filter(rng.random(shape), 1.5)), 1)
    ref_img = nib.Nifti1Image(ref, affine)
    coords = grid_world_coords(ref_img)
    centre = volume_centre(ref_img)
    inverse = np.stack([np.linalg.inv(rigid_matrix(p, centre)) for p in params_list])
    moved, _ = resample_series(np.repeat(ref[..., None], len(params_list), -1), affine, coords, inverse)
    return ref, nib.Nifti1Image(moved, affine), centre


@pytest.mark.parametrize("separation_mm", [0.0, 6.0])
def test_estimate_motion_recovers_known_rigid_motion(separation_mm):
    """Every voxel, and every other 3 mm voxel along each axis (the presets' 4 mm, for 2 mm voxels)."""
    truth = np.array([[0, 0, 0, 0, 0, 0], [1.0, -0.5, 0.3, 0.01, 0, -0.01], [-0.8, 0.6, 1.2, 0, 0.015, 0.01]])
    ref, img, centre = _blob_series(truth)
    volumes = np.moveaxis(np.asarray(img.dataobj), -1, 0)
    estimated = motion_parameters(estimate_motion(volumes, img.affine, ref, separation_mm=separation_mm), centre)
    assert np.abs(estimated[:, :3] - truth[:, :3]).max() < 0.15
    assert np.abs(estimated[:, 3:] - truth[:, 3:]).max() < 0.003
    dense = motion_parameters(estimate_motion(volumes, img.affine, ref), centre)
    assert np.array_equal(estimated, dense) == (separation_mm == 0)  # 6 mm samples fewer points


def test_estimate_linear_recovers_rigid_transform_and_repeats_exactly():
    truth = np.array([[0, 0, 0, 0, 0, 0], [2.0, -1.5, 1.0, 0.03, -0.02, 0.04]])
    ref, img, centre = _blob_series(truth)
    fixed = nib.Nifti1Image(ref, img.affine)
    moving = nib.Nifti1Image(img.get_fdata()[..., 1], img.affine)
    first = estimate_linear(fixed, moving, pipeline=("translation", "rigid"))
    estimated = motion_parameters(first[None], centre)[0]
    assert np.abs(estimated[:3] - truth[1, :3]).max() < 0.3
    assert np.abs(estimated[3:] - truth[1, 3:]).max() < 0.006
    sampled = [estimate_linear(fixed, moving, pipeline=("translation", "rigid"), sampling_proportion=0.3, seed=4)
               for _ in range(2)]
    assert np.array_equal(first, estimate_linear(fixed, moving, pipeline=("translation", "rigid")))
    assert np.array_equal(*sampled)


def test_references_are_medians_of_at_most_100_evenly_spaced_volumes():
    assert reference_volumes(30).tolist() == list(range(30))
    picked = reference_volumes(1200)
    assert len(picked) == 100 and picked[0] == 0 and picked[-1] == 1199
    assert np.ptp(np.diff(picked)) <= 1  # evenly spaced
