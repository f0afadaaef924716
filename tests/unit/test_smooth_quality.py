import nibabel as nib
import numpy as np
from nilearn.image import smooth_img

from conntool.steps.quality import coregistration_nmi, normalized_mutual_information
from conntool.steps.smooth import smooth_in_mask

AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])


def _ball(shape=(24, 24, 24), radius=8):
    ijk = np.indices(shape) - (np.asarray(shape) // 2)[:, None, None, None]
    return (ijk ** 2).sum(axis=0) <= radius ** 2


def test_constant_brain_stays_constant_and_outside_does_not_leak_in():
    mask = _ball()
    data = np.where(mask, 100.0, 0.0).astype(np.float32)[..., None].repeat(3, axis=-1)
    out = smooth_in_mask(data, AFFINE, mask, 6.0)
    assert np.allclose(out[mask], 100.0, atol=1e-3)  # no darkening at the mask's edge
    whole_grid = np.asarray(smooth_img(nib.Nifti1Image(data, AFFINE), 6.0).dataobj)
    assert whole_grid[mask].min() < 80  # what smoothing over the whole grid does at the edge
    noisy_outside = data + np.where(mask, 0.0, 1000.0)[..., None].astype(np.float32)
    assert np.allclose(smooth_in_mask(noisy_outside, AFFINE, mask, 6.0)[mask], out[mask])
    assert np.array_equal(smooth_in_mask(noisy_outside, AFFINE, mask, 6.0)[~mask], noisy_outside[~mask])


def test_inside_a_large_mask_it_is_the_usual_gaussian():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(40, 40, 40)).astype(np.float32)
    mask = np.ones(data.shape, bool)
    ours = smooth_in_mask(data, AFFINE, mask, 8.0)
    reference = np.asarray(smooth_img(nib.Nifti1Image(data, AFFINE), 8.0).dataobj)
    inner = (slice(12, -12),) * 3  # more than 4 sigma (sigma = 8 / 2.355 / 3 voxels) from the edges
    assert np.allclose(ours[inner], reference[inner], atol=1e-5)
    assert ours[inner].std() < 0.5 * data[inner].std()


def test_zero_fwhm_is_the_identity():
    data = np.random.default_rng(1).normal(size=(5, 5, 5, 2)).astype(np.float32)
    assert np.array_equal(smooth_in_mask(data, AFFINE, np.ones((5, 5, 5), bool), 0.0), data)


def test_nmi_is_two_for_a_one_to_one_map_and_one_for_independent_samples():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200_000)
    assert np.isclose(normalized_mutual_information(a, -3 * a + 7), 2.0)
    assert abs(normalized_mutual_information(a, rng.normal(size=a.size)) - 1.0) < 0.01


def test_coregistration_nmi_peaks_at_the_true_alignment():
    rng = np.random.default_rng(0)
    t1w = np.where(_ball((30, 30, 30), 11), 1.0, 0.0) * (1 + np.indices((30, 30, 30))[0] / 10.0)
    t1w += np.where(t1w > 0, rng.normal(0, 0.05, t1w.shape), 0.0)
    t1w_img = nib.Nifti1Image(t1w.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    boldref = nib.Nifti1Image((5 - 2 * t1w).astype(np.float32), t1w_img.affine)  # same grid, inverted contrast
    aligned = coregistration_nmi(boldref, t1w_img, np.eye(4))
    shifted = np.eye(4)
    shifted[0, 3] = 6.0
    assert aligned > 1.5 and coregistration_nmi(boldref, t1w_img, shifted) < aligned - 0.2
