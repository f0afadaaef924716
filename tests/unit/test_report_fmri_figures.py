import gc
import struct
import xml.etree.ElementTree as ET

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from conntool.errors import ConntoolInputError
from conntool.outputs import write_tsv
from conntool.reports import fmri_figures as ff

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# LAS grid (x flipped), 4 mm: the figures must place slices from the affine, not from array axes
AFFINE = np.array([[-4.0, 0, 0, 46], [0, 4.0, 0, -60], [0, 0, 4.0, -40], [0, 0, 0, 1]])
SHAPE = (24, 28, 22)


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC
    return struct.unpack(">II", head[16:24])


def _ellipsoid(shape=SHAPE, scale=0.8):
    ijk = np.indices(shape, dtype=float)
    centre = (np.array(shape, float)[:, None, None, None] - 1) / 2
    return np.sqrt((((ijk - centre) / (centre * scale)) ** 2).sum(0))


def _head(tmp_path):
    """An anatomical-like image (WM 100 inside GM 50, zero background) and its masks."""
    r = _ellipsoid()
    anat = np.where(r < 0.5, 100.0, np.where(r < 1, 50.0, 0.0))
    paths = {}
    for name, data in {"anat": anat, "brain": r < 1, "wm": r < 0.5, "csf": (r > 0.85) & (r < 1)}.items():
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), paths[name])
    return paths


def _confounds(tmp_path, fd):
    n = len(fd)
    rng = np.random.default_rng(0)
    table = pd.DataFrame({c: rng.normal(0, 0.2 if c.startswith("trans") else 0.004, n)
                          for c in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")})
    table["framewise_displacement"] = fd
    table["std_dvars"] = 1.0
    return write_tsv(tmp_path / "confounds.tsv", table)


def test_plot_motion_writes_svg(tmp_path):
    fd = np.r_[np.nan, np.full(59, 0.1)]
    fd[[20, 21, 40]] = 0.9
    out = ff.plot_motion(_confounds(tmp_path, fd), tmp_path / "motion.svg", fd_threshold_mm=0.5,
                         censored=[0, 1, 2, 20, 21, 40], n_dummy=3)
    assert out == tmp_path / "motion.svg"
    assert ET.parse(out).getroot().tag == "{http://www.w3.org/2000/svg}svg"


def test_plot_motion_names_missing_columns(tmp_path):
    path = write_tsv(tmp_path / "c.tsv", pd.DataFrame({"trans_x": [0.0], "framewise_displacement": [0.0]}))
    with pytest.raises(ConntoolInputError, match="rot_x"):
        ff.plot_motion(path, tmp_path / "m.svg")


def test_runs_of_volumes():
    assert ff._runs([8, 0, 1, 2, 5, 7]) == [(-0.5, 3), (4.5, 1), (6.5, 2)]
    assert ff._runs([]) == []


def test_carpet_rows_subsample_and_keep_small_tissues_visible():
    grid = np.zeros((40, 40, 40), bool)
    gm, wm, csf = grid.copy(), grid.copy(), grid.copy()
    gm[:30] = True            # 48,000 voxels
    wm[30:39] = True          # 14,400
    csf[39, :5, :5] = True    # 25
    rows, group = ff.carpet_rows({"GM": gm, "WM": wm, "CSF": csf}, max_rows=1000)
    counts = np.bincount(group)
    assert counts[2] == 25                              # fewer voxels than its share: all of them
    assert counts.sum() <= 1000 + 3
    assert counts[0] > counts[1] > 100
    assert np.all(np.diff(group) >= 0)                  # tissues in the given order
    assert gm.ravel()[rows[group == 0]].all() and csf.ravel()[rows[group == 2]].all()
    small, _ = ff.carpet_rows({"brain": csf}, max_rows=1000)
    assert np.array_equal(small, np.flatnonzero(csf))


def test_voxel_series_streams_chunks_of_a_gzipped_series(tmp_path, monkeypatch):
    data = np.random.default_rng(0).normal(size=(5, 6, 7, 23)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, AFFINE), tmp_path / "bold.nii.gz")
    monkeypatch.setattr(ff, "READ_CHUNK_BYTES", 5 * 6 * 7 * 8 * 4)   # 4 volumes per read: 6 reads
    flat = np.array([0, 17, 100, 209])
    series = ff._voxel_series(tmp_path / "bold.nii.gz", flat)
    assert np.array_equal(series, data.reshape(-1, 23)[flat])


def test_zscore_uses_kept_volumes_only():
    series = np.array([[1.0, 3.0, 1.0, 3.0, 100.0, np.nan]])
    censored = np.array([False, False, False, False, True, False])
    z = ff._zscore(series, censored)
    assert np.allclose(z[0, :4], [-1, 1, -1, 1])
    assert z[0, 4] == pytest.approx(98.0)           # (100 - mean 2) / SD 1
    assert np.isnan(z[0, 5])


def _bold_pair(tmp_path, n_volumes=30, kept=None):
    rng = np.random.default_rng(1)
    brain = _ellipsoid() < 1
    pre = (rng.normal(0, 5, SHAPE + (n_volumes,)) + 500 * brain[..., None]).astype(np.float32)
    kept = np.arange(n_volumes) if kept is None else np.asarray(kept)
    post = np.where(brain[..., None], pre[..., kept] - 500, 0).astype(np.float32)
    nib.save(nib.Nifti1Image(pre, AFFINE), tmp_path / "pre.nii.gz")
    nib.save(nib.Nifti1Image(post, AFFINE), tmp_path / "post.nii.gz")
    return tmp_path / "pre.nii.gz", tmp_path / "post.nii.gz"


def test_plot_carpet_with_dropped_volumes(tmp_path):
    masks = _head(tmp_path)
    kept = [v for v in range(30) if v not in (0, 1, 12, 13)]
    pre, post = _bold_pair(tmp_path, kept=kept)
    out = ff.plot_carpet(pre, post, masks["brain"], tmp_path / "carpet.png", wm_mask=masks["wm"],
                         csf_mask=masks["csf"], censored=[0, 1, 12, 13], volumes_of_input=kept)
    width, height = _png_size(out)
    assert 1000 <= width <= 1400 and height < width


def test_plot_carpet_checks_volumes_and_grid(tmp_path):
    masks = _head(tmp_path)
    pre, post = _bold_pair(tmp_path, kept=range(25))
    with pytest.raises(ConntoolInputError, match="volumes_of_input"):
        ff.plot_carpet(pre, post, masks["brain"], tmp_path / "c.png")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), AFFINE), tmp_path / "small.nii.gz")
    with pytest.raises(ConntoolInputError, match="WM mask"):
        ff.plot_carpet(pre, post, masks["brain"], tmp_path / "c.png", wm_mask=tmp_path / "small.nii.gz",
                       volumes_of_input=range(25))


def test_tissue_levels_separate_background_and_tissues(tmp_path):
    outline, inner = ff.tissue_levels(_head(tmp_path)["anat"])
    assert 0 <= outline < 50 <= inner < 100


def test_spread_cuts_in_world_coordinates():
    inside = np.zeros(SHAPE, bool)
    inside[2:12, 5:25, 10:20] = True
    cuts = ff.spread_cuts(inside, AFFINE, 5)
    x_world = 46 - 4.0 * np.arange(2, 12)       # x is flipped in AFFINE
    assert x_world.min() <= cuts["x"].min() < cuts["x"].max() <= x_world.max()
    assert np.allclose(np.diff(cuts["z"]), np.diff(cuts["z"])[0])
    assert -40 + 4 * 10 <= cuts["z"].min() and cuts["z"].max() <= -40 + 4 * 19
    assert all(len(c) == 5 for c in cuts.values())


def test_plot_registration_and_tissue_masks(tmp_path):
    paths = _head(tmp_path)
    moved = AFFINE.copy()
    moved[0, 3] += 8.0                                  # a misregistered background, 8 mm along x
    background = nib.Nifti1Image(nib.load(paths["anat"]).get_fdata(), moved)
    reg = ff.plot_registration(background, paths["anat"], tmp_path / "reg.png", title="T1w -> template", cuts=4)
    assert 1000 <= _png_size(reg)[0] <= 1400
    bold = nib.Nifti1Image(np.repeat(nib.load(paths["anat"]).get_fdata()[..., None], 3, -1), AFFINE)
    masks = ff.plot_tissue_masks(bold, tmp_path / "masks.png",
                                 {"brain": paths["brain"], "WM": paths["wm"], "CSF": paths["csf"]})
    assert 1000 <= _png_size(masks)[0] <= 1400


def _coverage_tsv(tmp_path, column="node", included=(True, True, False)):
    table = pd.DataFrame({column: ["a", "b", "c"], "index": [1, 2, 5], "coverage": [1.0, 0.6, 0.2],
                          "included": list(included)})
    return write_tsv(tmp_path / f"coverage_{column}.tsv", table)


def _atlas(tmp_path):
    """Labels 1, 2, 5 in three slabs, on a 2 mm RAS grid unlike the background's 4 mm LAS one."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-46, -60, -40]
    labels = np.zeros((47, 56, 44), np.int16)
    labels[5:15, 10:40, 10:30] = 1
    labels[20:30, 10:40, 10:30] = 2
    labels[32:42, 10:40, 10:30] = 5
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "atlas.nii.gz")
    return tmp_path / "atlas.nii.gz", labels, affine


def test_excluded_nodes_reads_node_or_name_and_bool_or_int(tmp_path):
    assert ff.excluded_nodes(_coverage_tsv(tmp_path)) == [("c", 0.2)]
    assert ff.excluded_nodes(_coverage_tsv(tmp_path, "name", (1, 0, 0))) == [("b", 0.6), ("c", 0.2)]


def test_coverage_maps_paint_parcels_on_the_reference_grid(tmp_path):
    atlas, labels, affine = _atlas(tmp_path)
    reference = nib.load(_head(tmp_path)["anat"])
    coverage, excluded = ff.coverage_maps(atlas, _coverage_tsv(tmp_path), reference)
    assert coverage.shape == SHAPE and np.allclose(coverage.affine, AFFINE)
    world = np.array([[-46 + 2 * 9, -60 + 2 * 25, -40 + 2 * 20],    # centre of each slab
                      [-46 + 2 * 25, -60 + 2 * 25, -40 + 2 * 20],
                      [-46 + 2 * 37, -60 + 2 * 25, -40 + 2 * 20]], float)
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(AFFINE), world)).astype(int).T
    assert np.allclose(coverage.get_fdata()[tuple(ijk)], [1.0, 0.6, 0.0])
    assert np.allclose(excluded.get_fdata()[tuple(ijk)], [0, 0, 1])
    assert set(np.unique(coverage.get_fdata())) == {0.0, 0.6, 1.0}


def test_plot_coverage(tmp_path):
    atlas, _, _ = _atlas(tmp_path)
    out = ff.plot_coverage(atlas, _coverage_tsv(tmp_path), tmp_path / "coverage.png",
                           background=_head(tmp_path)["anat"])
    assert 1000 <= _png_size(out)[0] <= 1400


def test_node_networks_from_names():
    assert ff.node_networks(["17Networks_LH_VisCent_ExStr_1", "7Networks_RH_Default_PFCv_2", "LH_Vis_1",
                             "RH_SomMot_12"]) == ["VisCent", "Default", "Vis", "SomMot"]
    assert ff.node_networks(["net1_parcel3", "net2_parcel1", "net1_parcel4"]) == ["net1", "net2", "net1"]
    assert ff.node_networks(["aHIP-rh", "7Networks_LH_Vis_1"]) == ["other", "Vis"]
    assert ff.node_networks(["sim_parcel_001", "sim_parcel_002"]) is None
    assert ff.node_networks(["L_Precentral_gyrus", "Right_Cerebral_Cortex", "Power_1"]) is None


def test_network_order_and_limits():
    networks = ["Vis", "Default", "Vis", "SomMot", "Default"]
    assert ff.network_order(networks).tolist() == [0, 2, 1, 4, 3]
    assert ff.symmetric_limit(np.array([[1.0, -0.3], [np.nan, 0.2]])) == 1.0
    assert ff.symmetric_limit(np.array([[np.inf, -1.7], [0.4, 0.0]])) == 1.7
    assert ff.symmetric_limit(np.full((2, 2), np.nan)) == 1.0


@pytest.mark.parametrize("names", [
    [f"7Networks_{h}_{n}_{i}" for h in ("LH", "RH") for n in ("Vis", "SomMot", "Default") for i in (1, 2, 3)],
    [f"sim_parcel_{i:03d}" for i in range(1, 19)],
])
def test_plot_fc_matrix(tmp_path, names):
    rng = np.random.default_rng(0)
    matrix = np.corrcoef(rng.normal(size=(len(names), 40)))
    matrix[3] = matrix[:, 3] = np.nan
    path = write_tsv(tmp_path / "relmat.tsv", pd.DataFrame(matrix, columns=names))
    assert "n/a" in path.read_text()
    assert 1000 <= _png_size(ff.plot_fc_matrix(path, tmp_path / "figures" / "fc.png"))[0] <= 1400
    with pytest.raises(ConntoolInputError, match="square"):
        ff.plot_fc_matrix(path, tmp_path / "fc.png", names=names[:-1])


def test_no_figure_left_open(tmp_path):
    path = write_tsv(tmp_path / "relmat.tsv", pd.DataFrame(np.eye(4), columns=list("abcd")))
    paths = _head(tmp_path)
    for i in range(2):
        ff.plot_fc_matrix(path, tmp_path / f"fc{i}.png")
        ff.plot_tissue_masks(paths["anat"], tmp_path / f"m{i}.png", {"brain": paths["brain"]})
    gc.collect()
    assert plt.get_fignums() == []
    assert not [o for o in gc.get_objects() if isinstance(o, Figure)]
