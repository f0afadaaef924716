import nibabel as nib
import numpy as np
from nilearn.maskers import NiftiLabelsMasker

from conntool.steps.connectivity import connectivity_matrix, fisher_z
from conntool.steps.parcellate import parcel_coverage, parcel_timeseries


def _labels():
    labels = np.zeros((8, 8, 8), np.int32)
    labels[:4, :4] = 1
    labels[4:, :4] = 2
    labels[:4, 4:] = 5
    labels[4:, 4:, :2] = 9
    return labels


def test_coverage_counts_valid_voxels_per_parcel():
    labels = _labels()
    valid = np.ones(labels.shape, bool)
    valid[4:, 4:] = False       # parcel 9 entirely outside
    valid[:2, :4] = False       # half of parcel 1
    assert np.allclose(parcel_coverage(labels, (1, 2, 5, 9, 11), valid), [0.5, 1, 1, 0, 0])


def test_low_coverage_parcels_are_nan_not_dropped_and_match_nilearn():
    rng = np.random.default_rng(0)
    labels = _labels()
    img = nib.Nifti1Image(rng.normal(size=labels.shape + (50,)).astype(np.float32), np.eye(4))
    labels_img = nib.Nifti1Image(labels, np.eye(4))
    valid = np.ones(labels.shape, bool)
    valid[4:, 4:] = False
    valid[:3, :4] = False
    ids = (1, 2, 5, 9)
    series, coverage = parcel_timeseries(img, labels_img, ids, valid, min_coverage=0.5)
    assert series.shape == (50, 4)
    assert np.isnan(series[:, 0]).all() and np.isnan(series[:, 3]).all()  # 25 % and 0 % covered
    reference = NiftiLabelsMasker(labels_img, mask_img=nib.Nifti1Image(valid.astype(np.uint8), np.eye(4)),
                                  resampling_target=None).fit_transform(img)  # parcels 1, 2, 5 have data
    np.testing.assert_allclose(series[:, 1:3], reference[:, 1:3], rtol=1e-6, atol=1e-7)  # nilearn returns float32


def test_pearson_is_plain_correlation_with_nan_nodes():
    rng = np.random.default_rng(1)
    series = rng.normal(size=(100, 4))
    series[:, 2] = np.nan
    matrix = connectivity_matrix(series, "pearson")
    keep = [0, 1, 3]
    assert np.allclose(matrix[np.ix_(keep, keep)], np.corrcoef(series[:, keep].T), atol=1e-12)
    assert np.isnan(matrix[2]).all() and np.isnan(matrix[:, 2]).all()
    z = fisher_z(matrix)
    assert z[0, 0] == 0 and np.isnan(z[2, 2]) and np.isclose(z[0, 1], np.arctanh(matrix[0, 1]))


def _ledoit_wolf(series):
    """Ledoit & Wolf 2004 (their Lemma 3.2 and eq. 14) written out: the shrunk covariance."""
    x = series - series.mean(axis=0)
    n, p = x.shape
    sample = x.T @ x / n
    target = np.trace(sample) / p
    dispersion = np.sum((sample - target * np.eye(p)) ** 2) / p  # d^2
    spread = sum(np.sum((np.outer(row, row) - sample) ** 2) for row in x) / p / n ** 2  # b-bar^2
    weight = min(spread, dispersion) / dispersion
    return weight * target * np.eye(p) + (1 - weight) * sample


def test_covariance_precision_and_partial_correlation_match_their_definitions():
    rng = np.random.default_rng(2)
    mixing = rng.normal(size=(5, 5))
    series = rng.normal(size=(30, 5)) @ mixing  # correlated nodes, few samples: shrinkage about 0.2
    assert np.allclose(connectivity_matrix(series, "covariance"), np.cov(series.T, bias=True))
    precision = np.linalg.inv(_ledoit_wolf(series))
    assert np.allclose(connectivity_matrix(series, "precision"), precision)
    assert not np.allclose(precision, np.linalg.inv(np.cov(series.T, bias=True)), rtol=0.05)  # shrinkage matters
    d = np.sqrt(np.diag(precision))
    expected = -precision / np.outer(d, d)
    np.fill_diagonal(expected, 1)
    partial = connectivity_matrix(series, "partial")
    assert np.allclose(partial, expected)
    assert not np.allclose(partial, connectivity_matrix(series, "pearson"), atol=0.05)


def test_partial_correlation_symmetric_with_more_nodes_than_samples():
    series = np.random.default_rng(3).normal(size=(60, 100))  # rank-deficient sample covariance
    partial = connectivity_matrix(series, "partial")
    assert np.isfinite(partial).all() and np.allclose(partial, partial.T)
    assert np.abs(partial[np.triu_indices(100, 1)]).max() < 1
