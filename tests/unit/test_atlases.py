import logging

import nibabel as nib
import numpy as np
import pytest

from conntool.atlases import (alignment_map, atlas_from_image, check_overlap, list_atlases, read_label_table,
                              report_alignment, resolve_atlas, space_mismatch)
from conntool.templates import NILEARN_SPACE
from conntool.errors import ConntoolInputError
from conntool.steps.parcellate import parcel_timeseries


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2, 2, 1]) if affine is None else affine), path)
    return path


def _write_tsv(path, ids):
    path.write_text("index\tname\n" + "".join(f"{i}\tregion_{i}\n" for i in ids))
    return path


def test_three_label_table_formats(tmp_path):
    tsv = tmp_path / "atlas-A_dseg.tsv"
    tsv.write_text("index\tname\tcolor\n1\tleft\t#fff\n2\tright\t#000\n")
    csv = tmp_path / "atlas-B_labels.csv"
    csv.write_text("0,null,,\n2,b2,,\n1,b1,,\n")
    txt = tmp_path / "atlas-C_labels.txt"
    txt.write_text("aHIP-rh\n1 144 246 45 255\npHIP-rh\n2 34 165 59 255\n")
    assert read_label_table(tsv) == ((1, 2), ("left", "right"))
    assert read_label_table(csv) == ((1, 2), ("b1", "b2"))  # background dropped, index order
    assert read_label_table(txt) == ((1, 2), ("aHIP-rh", "pHIP-rh"))


def test_shared_atlases_node_counts(shared_data, caplog):
    atlas_dir = shared_data / "atlases"
    # AAL's table lists Vermis_7..10 (117-120), which its image does not draw: they stay nodes (120, not 116)
    expected = {"Schaefer400": 400, "Schaefer200": 200, "AAL": 120, "Desikan": 70, "Schaefer400Tian2": 432,
                "Yeo7": 7, "HarvardOxfordcort": 48, "HarvardOxfordsub": 21}
    vermis = ("Vermis_7", "Vermis_8", "Vermis_9", "Vermis_10")
    for name, count in expected.items():
        atlas = resolve_atlas(name, atlas_dir)
        assert atlas.n_nodes == count, name
        assert atlas.labels_not_in_image == (vermis if name == "AAL" else ()), name
    aal = resolve_atlas("AAL", atlas_dir)
    assert aal.label_ids == tuple(range(1, 121)) and aal.label_names[-4:] == vermis
    assert [r.getMessage() for r in caplog.records if r.name == "conntool"][-1].endswith(", ".join(vermis))
    assert resolve_atlas("Schaefer400Tian2", atlas_dir).space == "MNI152NLin2009cAsym"
    assert set(expected) <= set(list_atlases(atlas_dir))


def test_table_missing_half_the_image_labels_is_refused(tmp_path):
    image = _save(tmp_path / "atlas-Half_dseg.nii.gz", np.arange(1, 201, dtype=np.int16).reshape(10, 10, 2))
    table = _write_tsv(tmp_path / "atlas-Half_dseg.tsv", range(1, 101))
    with pytest.raises(ConntoolInputError) as err:
        atlas_from_image(image)
    message = str(err.value)
    assert message.startswith(f"{table}: ") and "\n" not in message
    assert "100 of the 200 labels" in message and "(101, 102, 103, 104, 105, ...)" in message


def test_table_labels_absent_from_image_stay_nodes(tmp_path, caplog):
    data = np.zeros((6, 6, 6), np.int16)
    data[:3] = 1
    data[3:] = 3
    image = _save(tmp_path / "atlas-Extra_dseg.nii.gz", data)
    table = _write_tsv(tmp_path / "atlas-Extra_dseg.tsv", [1, 2, 3, 4])
    with caplog.at_level(logging.WARNING, logger="conntool"):
        atlas = atlas_from_image(image)
    assert atlas.label_ids == (1, 2, 3, 4) and atlas.n_nodes == 4
    assert atlas.labels_not_in_image == ("region_2", "region_4")
    (record,) = [r for r in caplog.records if r.name == "conntool"]
    assert record.levelno == logging.WARNING
    assert str(table) in record.getMessage() and record.getMessage().endswith("region_2, region_4")
    # downstream the absent nodes are n/a columns with coverage 0, not dropped
    bold = nib.Nifti1Image(np.random.default_rng(0).random((6, 6, 6, 5)), np.diag([2.0, 2, 2, 1]))
    series, coverage = parcel_timeseries(bold, atlas.labels_on_grid(bold), atlas.label_ids,
                                         np.ones((6, 6, 6), bool), min_coverage=0.5)
    assert coverage.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert np.isnan(series).all(axis=0).tolist() == [False, True, False, True]


def test_table_listing_a_label_twice_is_refused(tmp_path):
    table = tmp_path / "atlas-Twice_labels.csv"
    table.write_text("1,a\n2,b\n2,c\n")
    with pytest.raises(ConntoolInputError, match="lists label 2 more than once"):
        read_label_table(table)


def test_integer_valued_float_image_is_accepted(tmp_path):
    data = np.zeros((6, 6, 6), np.float32)
    data[:2] = 5.0
    data[4:] = 2.0
    atlas = atlas_from_image(_save(tmp_path / "atlas-Float_dseg.nii.gz", data))
    assert atlas.label_ids == (2, 5) and atlas.label_names == ("Float_2", "Float_5")
    assert atlas.labels_on_grid(nib.Nifti1Image(np.zeros((6, 6, 6)), np.diag([2.0, 2, 2, 1]))).get_data_dtype() \
        == np.int32


_PROBABILITIES = np.random.default_rng(0).random((6, 6, 6)).astype(np.float32)


@pytest.mark.parametrize("data,problem", [
    (np.where(_PROBABILITIES > 0.5, 0.7, 0.3).astype(np.float32),
     "non-integer values (e.g. 0.3): a probabilistic atlas? conntool reads label (dseg) images only"),
    (np.stack([_PROBABILITIES, 1 - _PROBABILITIES], axis=-1), "not 3D (a 4D image is usually a probabilistic atlas"),
    (np.where(_PROBABILITIES > 0.5, -1, 2).astype(np.int16), "negative labels (-1)"),
    (np.where(_PROBABILITIES > 0.5, np.nan, 1).astype(np.float32), "NaN or infinite values"),
    (np.zeros((6, 6, 6), np.int16), "holds no label"),
], ids=["probabilistic-3d", "4d", "negative", "nan", "empty"])
def test_images_that_are_not_label_images_are_refused(tmp_path, data, problem):
    image = _save(tmp_path / "atlas-Bad_dseg.nii.gz", data)
    _write_tsv(tmp_path / "atlas-Bad_dseg.tsv", [1, 2])
    with pytest.raises(ConntoolInputError) as err:
        resolve_atlas("Bad", tmp_path)
    message = str(err.value)
    assert message.startswith(f"{image}: atlas image ") and problem in message and "\n" not in message


@pytest.mark.parametrize("name,count", [("Power264", 264), ("Dosenbach160", 160), ("Seitzman300", 300)])
def test_builtin_sphere_atlases(name, count):
    atlas = resolve_atlas(name)
    assert atlas.n_nodes == count
    grid = nib.Nifti1Image(np.zeros((65, 77, 65), np.uint8), np.array(
        [[3.0, 0, 0, -96], [0, 3, 0, -132], [0, 0, 3, -78], [0, 0, 0, 1]]))
    labels = np.asarray(atlas.labels_on_grid(grid).dataobj)
    present = np.unique(labels[labels > 0])
    assert len(present) >= 0.95 * count  # a few overlapping spheres may lose all voxels to neighbours


def test_label_image_resampled_nearest_and_unknown_atlas(tmp_path):
    data = np.zeros((10, 10, 10), np.int16)
    data[2:5, 2:5, 2:5] = 3
    data[6:9, 6:9, 6:9] = 7
    path = tmp_path / "atlas-Toy_space-Foo_dseg.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2, 2, 1])), path)
    atlas = atlas_from_image(path)
    assert atlas.label_ids == (3, 7) and atlas.space == "Foo"
    target = nib.Nifti1Image(np.zeros((20, 20, 20)), np.eye(4))
    assert set(np.unique(atlas.labels_on_grid(target).dataobj)) == {0, 3, 7}
    with pytest.raises(ConntoolInputError, match="not a built-in atlas"):
        resolve_atlas("Nope", tmp_path)


def test_atlas_outside_the_brain_is_refused(tmp_path):
    data = np.ones((5, 5, 5), np.int16)
    affine = np.diag([2.0, 2, 2, 1])
    affine[:3, 3] = 500  # far outside the template
    path = tmp_path / "atlas-Far_dseg.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    with pytest.raises(ConntoolInputError, match="no overlap"):
        check_overlap(atlas_from_image(path))


def test_an_atlas_of_another_template_is_flagged_and_warned_about(shared_data, caplog, monkeypatch):
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    schaefer = resolve_atlas("Schaefer200", shared_data / "atlases")  # space-MNI152NLin6Asym in its file name
    assert space_mismatch(schaefer, NILEARN_SPACE) is True
    assert space_mismatch(schaefer, "MNI152NLin6Asym") is False  # e.g. fMRIPrep derivatives in that space
    assert space_mismatch(resolve_atlas("Power264"), NILEARN_SPACE) is None  # coordinates in unnamed "MNI152"
    assert alignment_map(schaefer, NILEARN_SPACE) == ""  # MNI152NLin6Asym is not at hand: used as it is
    with caplog.at_level(logging.WARNING, logger="conntool"):
        report_alignment(schaefer, NILEARN_SPACE)
        report_alignment(resolve_atlas("Power264"), NILEARN_SPACE)
    (record,) = [r for r in caplog.records if r.name == "conntool"]
    assert "Schaefer200 is drawn in MNI152NLin6Asym" in record.getMessage() and "\n" not in record.getMessage()
