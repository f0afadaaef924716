import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conntool.errors import ConntoolInputError
from conntool.outputs import bids_name, check_not_overwriting, read_tsv, write_tsv
from conntool.steps.resample import grid_world_coords, resample_series


def test_bids_name_orders_entities():
    name = bids_name({"meas": "PearsonCorrelation", "sub": "01", "seg": "Power264", "task": "rest",
                      "space": "MNI152NLin2009aSym", "desc": ""}, "relmat", ".tsv")
    assert name == "sub-01_task-rest_space-MNI152NLin2009aSym_seg-Power264_meas-PearsonCorrelation_relmat.tsv"


def test_tsv_writes_na_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "m.tsv"
    write_tsv(path, pd.DataFrame({"a": [1.0, np.nan], "b": [0.5, 2.0]}))
    assert path.read_text().splitlines() == ["a\tb", "1\t0.5", "n/a\t2"]
    assert np.isnan(read_tsv(path)["a"][1])
    assert os.listdir(tmp_path) == ["m.tsv"]


def test_failed_write_leaves_nothing(tmp_path):
    class Broken(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError):
        write_tsv(tmp_path / "m.tsv", Broken({"a": [1]}))
    assert os.listdir(tmp_path) == []


def test_refuses_to_overwrite(tmp_path):
    existing = tmp_path / "x.tsv"
    existing.write_text("")
    with pytest.raises(ConntoolInputError, match="--overwrite"):
        check_not_overwriting([existing], overwrite=False)
    check_not_overwriting([existing], overwrite=True)


def test_resample_series_identity_and_translation():
    rng = np.random.default_rng(0)
    series = rng.random((10, 10, 10, 3)).astype(np.float32)
    img = nib.Nifti1Image(series[..., 0], np.eye(4))
    coords = grid_world_coords(img)
    identity = np.repeat(np.eye(4)[None], 3, axis=0)
    out, in_fov = resample_series(series, np.eye(4), coords, identity)
    assert np.allclose(out, series, atol=1e-5) and in_fov.all()
    shift = identity.copy()
    shift[:, 0, 3] = 1.0  # every volume sampled one voxel further along x
    out, in_fov = resample_series(series, np.eye(4), coords, shift, order=1)
    assert np.allclose(out[:-1], series[1:], atol=1e-5)
    assert not in_fov[-1].any() and in_fov[:-1].all()
