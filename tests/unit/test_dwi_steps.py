import numpy as np
import pytest
from dipy.tracking.streamline import Streamlines
from scipy.linalg import polar
from scipy.spatial.transform import Rotation

from conntool.steps.dwi_model import sh_order_for, unique_directions
from conntool.steps.dwi_preproc import check_gradients, correct_motion, make_gtab, shells
from conntool.steps.dwi_space import bvec_frame_to_world
from conntool.steps.tracking import assign_by_radial_search, structural_matrices


def _scheme(n_dirs=6):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n_dirs, 3))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.r_[0, np.full(n_dirs, 1000.0)], np.vstack([np.zeros(3), vecs]).T


def test_gradient_checks_name_the_problem():
    bvals, bvecs = _scheme()
    check_gradients(7, bvals, bvecs, "x_dwi.nii.gz")
    with pytest.raises(ValueError, match="x_dwi.nii.gz: 8 volumes but 7 b-values"):
        check_gradients(8, bvals, bvecs, "x_dwi.nii.gz")
    bad = bvecs.copy()
    bad[:, 3] *= 2
    with pytest.raises(ValueError, match="unit norm"):
        check_gradients(7, bvals, bad, "x_dwi.nii.gz")
    with pytest.raises(ValueError, match="b=0"):
        check_gradients(7, np.full(7, 1000.0), bvecs, "x_dwi.nii.gz")
    assert shells(np.array([0, 5, 995, 1005, 2500])) == [0.0, 1000.0, 2500.0]


def test_sh_order_from_directions():
    assert sh_order_for(6) == 2
    assert sh_order_for(20) == 4
    assert sh_order_for(32) == 6
    assert sh_order_for(64) == 8


def test_structural_matrices_count_length_and_fa():
    labels = np.zeros((10, 3, 3), np.int32)
    labels[0] = 4
    labels[9] = 7
    labels[5] = 9  # a node no streamline ends in
    fa = np.full(labels.shape, 0.5)
    line = np.array([[0.0, 1, 1], [4.5, 1, 1], [9.0, 1, 1]])
    streamlines = Streamlines([line, line + [0, 0.2, 0], np.array([[0.0, 1, 1], [3.0, 1, 1]])])  # 4-7 twice, 4-0
    out = structural_matrices(streamlines, np.eye(4), labels, (4, 7, 9), fa)
    count = out["StreamlineCount"]
    assert count[0, 1] == count[1, 0] == 2 and count[0, 2] == 0
    assert np.isclose(out["MeanLength"][0, 1], 9.0) and np.isnan(out["MeanLength"][0, 2])
    assert np.isclose(out["MeanFA"][0, 1], 0.5)
    assert np.isclose(out["StreamlineCountVolumeNormalized"][0, 1], 2 * 2 / (9 + 9))


def _gtab(directions):
    directions = np.asarray(directions, float)
    return make_gtab(np.r_[0.0, np.full(len(directions), 1000.0)], np.vstack([np.zeros(3), directions]))


def test_unique_directions_fold_each_antipodal_pair():
    assert unique_directions(_gtab([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]])) == 3
    assert unique_directions(_gtab([[0, 0, 1], [0, 0, -1], [0, 0.6, 0.8], [0, -0.6, -0.8], [0, 0.6, -0.8]])) == 3
    # in the yz plane, with a first component that is noise of either sign
    assert unique_directions(_gtab([[1e-4, 0.6, 0.8], [-1e-4, -0.6, -0.8], [-1e-4, 0.8, -0.6]])) == 2
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(30, 3))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    assert unique_directions(_gtab(np.vstack([vecs, -vecs[:10]]))) == 30


def test_radial_search_gives_unlabelled_voxels_the_nearest_label_within_radius():
    labels = np.zeros((12, 3, 3), np.int64)
    labels[0], labels[8], labels[11] = 1, 2, 3
    grown = assign_by_radial_search(labels, 2.0)
    assert (grown[7] == 2).all() and (grown[6] == 2).all()  # 1 and 2 voxels from parcel 2
    assert (grown[10] == 3).all() and (grown[9] == 2).all()  # nearer parcel wins (3 at 1 voxel, 2 at 2 voxels)
    assert (grown[4] == 0).all()  # 4 voxels from parcel 1 and parcel 2: beyond the radius
    assert (grown[[0, 8, 11]] == labels[[0, 8, 11]]).all()  # parcels keep their own labels
    assert (assign_by_radial_search(labels, 0) == labels).all()


def test_endpoint_one_voxel_short_counts_only_with_radial_search():
    labels = np.zeros((14, 3, 3), np.int32)
    labels[0], labels[8], labels[11] = 5, 6, 7
    fa = np.full(labels.shape, 0.5)
    short = np.array([[0.0, 1, 1], [7.0, 1, 1]])  # ends 1 voxel before parcel 6
    between = np.array([[0.0, 1, 1], [10.0, 1, 1]])  # ends 2 voxels past parcel 6, 1 voxel before parcel 7
    streamlines = Streamlines([short, between])
    without = structural_matrices(streamlines, np.eye(4), labels, (5, 6, 7), fa, search_radius_voxels=0)
    assert without["StreamlineCount"].sum() == 0
    found = structural_matrices(streamlines, np.eye(4), labels, (5, 6, 7), fa, search_radius_voxels=2)
    count = found["StreamlineCount"]
    assert count[0, 1] == count[1, 0] == 1  # the short one reaches parcel 6
    assert count[0, 2] == count[2, 0] == 1  # the other goes to the nearer parcel 7, not to 6
    assert count[1, 2] == 0
    assert np.isclose(found["MeanLength"][0, 1], 7.0) and np.isclose(found["MeanLength"][0, 2], 10.0)
    assert np.isclose(found["StreamlineCountVolumeNormalized"][0, 1], 2 * 1 / (9 + 9))  # atlas volumes, not grown


def _phantom(points):
    """Sharp-edged ellipsoids of different brightness, nothing symmetric."""
    out = np.zeros(points.shape[:-1])
    for centre, radii, weight in (([0, 0, 0], [30, 22, 18], 1.0), ([12, 8, 4], [8, 5, 6], 1.5),
                                  ([-14, -6, -5], [5, 9, 4], 2.0), ([5, -15, 8], [4, 4, 7], 1.2)):
        distance = np.sqrt(np.sum(((points - np.asarray(centre)) / radii) ** 2, axis=-1))
        out += weight / (1 + np.exp((distance - 1) * 8))
    return out


def test_motion_correction_rotates_bvecs_with_the_head_in_a_las_image():
    """A volume acquired with the head turned 6 degrees about z (world): its b-vector, after
    correction, points in world along R⁻¹ g. In a LAS image the voxel-frame b-vector turned by
    the world rotation would point along R g instead, 12 degrees away."""
    shape = (32, 32, 24)
    affine = np.diag([-3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [48, -48, -36]
    world = np.moveaxis(np.indices(shape, dtype=float), 0, -1) @ affine[:3, :3].T + affine[:3, 3]
    rotation = Rotation.from_euler("z", 6, degrees=True).as_matrix()
    head = np.eye(4)
    head[:3, :3], head[:3, 3] = rotation, [1.5, -1.0, 0.5]
    moved = (world - head[:3, 3]) @ rotation  # volume 2 shows at y the anatomy of reference point head⁻¹ y
    data = 1000 * np.stack([_phantom(world), 0.6 * _phantom(world), 0.6 * _phantom(moved)], axis=-1)
    bvecs = np.array([[0, 0, 0], [0.6, 0.8, 0], [0.6, 0.8, 0]])
    _, gtab, transforms = correct_motion(data.astype(np.float32), affine, make_gtab(np.array([0, 1000, 1000.0]), bvecs),
                                         seed=0, sampling_proportion=1.0)
    estimated, _ = polar(transforms[2][:3, :3])
    assert Rotation.from_matrix(estimated @ rotation.T).magnitude() < np.radians(2)

    def angle(a, b):
        return np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))

    to_world = bvec_frame_to_world(affine)
    assert np.allclose(to_world, np.diag([-1, 1, 1]))  # LAS: the b-vector frame is the voxel frame
    corrected_world = to_world @ gtab.bvecs[2]
    assert angle(corrected_world, rotation.T @ to_world @ bvecs[2]) < 2.5
    assert angle(corrected_world, rotation @ to_world @ bvecs[2]) > 9
    assert angle(to_world @ gtab.bvecs[1], to_world @ bvecs[1]) < 2.5  # volume 1 did not move


def test_motion_correction_does_not_depend_on_the_number_of_processes():
    shape = (20, 20, 16)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    world = np.moveaxis(np.indices(shape, dtype=float), 0, -1) @ affine[:3, :3].T
    shifted = [world - [k * 0.7, -k * 0.4, k * 0.3] for k in range(4)]
    data = np.stack([1000 * (0.6 if k else 1.0) * _phantom(w) for k, w in enumerate(shifted)], axis=-1)
    bvecs = np.array([[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    gtab = make_gtab(np.array([0, 1000, 1000, 1000.0]), bvecs)
    one = correct_motion(data.astype(np.float32), affine, gtab, seed=0, sampling_proportion=0.5)
    two = correct_motion(data.astype(np.float32), affine, gtab, seed=0, sampling_proportion=0.5, n_processes=2)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[2], two[2])
    assert not np.allclose(one[2][3], np.eye(4), atol=0.1)  # volume 3 moved by about 2.5 mm, and was found to


@pytest.mark.parametrize("model,tracking_kind", [("dti", "deterministic"), ("csd", "probabilistic")])
def test_tracking_does_not_depend_on_the_number_of_processes(model, tracking_kind):
    """A fibre along x in a 3 mm phantom: the same streamlines, in the same order, from one
    process and from two (each streamline depends on its seed alone)."""
    from dipy.sims.voxel import multi_tensor

    from conntool.steps import dwi_model, tracking

    rng = np.random.default_rng(0)
    bvals, bvecs = _scheme(30)
    gtab = make_gtab(bvals, bvecs)
    fibre, _ = multi_tensor(gtab, np.array([[1.7e-3, 0.3e-3, 0.3e-3]]), S0=100, angles=[(90, 0)], fractions=[100],
                            snr=None)
    shape = (20, 8, 8)
    data = np.abs(fibre + rng.normal(0, 2, shape + (len(bvals),))).astype(np.float32)
    mask = np.ones(shape, bool)
    fit, _ = dwi_model.fit_fibre_model(data, gtab, mask, model)
    fa = np.full(shape, 0.7)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    recipe = tracking.TrackerRecipe(dwi_model.pmf_source(fit, model, 4.0), tracking_kind, 30.0,
                                    ("fa", fa, 0.2, None, 1.0, 3.0))
    seed_mask = np.zeros(fa.shape, bool)
    seed_mask[8:12, 3:5, 3:5] = True
    one, two = (tracking.track(recipe, seed_mask, affine, 2, 1.0, 10.0, 250.0, seed=3, n_processes=n) for n in (1, 2))
    assert len(one) > 20 and len(one) == len(two)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
    lengths = np.array([np.ptp(s[:, 0]) for s in one])
    assert np.median(lengths) > 30  # they follow the fibre along x
