import numpy as np

from conntool.steps.masks import tissue_masks


def _priors(shape=(30, 30, 30)):
    wm, csf = np.zeros(shape), np.zeros(shape)
    wm[2:12, 2:12, 2:12] = 0.95  # 1000 voxels above the threshold
    wm[2:12, 2:12, 12] = 0.85  # a face below it
    csf[15:22, 15:22, 15:22] = 0.95  # 343 voxels
    return {"brain": np.ones(shape), "wm": wm, "csf": csf}


def test_large_masks_are_eroded_small_ones_kept_whole():
    found = tissue_masks(_priors(), np.ones((30, 30, 30), bool), threshold=0.9, erode_voxels=1,
                         min_voxels_to_erode=500)
    expected_wm = np.zeros((30, 30, 30), bool)
    expected_wm[3:11, 3:11, 3:11] = True  # the 10-voxel cube less one layer
    assert np.array_equal(found["wm"], expected_wm)
    assert found["csf"].sum() == 343
    assert set(found) == {"brain", "wm", "csf"}


def test_mask_rules_follow_their_settings():
    priors = _priors()
    fov = np.ones((30, 30, 30), bool)
    fov[:, :, 6:] = False
    found = tissue_masks(priors, fov, threshold=0.8, erode_voxels=0, min_voxels_to_erode=0)
    assert found["wm"].sum() == 10 * 10 * 4  # the 0.85 face counts at 0.8, nothing eroded, cut to the FOV
    assert found["csf"].sum() == 0 and found["brain"].sum() == 30 * 30 * 6
    eroded_twice = tissue_masks(priors, np.ones((30, 30, 30), bool), 0.9, 2, 300)
    assert eroded_twice["wm"].sum() == 6 ** 3 and eroded_twice["csf"].sum() == 3 ** 3
