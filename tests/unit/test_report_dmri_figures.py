"""dMRI QC figures of the report, on small synthetic files like those conntool writes."""
import xml.etree.ElementTree as ET

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from dipy.io.stateful_tractogram import Space, StatefulTractogram
from dipy.io.streamline import save_tractogram
from PIL import Image

from conntool.reports import dmri_figures as figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: voxel → world of the synthetic images: 2 mm, axes permuted and flipped (LPI-like), off-centre
AFFINE = np.array([[0.0, -2.0, 0.0, 30.0], [-2.0, 0.0, 0.0, 40.0], [0.0, 0.0, -2.0, 20.0], [0.0, 0.0, 0.0, 1.0]])
SHAPE = (24, 20, 16)
BVALS = np.array([0, 1000, 1005, 995, 5, 2000, 1990, 2010, 2000, 0])


def _brain() -> np.ndarray:
    """An ellipsoid filling most of ``SHAPE`` (bool)."""
    grid = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) - 1) / 2
    return sum(((g - c) / (c - 1.5)) ** 2 for g, c in zip(grid, centre)) <= 1


def _assert_png(path, min_width=1000, max_width=1400):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        width, height = image.size
    assert min_width <= width <= max_width and height > 0
    return width, height


def _svg_texts(path) -> str:
    """The SVG parses as XML with an ``svg`` root; its text (matplotlib writes each text as a
    comment beside the glyphs) is returned."""
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg") and float(root.get("width").rstrip("pt")) > 0
    return path.read_text()


@pytest.fixture
def dwi_files(tmp_path):
    brain = _brain()
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 5, SHAPE + (len(BVALS),)).astype(np.float32)
    data[brain] += np.where(BVALS <= 50, 100.0, 30.0)
    dwi = tmp_path / "sub-01_space-dwi_desc-preproc_dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), dwi)
    bval = tmp_path / "sub-01_space-dwi_desc-preproc_dwi.bval"
    bvec = tmp_path / "sub-01_space-dwi_desc-preproc_dwi.bvec"
    vectors = rng.normal(size=(len(BVALS), 3))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[BVALS <= 50] = 0
    np.savetxt(bval, BVALS[None], fmt="%g")
    np.savetxt(bvec, vectors.T, fmt="%.6f")
    mask = tmp_path / "sub-01_space-dwi_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), AFFINE), mask)
    fa = tmp_path / "sub-01_space-dwi_model-tensor_desc-FA_dwimap.nii.gz"
    nib.save(nib.Nifti1Image(np.where(brain, rng.uniform(0.1, 0.9, SHAPE), 0).astype(np.float32), AFFINE), fa)
    return {"dwi": dwi, "bval": bval, "bvec": bvec, "mask": mask, "fa": fa}


def _lines(lengths_mm):
    """Straight streamlines along world y (anterior), 1 mm steps, of the given lengths (< 44),
    inside the field of view of ``AFFINE`` and ``SHAPE``."""
    return [np.column_stack([np.full(n + 1, 5.0 + i % 7), np.arange(n + 1) - 4.0, np.full(n + 1, 5.0)])
            for i, n in enumerate(lengths_mm)]


@pytest.fixture
def tractogram(tmp_path, dwi_files):
    path = tmp_path / "sub-01_space-dwi_model-csd_desc-probabilistic_tractography.trx"
    reference = nib.load(dwi_files["fa"])
    save_tractogram(StatefulTractogram(_lines(range(10, 40)), reference, Space.RASMM), str(path),
                    bbox_valid_check=False)
    return path


def test_shells_round_b_values_and_count_b0s():
    assert figures.shells(BVALS) == {0: 3, 1000: 3, 2000: 4}
    # b ≤ 50 is b=0; a weighted volume never rounds down to 0
    assert figures.shells([0, 50, 60, 1240, 3100], tolerance=500) == {0: 2, 500: 1, 1000: 1, 3000: 1}
    assert figures.shell_of([5, 60, 995, 1049, 1051]).tolist() == [0, 100, 1000, 1000, 1100]


def test_mean_b0_averages_only_the_b0_volumes(dwi_files):
    b0 = figures.mean_b0(dwi_files["dwi"], BVALS)
    data = nib.load(dwi_files["dwi"]).get_fdata()
    assert b0.shape == SHAPE
    np.testing.assert_allclose(b0.affine, AFFINE)
    np.testing.assert_allclose(b0.get_fdata(), data[..., BVALS <= 50].mean(axis=-1), rtol=1e-5)
    with pytest.raises(ValueError, match="no b=0 volume"):
        figures.mean_b0(dwi_files["dwi"], np.full(len(BVALS), 1000.0))


def test_cuts_are_world_coordinates_inside_the_mask(dwi_files):
    brain = _brain()
    world = nib.affines.apply_affine(AFFINE, np.argwhere(brain))
    cuts = figures._cut_coords(nib.load(dwi_files["mask"]), brain, 5)
    for axis, mode in enumerate(figures.SLICE_MODES):
        assert len(cuts[mode]) == 5 and np.all(np.diff(cuts[mode]) > 0)
        assert world[:, axis].min() <= cuts[mode][0] and cuts[mode][-1] <= world[:, axis].max()
    empty = figures._cut_coords(nib.load(dwi_files["mask"]), np.zeros(SHAPE, bool), 5)
    assert all(np.isfinite(c).all() for c in empty.values())


def test_slice_figures_are_pngs_and_leave_no_figure_open(dwi_files, tmp_path):
    b0 = figures.plot_b0_mask(dwi_files["dwi"], dwi_files["bval"], dwi_files["mask"], tmp_path / "qc" / "b0.png")
    fa = figures.plot_fa(dwi_files["fa"], tmp_path / "fa.png", mask=dwi_files["mask"])
    fa_unmasked = figures.plot_fa(dwi_files["fa"], tmp_path / "fa_unmasked.png")
    for path in (b0, fa, fa_unmasked):
        width, height = _assert_png(path)
        assert height < width
    assert plt.get_fignums() == []


def test_gradient_table_svg_lists_each_shell(dwi_files, tmp_path):
    path = figures.plot_gradient_table(dwi_files["bval"], dwi_files["bvec"], tmp_path / "gradients.svg")
    text = _svg_texts(path)
    assert "b = 1000 s/mm²: 3 directions" in text and "b = 2000 s/mm²: 4 directions" in text
    assert "b=0 volumes: 3" in text
    assert path.stat().st_size < 300_000


def test_subsample_is_reproducible_and_bounded():
    chosen = figures.subsample(10_000, 2000, seed=3)
    assert len(chosen) == 2000 and len(np.unique(chosen)) == 2000 and np.all(np.diff(chosen) > 0)
    assert chosen.min() >= 0 and chosen.max() < 10_000
    np.testing.assert_array_equal(chosen, figures.subsample(10_000, 2000, seed=3))
    assert not np.array_equal(chosen, figures.subsample(10_000, 2000, seed=4))
    np.testing.assert_array_equal(figures.subsample(50, 2000), np.arange(50))


def test_direction_segments_colour_by_direction():
    from nibabel.streamlines import ArraySequence

    along_x = np.column_stack([np.arange(4.0), np.zeros(4), np.zeros(4)])
    diagonal = np.array([[0.0, 0, 0], [0, -1, 1]])
    segments, colours = figures.direction_segments(ArraySequence([along_x, diagonal]))
    assert segments.shape == (4, 2, 3) and colours.shape == (4, 3)
    np.testing.assert_allclose(segments[0], along_x[:2])
    np.testing.assert_allclose(colours[:3], [[1, 0, 0]] * 3)
    np.testing.assert_allclose(colours[3], [0, np.sqrt(0.5), np.sqrt(0.5)])


def test_tractogram_png(tractogram, dwi_files, tmp_path):
    path = figures.plot_tractogram(tractogram, dwi_files["fa"], tmp_path / "tracts.png", max_streamlines=10)
    _assert_png(path)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), float)
    red, green = pixels[..., 0], pixels[..., 1]
    assert (green - red > 100).any() and not (red - green > 100).any()  # lines along y: green, never red
    assert plt.get_fignums() == []


def test_length_summary_and_histogram(tractogram, tmp_path):
    summary = figures.streamline_length_summary(tractogram)
    assert summary["count"] == 30
    assert summary["median_mm"] == pytest.approx(24.5) and summary["mean_mm"] == pytest.approx(24.5)
    lengths = figures.streamline_lengths(tractogram)
    np.testing.assert_allclose(np.sort(lengths), np.arange(10, 40))
    counts, edges = figures.length_histogram(lengths, bin_mm=5.0)
    assert counts.sum() == 30 and edges[0] == 0 and edges[-1] >= lengths.max()
    np.testing.assert_allclose(np.diff(edges), 5.0)
    assert counts[2] == 5  # 10 to 14 mm
    text = _svg_texts(figures.plot_streamline_lengths(tractogram, tmp_path / "lengths.svg"))
    assert "30 streamlines, median 24.5 mm" in text


def test_empty_tractogram_still_draws(dwi_files, tmp_path):
    path = tmp_path / "empty.trx"
    save_tractogram(StatefulTractogram([], nib.load(dwi_files["fa"]), Space.RASMM), str(path), bbox_valid_check=False)
    summary = figures.streamline_length_summary(path)
    assert summary["count"] == 0 and np.isnan(summary["median_mm"]) and np.isnan(summary["mean_mm"])
    counts, _ = figures.length_histogram(figures.streamline_lengths(path))
    assert counts.sum() == 0
    _assert_png(figures.plot_tractogram(path, dwi_files["fa"], tmp_path / "tracts.png"))
    assert "no streamlines" in _svg_texts(figures.plot_streamline_lengths(path, tmp_path / "lengths.svg"))


def test_connectivity_matrix(tmp_path):
    nodes = ["L_a", "L_b", "R_a", "R_b"]
    values = np.array([[0, 3, 0, np.nan], [3, 0, 120, 1], [0, 120, 0, 7], [np.nan, 1, 7, 0]])
    tsv = tmp_path / "sub-01_seg-Toy_meas-StreamlineCount_relmat.tsv"
    pd.DataFrame(values, columns=nodes).to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    matrix, names = figures.read_relmat(tsv)
    assert names == nodes
    np.testing.assert_array_equal(np.isnan(matrix), np.isnan(values))
    _assert_png(figures.plot_connectivity_matrix(tsv, tmp_path / "sc.png"), min_width=600)
    _assert_png(figures.plot_connectivity_matrix(tsv, tmp_path / "sc_linear.png", log=False), min_width=600)
    assert plt.get_fignums() == []
    pd.DataFrame(values[:3], columns=nodes).to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(ValueError, match="not a square matrix"):
        figures.read_relmat(tsv)
