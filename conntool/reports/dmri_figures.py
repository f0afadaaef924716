"""Diffusion-MRI QC figures of a participant's report, drawn from the files conntool writes.

Each ``plot_*`` function reads files, writes one figure and returns its path. Figures are
``matplotlib.figure.Figure`` objects, never registered with pyplot: no GUI backend is needed and
nothing stays open between calls (a report draws many). Slices and projections are placed in
world coordinates (mm, RAS+) from the image affines, whatever the voxel orientation.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from nibabel.streamlines import ArraySequence

from conntool.export import parse_name
from conntool.outputs import read_tsv
from conntool.reports.layout import save_figure
from conntool.steps.dwi_preproc import B0_THRESHOLD

#: figure width in inches (1200 px at 100 dpi)
WIDTH = 12.0
#: world axes shown by the rows of slice figures: sagittal, coronal, axial (nilearn's display modes)
SLICE_MODES = ("x", "y", "z")
#: the two world axes (0 = x, 1 = y, 2 = z) spanning each projection of a tractogram, with the
#: letters at the ends of its horizontal and vertical axes
PROJECTIONS = {"sagittal": (1, 2, "PA", "IS"), "coronal": (0, 2, "LR", "IS"), "axial": (0, 1, "LR", "PA")}
#: streamlines are simplified to within this distance (mm, about a pixel of a projection) before
#: drawing: drawing time grows with the number of segments, and a tracking step is far below a pixel
DRAW_TOLERANCE_MM = 0.5
#: colour of NaN (``n/a``) entries of matrices: outside viridis' range
NAN_COLOUR = "0.82"


def _cut_coords(img: nib.Nifti1Image, where: np.ndarray, n_cuts: int) -> dict[str, np.ndarray]:
    """``n_cuts`` evenly spaced world coordinates (mm) per display mode, inside the 5th-95th
    percentiles of the region ``where`` along that world axis (so every cut shows brain); of
    the whole image when the region is empty (a failed mask is still shown)."""
    coords = nib.affines.apply_affine(img.affine, np.argwhere(where if where.any() else np.ones_like(where)))
    return {mode: np.linspace(*np.percentile(coords[:, axis], [5, 95]), n_cuts)
            for axis, mode in enumerate(SLICE_MODES)}


def _slice_rows(img: nib.Nifti1Image, cuts: dict[str, np.ndarray], vmin: float, vmax: float, title: str,
                contours: nib.Nifti1Image | None = None) -> Figure:
    """One row of nilearn slices per display mode (sagittal, coronal, axial), grey scale
    ``vmin``-``vmax``, with ``contours`` (a binary image) drawn in red; room for a colour bar on
    the right."""
    from nilearn.plotting import plot_img

    n_rows = len(SLICE_MODES)
    row_height = WIDTH / len(cuts["x"]) * 0.8
    fig = Figure(figsize=(WIDTH, n_rows * row_height + 0.4), facecolor="black")
    fig.suptitle(title, color="white", y=0.995)
    top = 1 - 0.4 / fig.get_figheight()
    for row, mode in enumerate(SLICE_MODES):
        rect = (0.0, top * (n_rows - row - 1) / n_rows, 0.93, top / n_rows)
        display = plot_img(img, display_mode=mode, cut_coords=cuts[mode], figure=fig, axes=rect, cmap="gray",
                           vmin=vmin, vmax=vmax, black_bg=True, draw_cross=False, colorbar=False,
                           resampling_interpolation="continuous")
        if contours is not None:
            display.add_contours(contours, levels=[0.5], colors="r", linewidths=0.8)
    return fig


def _read_gradients(bval: str | Path, bvec: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """b-values (T,) in s/mm² and b-vectors (T, 3) of FSL/BIDS ``.bval``/``.bvec`` files."""
    bvals = np.loadtxt(bval, ndmin=1)
    bvecs = np.loadtxt(bvec, ndmin=2)
    return bvals, bvecs.T if bvecs.shape[0] == 3 and bvecs.shape[1] != 3 else bvecs


def mean_b0(dwi: str | Path, bvals: np.ndarray) -> nib.Nifti1Image:
    """Mean of the b≈0 volumes (b ≤ ``B0_THRESHOLD``) of a 4D DWI, a 3D image on its grid.

    The volumes are read one by one, in order, through one open file: a compressed series is
    decompressed once up to its last b=0 volume and never held whole in memory.
    """
    img = nib.load(dwi, keep_file_open=True)
    b0s = np.flatnonzero(bvals <= B0_THRESHOLD)
    if not len(b0s):
        raise ValueError(f"{dwi}: no b=0 volume (b <= {B0_THRESHOLD:g})")
    total = sum(np.asarray(img.dataobj[..., t], float) for t in b0s)
    return nib.Nifti1Image((total / len(b0s)).astype(np.float32), img.affine)


def plot_b0_mask(dwi: str | Path, bval: str | Path, mask: str | Path, out_file: str | Path,
                 n_cuts: int = 6) -> Path:
    """Mean b=0 image with the brain mask's outline: checks the mask follows the brain.

    Parameters
    ----------
    dwi : preprocessed 4D DWI (X, Y, Z, T).
    bval : its ``.bval`` (T values, s/mm²); volumes with b ≤ 50 are averaged.
    mask : brain mask (X, Y, Z) on the DWI grid; its outline is drawn in red.
    out_file : the PNG to write: rows sagittal, coronal, axial; ``n_cuts`` world-space cuts
        each, spread over the mask's extent.
    """
    b0 = mean_b0(dwi, np.loadtxt(bval, ndmin=1))
    mask_img = nib.load(mask)
    inside = np.asarray(mask_img.dataobj) > 0
    values = b0.get_fdata()[inside] if inside.any() else b0.get_fdata()
    fig = _slice_rows(b0, _cut_coords(mask_img, inside, n_cuts), 0.0, float(np.percentile(values, 99.5)),
                      "Mean b=0 and brain mask", nib.Nifti1Image(inside.astype(np.uint8), mask_img.affine))
    return save_figure(fig, out_file)


def plot_fa(fa: str | Path, out_file: str | Path, mask: str | Path | None = None, n_cuts: int = 6) -> Path:
    """Fractional anisotropy map on a grey scale 0-1: white-matter tracts should stand out.

    Parameters
    ----------
    fa : FA map (X, Y, Z), unitless 0-1.
    out_file : the PNG to write: rows sagittal, coronal, axial; ``n_cuts`` world-space cuts each.
    mask : brain mask on the FA grid: cuts are spread over it and FA outside is drawn black.
        Without it, over the voxels with FA > 0.
    """
    img = nib.load(fa)
    data = np.nan_to_num(img.get_fdata())
    inside = np.asarray(nib.load(mask).dataobj) > 0 if mask is not None else data > 0
    shown = nib.Nifti1Image(np.where(inside, data, 0).astype(np.float32), img.affine)
    fig = _slice_rows(shown, _cut_coords(img, inside, n_cuts), 0.0, 1.0, "Fractional anisotropy")
    bar = fig.add_axes((0.945, 0.1, 0.012, 0.75))
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="gray"), cax=bar, label="FA")
    bar.yaxis.label.set_color("white")
    bar.tick_params(colors="white")
    return save_figure(fig, out_file)


def shell_of(bvals: np.ndarray, tolerance: float = 100.0) -> np.ndarray:
    """Shell of each volume (T,): its b-value (s/mm²) rounded to ``tolerance``, as int; 0 for
    b ≤ ``B0_THRESHOLD`` and never 0 above it, whatever the rounding."""
    bvals = np.asarray(bvals, float)
    weighted = np.maximum(np.round(bvals / tolerance), 1) * tolerance
    return np.where(bvals <= B0_THRESHOLD, 0, weighted).astype(int)


def shells(bvals: np.ndarray, tolerance: float = 100.0) -> dict[int, int]:
    """Number of volumes per shell (see ``shell_of``): b-value (s/mm²) → count, b=0 as 0."""
    values, counts = np.unique(shell_of(bvals, tolerance), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def plot_gradient_table(bval: str | Path, bvec: str | Path, out_file: str | Path, tolerance: float = 100.0) -> Path:
    """Diffusion directions on the unit sphere, coloured by shell: checks the sampling covers
    the sphere evenly and the shells are the intended ones.

    Parameters
    ----------
    bval : ``.bval`` file, T b-values (s/mm²).
    bvec : ``.bvec`` file, 3 rows of T unit vectors, drawn as stored (the BIDS/FSL b-vector
        frame: the voxel axes, the first one negated for images with a positive determinant).
    out_file : the SVG to write: two views, 90° apart, of the directions (filled) and their
        antipodes (open: the signal is antipodally symmetric, so they sample the sphere too);
        the legend gives each shell's b-value (rounded to ``tolerance``) and volume count, the
        title the number of b=0 volumes.
    """
    bvals, bvecs = _read_gradients(bval, bvec)
    shell = shell_of(bvals, tolerance)
    counts = shells(bvals, tolerance)
    fig = Figure(figsize=(9, 4.4))
    fig.subplots_adjust(left=0.02, right=0.95, bottom=0.12, top=0.92, wspace=0.3)
    fig.suptitle(f"Gradient directions; b=0 volumes: {counts.get(0, 0)}")
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 19), np.linspace(0, np.pi, 10))
    for column, azim in enumerate((-60, 30)):
        ax = fig.add_subplot(1, 2, column + 1, projection="3d")
        ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.88", linewidth=0.4)
        for colour, b in enumerate(b for b in counts if b):
            directions = bvecs[shell == b]
            ax.scatter(*directions.T, color=f"C{colour}", s=14, depthshade=False,
                       label=f"b = {b} s/mm²: {counts[b]} directions")
            ax.scatter(*-directions.T, facecolors="none", edgecolors=f"C{colour}", s=14, linewidths=0.6,
                       depthshade=False)
        ax.view_init(elev=20, azim=azim)
        ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1), xlabel="x", ylabel="y", zlabel="z",
               xticks=[-1, 0, 1], yticks=[-1, 0, 1], zticks=[-1, 0, 1])
        ax.set_box_aspect((1, 1, 1))
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncols=3, frameon=False)
    return save_figure(fig, out_file)


@contextmanager
def _streamlines(tractogram: str | Path) -> Iterator[ArraySequence]:
    """Streamlines of a TRX file, world coordinates (RASMM, mm), memory-mapped: valid only
    inside the ``with`` block (the file's extracted copy is removed on exit)."""
    from trx.trx_file_memmap import load

    trx = load(str(tractogram))
    try:
        yield trx.streamlines
    finally:
        trx.close()


def subsample(n_streamlines: int, max_streamlines: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``min(n_streamlines, max_streamlines)`` streamlines drawn at random
    without replacement; the same ``seed`` gives the same ones."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_streamlines, size=min(n_streamlines, max_streamlines), replace=False))


def direction_segments(streamlines: ArraySequence) -> tuple[np.ndarray, np.ndarray]:
    """Segments of every streamline and their direction colours.

    Returns
    -------
    segments : (S, 2, 3) start and end points (world, mm) of each segment between two
        consecutive points of a streamline.
    colours : (S, 3) RGB = |dx|, |dy|, |dz| of the segment's unit direction (red left-right,
        green anterior-posterior, blue inferior-superior).
    """
    segments = np.concatenate([np.stack([s[:-1], s[1:]], axis=1) for s in streamlines] or [np.zeros((0, 2, 3))])
    steps = segments[:, 1] - segments[:, 0]
    norms = np.linalg.norm(steps, axis=1, keepdims=True)
    return segments, np.abs(steps) / np.where(norms > 0, norms, 1)


def plot_tractogram(tractogram: str | Path, reference: str | Path, out_file: str | Path,
                    max_streamlines: int = 2000, seed: int = 0) -> Path:
    """Sagittal, coronal and axial projections of a random subsample of streamlines, each
    segment coloured by its direction: checks the main bundles are there and in place.

    Parameters
    ----------
    tractogram : TRX file, streamlines in world coordinates (RASMM, mm).
    reference : image the tractogram was made on (DWI or FA); its field of view (world
        bounding box) sets the axes limits.
    out_file : the PNG to write. Streamlines are simplified to within ``DRAW_TOLERANCE_MM``
        (dipy's ``compress_streamlines``); segments are drawn from far to near along each
        view's line of sight (the viewer is on the side of horizontal × vertical: the subject's
        right in the sagittal view, behind it in the coronal one, above it in the axial one),
        so the nearest ones are on top.
    max_streamlines, seed : at most this many streamlines are drawn, picked by ``subsample``.
    """
    from dipy.tracking.streamlinespeed import compress_streamlines

    with _streamlines(tractogram) as streamlines:
        n_total = len(streamlines)
        chosen = subsample(n_total, max_streamlines, seed)
        segments, colours = direction_segments(compress_streamlines(streamlines[chosen], DRAW_TOLERANCE_MM))
    img = nib.load(reference)
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in img.shape[:3]], indexing="ij")).reshape(3, -1).T
    world = nib.affines.apply_affine(img.affine, corners)
    low, high = world.min(axis=0), world.max(axis=0)
    fig = Figure(figsize=(WIDTH, 4.6), facecolor="black")
    fig.suptitle(f"Tractogram: {len(chosen):,} of {n_total:,} streamlines", color="white")
    for column, (name, (h, v, h_ends, v_ends)) in enumerate(PROJECTIONS.items()):
        ax = fig.add_subplot(1, 3, column + 1, facecolor="black")
        order = np.argsort(segments.mean(axis=1) @ np.cross(np.eye(3)[h], np.eye(3)[v]))
        ax.add_collection(LineCollection(segments[order][:, :, [h, v]], colors=colours[order], linewidths=0.4,
                                         alpha=0.8))
        ax.set(xlim=(low[h], high[h]), ylim=(low[v], high[v]), aspect="equal", xticks=[], yticks=[])
        ax.set_title(name, color="white")
        for letter, x, y in ((h_ends[0], 0.02, 0.5), (h_ends[1], 0.98, 0.5), (v_ends[0], 0.5, 0.02),
                             (v_ends[1], 0.5, 0.98)):
            ax.text(x, y, letter, color="white", ha="center", va="center", transform=ax.transAxes)
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.88, wspace=0.03)
    return save_figure(fig, out_file)


def read_relmat(relmat_tsv: str | Path) -> tuple[np.ndarray, list[str]]:
    """Square matrix (N, N) of a ``*_relmat.tsv`` (header row of node names, ``n/a`` → NaN)
    and its node names."""
    table = read_tsv(relmat_tsv)
    if table.shape[0] != table.shape[1]:
        raise ValueError(f"{relmat_tsv}: not a square matrix ({table.shape[0]} rows, {table.shape[1]} columns)")
    return table.to_numpy(float), [str(name) for name in table.columns]


def plot_connectivity_matrix(relmat_tsv: str | Path, out_file: str | Path, log: bool = True) -> Path:
    """A connectivity matrix as an image, rows and columns in the file's node order.

    Parameters
    ----------
    relmat_tsv : ``*_relmat.tsv`` (N × N, header row of node names); values are counts or
        edge measures, ``n/a`` where undefined.
    out_file : the PNG to write.
    log : draw log10(1 + value), so the few strong edges of streamline counts (orders of
        magnitude above the rest) do not hide the others. NaN is drawn light grey.
    """
    matrix, nodes = read_relmat(relmat_tsv)
    entities, _ = parse_name(Path(relmat_tsv).name)
    shown = np.log10(1 + matrix) if log else matrix
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad=NAN_COLOUR)
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="log10(1 + value)" if log else "value")
    ax.set(title=f"{entities.get('seg', '')} {entities.get('meas', '')} ({len(nodes)} nodes)",
           xlabel="node", ylabel="node")
    if np.isnan(matrix).any():
        ax.legend(handles=[Patch(color=NAN_COLOUR, label="n/a")], loc="lower left", bbox_to_anchor=(0, 1),
                  frameon=False)
    return save_figure(fig, out_file)


def streamline_lengths(tractogram: str | Path) -> np.ndarray:
    """Length (mm) of every streamline of a TRX file (world coordinates), shape (N,)."""
    from dipy.tracking.streamline import length

    with _streamlines(tractogram) as streamlines:
        return np.asarray(length(streamlines), float) if len(streamlines) else np.zeros(0)


def streamline_length_summary(tractogram: str | Path) -> dict[str, float]:
    """``count`` of streamlines and their ``median_mm`` and ``mean_mm`` length (NaN when none)."""
    lengths = streamline_lengths(tractogram)
    empty = not len(lengths)
    return {"count": len(lengths), "median_mm": np.nan if empty else float(np.median(lengths)),
            "mean_mm": np.nan if empty else float(np.mean(lengths))}


def length_histogram(lengths: np.ndarray, bin_mm: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Counts (B,) and edges (B + 1,), mm, of ``bin_mm``-wide bins from 0 covering every length."""
    top = float(np.max(lengths, initial=0.0))
    edges = np.arange(0.0, (np.floor(top / bin_mm) + 2) * bin_mm, bin_mm)
    return np.histogram(lengths, bins=edges)


def plot_streamline_lengths(tractogram: str | Path, out_file: str | Path, bin_mm: float = 5.0) -> Path:
    """Histogram of streamline lengths: a pile-up at the length limits or a lack of long
    streamlines points at tracking problems.

    Parameters
    ----------
    tractogram : TRX file, world coordinates (mm).
    out_file : the SVG to write; the title gives the count and the median length.
    bin_mm : bin width, mm.
    """
    lengths = streamline_lengths(tractogram)
    counts, edges = length_histogram(lengths, bin_mm)
    median = f"median {np.median(lengths):.1f} mm" if len(lengths) else "no streamlines"
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.stairs(counts, edges, fill=True, color="C0")
    ax.set(title=f"{len(lengths):,} streamlines, {median}", xlabel="length (mm)", ylabel="streamlines", xlim=(0, None))
    return save_figure(fig, out_file)
