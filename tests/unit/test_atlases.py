import nibabel as nib
import numpy as np
import pytest

from conntool.atlases import (atlas_from_image, check_overlap, list_atlases, read_label_table, resolve_atlas)
from conntool.errors import ConntoolInputError


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


def test_shared_atlases_node_counts(shared_data):
    atlas_dir = shared_data / "atlases"
    expected = {"Schaefer400": 400, "Schaefer200": 200, "AAL": 116, "Desikan": 70, "Schaefer400Tian2": 432,
                "Yeo7": 7, "HarvardOxfordcort": 48, "HarvardOxfordsub": 21}
    for name, count in expected.items():
        atlas = resolve_atlas(name, atlas_dir)
        assert atlas.n_nodes == count, name
    assert resolve_atlas("Schaefer400Tian2", atlas_dir).space == "MNI152NLin2009cAsym"
    assert set(expected) <= set(list_atlases(atlas_dir))


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
