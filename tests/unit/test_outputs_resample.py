import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation

from conntool.errors import ConntoolInputError
from conntool.outputs import bids_name, check_not_overwriting, read_tsv, write_tsv
from conntool.steps.registration import resample_coordmap
from conntool.steps.resample import apply_affine_to_coords, grid_world_coords, resample_series


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


def _grid(shape, voxel_mm, origin):
    affine = np.diag([voxel_mm] * 3 + [1.0])
    affine[:3, 3] = origin
    return nib.Nifti1Image(np.zeros(shape, np.uint8), affine)


def test_coordmap_regridding_reproduces_an_affine_map_and_keeps_its_nans():
    rotation = Rotation.from_euler("xyz", [0.1, -0.2, 0.05]).as_matrix() * 1.1
    shift = np.array([3.0, -2.5, 1.25])
    coarse = _grid((14, 13, 12), 3.0, (-20.0, -19.0, -17.0))  # coordinate map's own grid
    values = apply_affine_to_coords(np.vstack([np.c_[rotation, shift], [0, 0, 0, 1]]), grid_world_coords(coarse))
    values[10:] = np.nan  # the map's source does not reach there
    coordmap = nib.Nifti1Image(values.astype(np.float64), coarse.affine)
    target = _grid((16, 15, 13), 2.0, (-15.0, -14.0, -12.0))
    out = resample_coordmap(coordmap, target)
    world = grid_world_coords(target)
    expected = world @ rotation.T + shift
    ijk_x = (world[..., 0] - coarse.affine[0, 3]) / 3.0  # x index on the map's grid
    finite = np.isfinite(out).all(axis=-1)
    assert np.allclose(out[finite], expected[finite], atol=1e-9)
    assert finite[ijk_x <= 9].all() and not finite[ijk_x > 9].any()


def test_series_through_a_coordinate_map_equals_the_shifted_series():
    rng = np.random.default_rng(0)
    source = _grid((12, 12, 10), 2.0, (-12.0, -12.0, -10.0))
    series = rng.random(source.shape + (2,)).astype(np.float32)
    shift_voxels = np.array([1, -2, 0])
    # template → subject coordinate map: a translation of whole source voxels, made on a coarser grid
    coarse = _grid((12, 12, 10), 3.0, (-18.0, -18.0, -15.0))
    coordmap = nib.Nifti1Image(grid_world_coords(coarse) + 2.0 * shift_voxels, coarse.affine)
    coords = resample_coordmap(coordmap, source)
    identity = np.repeat(np.eye(4)[None], 2, axis=0)
    out, in_fov = resample_series(series, source.affine, coords, identity, order=3)
    expected = np.zeros_like(series)
    expected[:-1, 2:] = series[1:, :-2]  # out[i, j, k] = series[i + 1, j - 2, k]
    expected_fov = np.zeros(source.shape, bool)
    expected_fov[:-1, 2:] = True
    assert np.array_equal(in_fov, expected_fov)
    assert np.allclose(out, expected, atol=1e-5)
