import numpy as np
import pytest
from dipy.tracking.streamline import Streamlines

from conntool.steps.dwi_model import sh_order_for
from conntool.steps.dwi_preproc import check_gradients, shells
from conntool.steps.tracking import structural_matrices


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
