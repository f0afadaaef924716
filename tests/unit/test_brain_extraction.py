"""T1w brain extraction on the real volunteer (whole head, neck included)."""
from __future__ import annotations

import nibabel as nib
import numpy as np

from conntool.steps.brain_extraction import brain_mask


def test_real_t1w_brain_mask_excludes_scalp_and_neck(shared_data):
    t1w = nib.load(shared_data / "bids-xa30" / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    mask = brain_mask(t1w)
    volume_ml = mask.sum() * np.prod(t1w.header.get_zooms()[:3]) / 1000
    assert 1000 < volume_ml < 1900, volume_ml  # an adult brain, not a head
    head = np.asarray(t1w.dataobj) > 0.1 * np.percentile(np.asarray(t1w.dataobj), 99)
    assert mask.sum() < 0.5 * head.sum()
    assert not mask[:, :, :20].any()  # the lowest 4 cm of the field of view are neck
    assert np.array_equal(mask, brain_mask(t1w))  # deterministic
