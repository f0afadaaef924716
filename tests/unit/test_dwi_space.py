"""DWI-space geometry against known truth: the b-vector frame, b-vector rotation with the head
(LAS, RAS and oblique images), and DWI voxels → template coordinates."""
import numpy as np
import pytest
from scipy.linalg import polar
from scipy.spatial.transform import Rotation

from conntool.steps.dwi_space import (bvec_frame_to_world, bvecs_for_dipy, rotate_bvecs, template_points_of_dwi,
                                      world_to_bvecs)

FLIP_X = np.diag([-1.0, 1.0, 1.0])


def _affine(linear: np.ndarray, origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = origin
    return affine


def _transform(rotation: np.ndarray, translation=(2.0, -3.0, 1.5)) -> np.ndarray:
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = translation
    return transform


# (voxel → world affine, world direction of each b-vector axis as columns, written out by hand)
ORIENTED = Rotation.from_euler("xyz", [20, -15, 30], degrees=True).as_matrix()
IMAGES = {
    # LAS (det < 0, the real data's orientation): b-vectors are the voxel axes as they are
    "LAS": (_affine(np.diag([-2.0, 2.0, 2.5])), np.diag([-1.0, 1.0, 1.0])),
    # RAS (det > 0): FSL's convention negates the first axis
    "RAS": (_affine(np.diag([2.0, 2.0, 2.5])), np.diag([-1.0, 1.0, 1.0])),
    # oblique, det > 0: voxel axes are the columns of ORIENTED, the first negated
    "oblique": (_affine(ORIENTED @ np.diag([2.0, 2.2, 3.0])), ORIENTED @ FLIP_X),
    # oblique, det < 0
    "oblique LAS": (_affine(ORIENTED @ np.diag([-2.0, 2.2, 3.0])), ORIENTED @ np.diag([-1.0, 1.0, 1.0])),
}


@pytest.mark.parametrize("image", IMAGES)
def test_bvec_frame_is_the_fsl_voxel_frame(image):
    affine, truth = IMAGES[image]
    assert np.allclose(bvec_frame_to_world(affine), truth)


def test_bvec_x_points_to_world_left_in_las_and_ras_alike():
    # the same axial acquisition stored LAS or RAS has the same .bvec file under FSL's convention
    for image in ("LAS", "RAS"):
        assert np.allclose(bvec_frame_to_world(IMAGES[image][0]) @ [1, 0, 0], [-1, 0, 0])


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("axis", ["x", "y", "z", "xyz"])
def test_rotated_bvecs_in_world_are_the_world_directions_rotated_back(image, axis):
    """Head rotated by R during a volume: after resampling, the gradient seen from the head is
    R⁻¹ g in world. Rotations about y and z of a LAS image are where a world-frame rotation of
    voxel-frame b-vectors gets the sign wrong."""
    affine, to_world = IMAGES[image]
    angles = {"x": [12, 0, 0], "y": [0, 12, 0], "z": [0, 0, 12], "xyz": [8, -11, 14]}[axis]
    rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    rng = np.random.default_rng(1)
    bvecs = rng.normal(size=(6, 3))
    bvecs /= np.linalg.norm(bvecs, axis=1, keepdims=True)
    bvecs[0] = 0.0  # a b0
    transforms = np.stack([_transform(rotation)] * len(bvecs))
    rotated = rotate_bvecs(bvecs, affine, transforms)
    expected_world = (rotation.T @ (to_world @ bvecs.T)).T
    assert np.allclose((to_world @ rotated.T).T, expected_world, atol=1e-10)
    assert np.allclose(rotated[0], 0.0)
    assert np.allclose(np.linalg.norm(rotated[1:], axis=1), 1.0)


def test_only_the_rotation_of_an_affine_turns_bvecs():
    affine, to_world = IMAGES["oblique"]
    rotation = Rotation.from_euler("z", 10, degrees=True).as_matrix()
    scaled = _transform(rotation @ np.diag([1.05, 0.97, 1.0]))  # rotation then eddy-current scaling
    bvec = np.array([[0.0, 0.6, 0.8]])
    rotated = rotate_bvecs(bvec, affine, scaled[None])
    pure, _ = polar(scaled[:3, :3])
    assert np.allclose(to_world @ rotated[0], pure.T @ to_world @ bvec[0])
    assert np.isclose(np.linalg.norm(rotated), 1.0)


def test_template_points_through_rigid_and_translation_coordmap():
    shape = (5, 6, 4)
    dwi_affine = _affine(ORIENTED @ np.diag([-2.0, 2.0, 2.5]), origin=(4.0, -6.0, 2.0))
    t1w_to_dwi = _transform(Rotation.from_euler("xyz", [5, -8, 12], degrees=True).as_matrix(), (3.0, -2.0, 4.0))
    t1w_affine = _affine(np.eye(3), origin=(-40.0, -40.0, -40.0))
    shift = np.array([10.0, -20.0, 5.0])  # template = T1w + shift
    t1w_points = np.moveaxis(np.indices((80, 80, 80), dtype=float), 0, -1) + t1w_affine[:3, 3]
    coordmap = t1w_points + shift
    out = template_points_of_dwi(shape, dwi_affine, t1w_to_dwi, coordmap, t1w_affine)

    ijk = np.moveaxis(np.indices(shape, dtype=float), 0, -1)
    dwi_world = ijk @ dwi_affine[:3, :3].T + dwi_affine[:3, 3]
    t1w_world = (dwi_world - t1w_to_dwi[:3, 3]) @ t1w_to_dwi[:3, :3]  # inverse rigid: R^T (p - t)
    assert out.shape == shape + (3,)
    assert np.allclose(out, t1w_world + shift, atol=1e-6)

    far = t1w_to_dwi.copy()
    far[:3, 3] += 500.0  # the DWI lies outside the T1w grid: no template coordinate
    assert np.isnan(template_points_of_dwi(shape, dwi_affine, far, coordmap, t1w_affine)).all()


@pytest.mark.parametrize("flip_x", [False, True])
def test_dipy_reads_world_directions_of_bids_bvecs_in_voxel_axes(flip_x):
    """A world direction written as a BIDS b-vector reaches DIPY as the same direction along the
    voxel axes: left-right is not mirrored, whether the image is stored RAS (det > 0) or LAS."""
    affine = np.diag([-2.0 if flip_x else 2.0, 2.0, 2.0, 1.0])
    world = np.array([[0.8, 0.6, 0.0], [0.0, 0.6, 0.8], [1.0, 0.0, 0.0]])
    bids = world_to_bvecs(world, affine)
    voxel_axes = affine[:3, :3] / 2.0  # world direction of each voxel axis
    assert np.allclose(bvecs_for_dipy(bids, affine) @ voxel_axes.T, world)
    if not flip_x:  # RAS storage: BIDS negates x, so the raw file differs from the voxel frame
        assert np.allclose(bids[:, 0], -world[:, 0])
