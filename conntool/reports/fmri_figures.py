"""The fMRI QC figures of a participant's HTML report, one file per function.

Every function reads its inputs from disk (or takes nibabel images), draws on its own
`matplotlib.figure.Figure` (never registered with pyplot, so nothing is left open between
calls and no GUI backend is involved), saves PNG or SVG and returns the path written.
Brain slices are placed by nilearn displays, which work in world (scanner/template mm)
coordinates from each image's affine; no orientation is assumed.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from dipy.segment.threshold import otsu
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from nilearn import datasets, image, plotting

from conntool.errors import ConntoolInputError
from conntool.outputs import read_tsv
from conntool.reports.layout import save_figure
from conntool.steps import denoise
from conntool.steps.fieldmap import magnitude_mask

ImageLike = str | os.PathLike | nib.spatialimages.SpatialImage

WIDTH_IN = 12.0                  # 1200 px at 100 dpi
SLICES_PER_AXIS = 6
CUT_PERCENTILE = 5.0             # slices span the object's 5th to 95th percentile along each axis
CARPET_MAX_ROWS = 5000           # voxels drawn per carpet; a carpet is ~300 px tall, more rows add nothing
CARPET_MIN_SHARE = 0.1           # of the rows, at least, for each tissue
CARPET_Z_LIMIT = 2.0
EDGE_COLOUR = "red"
READ_CHUNK_BYTES = 64 * 2 ** 20  # volumes read per step while streaming a series
TISSUE_COLOURS = {"GM": "tab:blue", "WM": "tab:orange", "CSF": "tab:green", "brain": "tab:blue"}
MASK_COLOURS = ("tab:red", "tab:cyan", "gold", "tab:pink", "lime", "tab:purple")
CENSORED_COLOUR = "tab:red"
DUMMY_COLOUR = "tab:gray"
EXCLUDED_COLOUR = "red"
NAN_COLOUR = "0.6"              # n/a cells of a matrix
MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "framewise_displacement")
# Network = a field of the node name: Schaefer "17Networks_LH_VisCent_ExStr_1", "LH_Vis_1",
# simulated "net1_parcel3".
NETWORK_PATTERNS = (re.compile(r"^\d+Networks_[LR]H_([^_]+)_"), re.compile(r"^[LR]H_([^_]+)_"),
                    re.compile(r"^(net\d+)_"))
OTHER_NETWORK = "other"


# --------------------------------------------------------------------------- motion

def _motion_table(confounds_tsv: str | os.PathLike) -> pd.DataFrame:
    table = read_tsv(Path(confounds_tsv))
    missing = [c for c in MOTION_COLUMNS if c not in table.columns]
    if missing:
        raise ConntoolInputError(f"{confounds_tsv}: confounds lack the column(s) {', '.join(missing)}")
    return table


def _fd_summary(table: pd.DataFrame, n_dummy: int) -> dict[str, float]:
    fd = table["framewise_displacement"].to_numpy(float)
    summary = denoise.motion_summary(fd, np.ones(fd.size, bool), n_dummy)
    return {"mean_fd_mm": np.nan if summary["MeanFD"] is None else summary["MeanFD"],
            "max_fd_mm": np.nan if summary["MaxFD"] is None else summary["MaxFD"]}


def _runs(volumes: Iterable[int]) -> list[tuple[float, int]]:
    """(start - 0.5, length) of each run of consecutive volume indices, for ``broken_barh``."""
    v = np.unique(np.asarray(list(volumes), int))
    if v.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(v) != 1) + 1
    return [(float(run[0]) - 0.5, int(run.size)) for run in np.split(v, breaks)]


def _shade(ax, volumes: Iterable[int], colour: str, alpha: float, label: str | None = None) -> None:
    ax.broken_barh(_runs(volumes), (0, 1), transform=ax.get_xaxis_transform(), facecolors=colour,
                   alpha=alpha, linewidth=0, label=label)


def plot_motion(confounds_tsv: str | os.PathLike, out_file: str | os.PathLike, fd_threshold_mm: float | None = None,
                censored: Sequence[int] = (), n_dummy: int = 0) -> Path:
    """Head-motion traces of a run (SVG): translations, rotations and framewise displacement.

    Three panels share the volume axis (0-based volume index, as in the QC JSON):
    translations (mm), rotations (degrees, converted from fMRIPrep's radians) and FD (mm)
    with the censoring threshold as a dashed line. Non-steady-state volumes are shaded grey,
    the other censored volumes red; the title gives `motion_summary`'s mean and max FD.

    Parameters
    ----------
    confounds_tsv : path
        Confounds TSV with ``trans_{x,y,z}`` (mm), ``rot_{x,y,z}`` (rad), ``framewise_displacement`` (mm).
    out_file : path
        SVG written.
    fd_threshold_mm : float, optional
        FD censoring threshold (mm), drawn when given.
    censored : sequence of int
        Censored volume indices (0-based, may include the non-steady-state volumes).
    n_dummy : int
        Number of non-steady-state volumes at the start of the run.

    Returns
    -------
    Path
        ``out_file``.
    """
    table = _motion_table(confounds_tsv)
    summary = _fd_summary(table, n_dummy)
    volumes = np.arange(len(table))
    scrubbed = [v for v in censored if v >= n_dummy]

    fig = Figure(figsize=(WIDTH_IN, 7.0), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    panels = ((("trans_x", "trans_y", "trans_z"), 1.0, "translation (mm)"),
              (("rot_x", "rot_y", "rot_z"), 180.0 / np.pi, "rotation (deg)"),
              (("framewise_displacement",), 1.0, "FD (mm)"))
    for ax, (columns, scale, ylabel) in zip(axes, panels):
        for column in columns:
            ax.plot(volumes, table[column].to_numpy(float) * scale, linewidth=0.9,
                    label=column.rsplit("_", 1)[-1] if len(columns) > 1 else "FD")
        _shade(ax, range(n_dummy), DUMMY_COLOUR, 0.35)
        _shade(ax, scrubbed, CENSORED_COLOUR, 0.25)
        ax.set_ylabel(ylabel)
        ax.margins(x=0)
    if fd_threshold_mm is not None:
        axes[2].axhline(fd_threshold_mm, color=CENSORED_COLOUR, linestyle="--", linewidth=1,
                        label=f"threshold {fd_threshold_mm:g} mm")
    shading = ([Patch(color=DUMMY_COLOUR, alpha=0.35), Patch(color=CENSORED_COLOUR, alpha=0.25)],
               [f"non-steady-state ({n_dummy})", f"censored ({len(scrubbed)})"])
    for ax, extra in zip(axes, ([[], []], [[], []], shading)):
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles + extra[0], labels + extra[1], loc="upper left", bbox_to_anchor=(1.005, 1.0),
                  fontsize="small", frameon=False)
    axes[2].set_xlabel("volume")
    fig.suptitle(f"Head motion: mean FD {summary['mean_fd_mm']:.3f} mm, max FD {summary['max_fd_mm']:.3f} mm"
                 + (f" (after {n_dummy} non-steady-state volumes)" if n_dummy else ""))
    return save_figure(fig, out_file, format="svg")


# --------------------------------------------------------------------------- carpet

def _mask_on_grid(mask: ImageLike, grid: nib.spatialimages.SpatialImage, what: str) -> np.ndarray:
    img = image.load_img(mask)
    if img.shape[:3] != grid.shape[:3] or not np.allclose(img.affine, grid.affine, atol=1e-3):
        raise ConntoolInputError(f"{what} mask {mask}: not on the grid of the BOLD series "
                                 f"(shape {img.shape[:3]} vs {grid.shape[:3]})")
    return np.asarray(img.dataobj) > 0


def _tissue_groups(brain_mask: ImageLike, grid: nib.spatialimages.SpatialImage, wm_mask: ImageLike | None,
                   csf_mask: ImageLike | None) -> dict[str, np.ndarray]:
    brain = _mask_on_grid(brain_mask, grid, "brain")
    if wm_mask is None and csf_mask is None:
        return {"brain": brain}
    wm = _mask_on_grid(wm_mask, grid, "WM") & brain if wm_mask is not None else np.zeros_like(brain)
    csf = _mask_on_grid(csf_mask, grid, "CSF") & brain & ~wm if csf_mask is not None else np.zeros_like(brain)
    groups = {"GM": brain & ~wm & ~csf, "WM": wm, "CSF": csf}
    return {name: voxels for name, voxels in groups.items() if voxels.any()}


def carpet_rows(groups: Mapping[str, np.ndarray], max_rows: int = CARPET_MAX_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Voxels drawn in a carpet: evenly spaced within each tissue, in proportion to its size but
    at least `CARPET_MIN_SHARE` of the rows for each (a thin CSF band would be invisible).

    Parameters
    ----------
    groups : mapping of str to bool array (X, Y, Z)
        Tissue name to its voxels, on the BOLD grid; the carpet keeps this order.
    max_rows : int
        About this many voxels (rows) at most in total (+-1 per tissue from rounding).

    Returns
    -------
    flat_index : int array (R,)
        Indices into the flattened (C-order) grid.
    group : int array (R,)
        Position of each row's tissue in ``groups``.
    """
    flat = [np.flatnonzero(voxels) for voxels in groups.values()]
    sizes = np.array([v.size for v in flat], float)
    share = np.maximum(sizes / sizes.sum(), CARPET_MIN_SHARE)
    quota = np.minimum(sizes, np.maximum(1, np.rint(max_rows * share / share.sum()))).astype(int)
    keep = [v[np.linspace(0, v.size - 1, k).astype(int)] for v, k in zip(flat, quota)]
    return np.concatenate(keep), np.concatenate([np.full(v.size, g) for g, v in enumerate(keep)])


def _voxel_series(bold: ImageLike, flat_index: np.ndarray) -> np.ndarray:
    """(R, T) series of the given voxels, read in one pass over the file.

    Hand-written rather than ``get_fdata``: volumes are streamed through one open handle
    (``keep_file_open``), so a gzipped 600-volume series is decompressed once and never held
    whole in memory (780 MB at 65x77x65x600 float32).
    """
    img = nib.load(bold, keep_file_open=True) if isinstance(bold, (str, os.PathLike)) else bold
    if img.ndim != 4:
        raise ConntoolInputError(f"{bold}: a 4D BOLD series is expected, got shape {img.shape}")
    ijk = np.unravel_index(flat_index, img.shape[:3])
    n_volumes = img.shape[3]
    step = max(1, READ_CHUNK_BYTES // (8 * int(np.prod(img.shape[:3]))))
    out = np.empty((flat_index.size, n_volumes), np.float32)
    for start in range(0, n_volumes, step):
        out[:, start:start + step] = np.asarray(img.dataobj[..., start:start + step])[ijk]
    return out


def _zscore(series: np.ndarray, censored: np.ndarray) -> np.ndarray:
    """Each row z-scored with the mean and SD of its kept volumes (censored and missing ones are
    outliers or absent: they would set the scale of the whole carpet)."""
    present = ~np.isnan(series).any(axis=0)
    use = present & ~censored
    if not use.any():
        use = present
    mean = series[:, use].mean(axis=1, keepdims=True)
    sd = series[:, use].std(axis=1, keepdims=True)
    return (series - mean) / np.where(sd > 0, sd, 1.0)


def plot_carpet(preproc_bold: ImageLike, denoised_bold: ImageLike, brain_mask: ImageLike, out_file: str | os.PathLike,
                wm_mask: ImageLike | None = None, csf_mask: ImageLike | None = None, censored: Sequence[int] = (),
                volumes_of_input: Sequence[int] | None = None) -> Path:
    """Carpet plots before and after denoising, one above the other (PNG).

    Rows are voxels grouped by tissue (GM = brain - WM - CSF, WM, CSF when the masks are
    given, else the whole brain), about `CARPET_MAX_ROWS`, the same voxels in both; columns
    are the input's volumes. Each row is z-scored over its kept volumes and drawn in grey at
    +-2. Censored volumes are marked in red under each carpet; volumes the denoised series
    does not have are drawn in light red.

    Hand-drawn with ``imshow`` rather than ``nilearn.plotting.plot_carpet``, which cleans every
    brain voxel (slow at 600 volumes), cannot subsample rows, nor mark volumes.

    Parameters
    ----------
    preproc_bold : path or image
        Preprocessed series (X, Y, Z, T), template space.
    denoised_bold : path or image
        Denoised series (X, Y, Z, T') on the same grid, T' <= T.
    brain_mask, wm_mask, csf_mask : path or image
        Binary masks (X, Y, Z) on the BOLD grid.
    out_file : path
        PNG written.
    censored : sequence of int
        Censored volumes, 0-based indices into the preprocessed series.
    volumes_of_input : sequence of int, optional
        For each denoised volume, its index in the preprocessed series (the sidecar's
        ``VolumesOfInput``); default: the same volumes (then T' must equal T).

    Returns
    -------
    Path
        ``out_file``.
    """
    grid = nib.load(preproc_bold) if isinstance(preproc_bold, (str, os.PathLike)) else preproc_bold
    groups = _tissue_groups(brain_mask, grid, wm_mask, csf_mask)
    rows, row_group = carpet_rows(groups)
    before = _voxel_series(preproc_bold, rows)
    denoised = _voxel_series(denoised_bold, rows)
    n_volumes = before.shape[1]
    kept = np.arange(n_volumes) if volumes_of_input is None else np.asarray(volumes_of_input, int)
    if kept.size != denoised.shape[1] or kept.max(initial=0) >= n_volumes:
        raise ConntoolInputError(f"{denoised_bold}: {denoised.shape[1]} volumes, but volumes_of_input lists "
                                 f"{kept.size} of a {n_volumes}-volume input")
    after = np.full_like(before, np.nan)
    after[:, kept] = denoised
    is_censored = np.isin(np.arange(n_volumes), np.asarray(censored, int))

    fig = Figure(figsize=(WIDTH_IN, 8.0))
    grid_spec = fig.add_gridspec(5, 3, height_ratios=[10, 0.5, 1.6, 10, 0.5], width_ratios=[0.25, 12, 0.2],
                                 hspace=0.08, wspace=0.02, left=0.07, right=0.93, top=0.92, bottom=0.07)
    cmap = colormaps["gray"].with_extremes(bad=to_rgba(CENSORED_COLOUR, 0.3))
    names = list(groups)
    tissue_cmap = ListedColormap([TISSUE_COLOURS[n] for n in names])
    bounds = np.flatnonzero(np.diff(row_group)) + 0.5
    centres = [np.flatnonzero(row_group == g).mean() for g in range(len(names))]
    for top, (series, label) in zip((0, 3), ((before, "before denoising (preprocessed)"), (after, "after denoising"))):
        carpet = fig.add_subplot(grid_spec[top, 1])
        shown = carpet.imshow(_zscore(series, is_censored), cmap=cmap, vmin=-CARPET_Z_LIMIT, vmax=CARPET_Z_LIMIT,
                              aspect="auto", interpolation="antialiased",
                              extent=(-0.5, n_volumes - 0.5, rows.size - 0.5, -0.5))
        for b in bounds:
            carpet.axhline(b, color="white", linewidth=0.8)
        carpet.set_title(label, fontsize="medium")
        carpet.set_yticks([])
        carpet.tick_params(labelbottom=False)
        tissue = fig.add_subplot(grid_spec[top, 0])
        tissue.imshow(row_group[:, None], cmap=tissue_cmap, vmin=-0.5, vmax=len(names) - 0.5, aspect="auto",
                      interpolation="nearest", extent=(0, 1, rows.size - 0.5, -0.5))
        tissue.set_xticks([])
        tissue.set_yticks(centres, names, fontsize="small")
        marks = fig.add_subplot(grid_spec[top + 1, 1], sharex=carpet)
        _shade(marks, np.flatnonzero(is_censored), CENSORED_COLOUR, 1.0)
        marks.set_yticks([])
        marks.set_ylabel("censored", rotation=0, ha="right", va="center", fontsize="small")
        fig.colorbar(shown, cax=fig.add_subplot(grid_spec[top, 2]), label="z")
    marks.set_xlabel("volume")
    fig.suptitle(f"Carpet plot: {rows.size} of {sum(int(v.sum()) for v in groups.values())} brain voxels, "
                 f"{n_volumes} volumes, {int(is_censored.sum())} censored")
    return save_figure(fig, out_file, format="png")


# --------------------------------------------------------------------------- slices

def _as_3d(img: ImageLike) -> nib.spatialimages.SpatialImage:
    loaded = image.load_img(img)
    return image.mean_img(loaded, copy_header=True) if loaded.ndim == 4 else loaded


def spread_cuts(inside: np.ndarray, affine: np.ndarray, cuts: int) -> dict[str, np.ndarray]:
    """World coordinates (mm) of ``cuts`` slices per axis, evenly spaced over an object.

    Hand-written rather than nilearn's ``find_cut_slices``, which spreads slices to the very
    ends of the object, where a slice holds a few voxels.

    Parameters
    ----------
    inside : bool array (X, Y, Z)
        The object's voxels.
    affine : array (4, 4)
        Voxel to world (mm) transform of ``inside``.
    cuts : int
        Slices per axis.

    Returns
    -------
    dict
        ``"x"``, ``"y"``, ``"z"`` to (cuts,) world coordinates between the 5th and 95th
        percentiles of the object's voxel coordinates along that world axis.
    """
    world = nib.affines.apply_affine(affine, np.argwhere(inside))
    low, high = np.percentile(world, [CUT_PERCENTILE, 100 - CUT_PERCENTILE], axis=0)
    return {axis: np.linspace(low[i], high[i], cuts) for i, axis in enumerate("xyz")}


def _object_cuts(img: nib.spatialimages.SpatialImage, cuts: int) -> dict[str, np.ndarray]:
    return spread_cuts(np.asarray(img.dataobj) > tissue_levels(img)[0], img.affine, cuts)


def _slice_rows(fig: Figure, background: nib.spatialimages.SpatialImage, cut_coords: Mapping[str, np.ndarray],
                bottom: float, top: float, right: float = 1.0) -> list:
    """Three nilearn displays (sagittal, coronal, axial) at ``cut_coords`` (world mm), stacked
    in ``fig`` between the figure fractions ``bottom`` and ``top``."""
    height = (top - bottom) / 3
    return [plotting.plot_anat(background, display_mode=mode, cut_coords=list(cut_coords[mode]), figure=fig,
                               axes=(0.0, top - (row + 1) * height, right, height), black_bg=True,
                               draw_cross=False, colorbar=False, dim=0)
            for row, mode in enumerate("xyz")]


def _slices_figure(title: str | None) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, 6.6), facecolor="black")
    if title:
        fig.suptitle(title, color="white")
    return fig


def tissue_levels(img: ImageLike) -> list[float]:
    """Two intensity levels of an anatomical image: object vs background (Otsu over the image),
    then the brightest tissue's boundary (Otsu over the object: GM/WM in a T1w).

    Contours at these levels stand for the image's edges: nilearn's ``add_edges`` (a Canny filter
    scaled per slice) turns floating-point noise of empty background into edges on slices with
    little brain.
    """
    data = np.asarray(image.load_img(img).dataobj, float)
    data = data[np.isfinite(data)]
    outline = float(otsu(data))
    return [outline, float(otsu(data[data > outline]))]


def plot_registration(background: ImageLike, edges_of: ImageLike, out_file: str | os.PathLike,
                      title: str | None = None, cuts: int = SLICES_PER_AXIS) -> Path:
    """``background`` in grey with the edges of ``edges_of`` drawn on it in red (PNG).

    Three rows (sagittal, coronal, axial) of ``cuts`` slices. The report uses it for
    T1w -> template (T1w in template space, the template's edges) and BOLD -> T1w (mean BOLD
    in template space, the T1w's edges): edges that follow the background's boundaries mean
    the two are aligned.

    Parameters
    ----------
    background : path or image
        3D image (a 4D series is averaged over time), any grid.
    edges_of : path or image
        3D image whose edges are drawn; any grid in the same world space.
    out_file : path
        PNG written.
    title : str, optional
        Figure title.
    cuts : int
        Slices per row.

    Returns
    -------
    Path
        ``out_file``.
    """
    fig = _slices_figure(title)
    contoured = _as_3d(edges_of)
    levels = tissue_levels(contoured)
    inside = np.asarray(contoured.dataobj) > levels[0]
    for display in _slice_rows(fig, _as_3d(background), spread_cuts(inside, contoured.affine, cuts), 0.0,
                               0.94 if title else 1.0):
        display.add_contours(contoured, levels=levels, colors=[EDGE_COLOUR] * len(levels), linewidths=0.8)
    return save_figure(fig, out_file, format="png")


def plot_distortion_correction(acquired: ImageLike | Sequence[ImageLike], corrected: ImageLike | Sequence[ImageLike],
                               field_hz: ImageLike, out_file: str | os.PathLike, cuts: int = SLICES_PER_AXIS,
                               title: str = "Susceptibility distortion correction: as acquired, corrected, "
                                            "field (Hz)") -> Path:
    """Susceptibility distortion correction of an EPI reference (PNG): sagittal slices of the
    reference as acquired and as corrected, each with the (first) corrected reference's outline
    in red (where they differ, the acquired image is displaced along phase encoding), and the
    field (Hz) on the corrected reference, inside that outline.

    Parameters
    ----------
    acquired, corrected : path or image, or a sequence of them
        The reference(s) before and after correction, on one grid (X, Y, Z): one row each,
        the acquired first (e.g. a BOLD reference; or the b=0 images of a reversed
        phase-encoding pair, AP then PA).
    field_hz : path or image
        The off-resonance field (Hz) on that grid.
    out_file : path
        PNG written.

    Returns
    -------
    Path
        ``out_file``.
    """
    def as_list(images) -> list:
        return [_as_3d(im) for im in (images if isinstance(images, (list, tuple)) else [images])]

    rows = as_list(acquired) + as_list(corrected)
    outline = rows[len(rows) - len(as_list(corrected))]
    fig = Figure(figsize=(WIDTH_IN, 2.2 * (len(rows) + 1)), facecolor="black")
    fig.suptitle(title, color="white")
    level = tissue_levels(outline)[0]
    cut = spread_cuts(np.asarray(outline.dataobj) > level, outline.affine, cuts)["x"]
    height = 0.92 / (len(rows) + 1)
    for row, background in enumerate(rows):
        display = plotting.plot_anat(background, display_mode="x", cut_coords=list(cut), figure=fig,
                                     axes=(0.0, 0.92 - (row + 1) * height, 1.0, height), black_bg=True,
                                     draw_cross=False, colorbar=False, dim=0)
        display.add_contours(outline, levels=[level], colors=[EDGE_COLOUR], linewidths=0.8)
    field = _as_3d(field_hz)
    head = nib.Nifti1Image(magnitude_mask(np.asarray(outline.dataobj)).astype(np.uint8), outline.affine)
    inside = image.resample_to_img(head, field, interpolation="nearest", force_resample=True, copy_header=True)
    field = image.math_img("field * inside", field=field, inside=inside)  # the field where the image has signal
    limit = max(float(np.percentile(np.abs(np.asarray(field.dataobj)), 99.5)), 1.0)
    plotting.plot_stat_map(field, bg_img=outline, display_mode="x", cut_coords=list(cut), figure=fig,
                           axes=(0.0, 0.0, 1.0, height), black_bg=True, draw_cross=False, colorbar=True,
                           vmax=limit, cmap="RdBu_r", dim=0, threshold=limit / 20, symmetric_cbar=True)
    return save_figure(fig, out_file, format="png")


def plot_tissue_masks(mean_bold: ImageLike, out_file: str | os.PathLike, masks: Mapping[str, ImageLike],
                      title: str = "Tissue masks on the mean BOLD") -> Path:
    """Mean BOLD (or another background) with the outline of each mask in its own colour and a
    legend (PNG).

    Parameters
    ----------
    mean_bold : path or image
        Mean BOLD (X, Y, Z) in template space (a 4D series is averaged over time), or the T1w
        for its segmentation.
    out_file : path
        PNG written.
    masks : mapping of str to path or image
        Legend name to binary mask (any grid in the same world space), e.g. brain, WM, CSF.

    Returns
    -------
    Path
        ``out_file``.
    """
    if len(masks) > len(MASK_COLOURS):
        raise ValueError(f"at most {len(MASK_COLOURS)} masks, got {len(masks)}")
    fig = _slices_figure(title)
    loaded = {name: image.load_img(mask) for name, mask in masks.items()}
    background = _as_3d(mean_bold)
    for display in _slice_rows(fig, background, _object_cuts(background, SLICES_PER_AXIS), 0.0, 0.9):
        for colour, mask in zip(MASK_COLOURS, loaded.values()):
            display.add_contours(mask, levels=[0.5], colors=[colour], linewidths=1.0)
    fig.legend([Line2D([], [], color=c, linewidth=2) for c, _ in zip(MASK_COLOURS, loaded)], list(loaded),
               loc="upper right", ncols=len(loaded), frameon=False, labelcolor="white")
    return save_figure(fig, out_file, format="png")


# --------------------------------------------------------------------------- parcels

def _coverage_table(coverage_tsv: str | os.PathLike) -> pd.DataFrame:
    """Columns index (int), name (str), coverage (float 0-1), included (bool); the node-name
    column may be called ``name`` or ``node`` (what conntool writes)."""
    table = read_tsv(Path(coverage_tsv)).rename(columns={"node": "name"})
    missing = [c for c in ("index", "name", "coverage", "included") if c not in table.columns]
    if missing:
        raise ConntoolInputError(f"{coverage_tsv}: coverage table lacks the column(s) {', '.join(missing)}")
    included = table["included"].astype(str).str.strip().str.lower().isin(["true", "1", "1.0"])
    return table.assign(index=table["index"].astype(int), name=table["name"].astype(str),
                        coverage=table["coverage"].astype(float), included=included)


def excluded_nodes(coverage_tsv: str | os.PathLike) -> list[tuple[str, float]]:
    """(name, coverage fraction) of the parcels excluded for low coverage, in table order."""
    table = _coverage_table(coverage_tsv)
    excluded = table.loc[~table["included"]]
    return [(str(name), float(cov)) for name, cov in zip(excluded["name"], excluded["coverage"])]


def coverage_maps(atlas: ImageLike, coverage_tsv: str | os.PathLike,
                  reference: nib.spatialimages.SpatialImage) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Coverage and exclusion painted into the parcels, on ``reference``'s grid.

    Parameters
    ----------
    atlas : path or image
        3D integer label image, any grid; resampled (nearest) to ``reference``.
    coverage_tsv : path
        Coverage table (see `plot_coverage`).
    reference : image
        3D image whose grid (shape, affine) the maps are on.

    Returns
    -------
    coverage : image (X, Y, Z) float
        Each included parcel's coverage fraction (0-1); 0 elsewhere (background, excluded
        parcels, labels missing from the table).
    excluded : image (X, Y, Z) float
        1 in the excluded parcels, 0 elsewhere.
    """
    labels_img = image.resample_to_img(atlas, reference, interpolation="nearest", force_resample=True,
                                       copy_header=True)
    labels = np.rint(np.asarray(labels_img.dataobj)).astype(int)
    table = _coverage_table(coverage_tsv)
    size = max(int(labels.max()), int(table["index"].max())) + 1
    coverage = np.zeros(size)
    excluded = np.zeros(size)
    coverage[table["index"]] = np.where(table["included"], table["coverage"], 0.0)
    excluded[table["index"]] = ~table["included"]
    return (nib.Nifti1Image(coverage[labels], labels_img.affine),
            nib.Nifti1Image(excluded[labels], labels_img.affine))


def plot_coverage(atlas: ImageLike, coverage_tsv: str | os.PathLike, out_file: str | os.PathLike,
                  background: ImageLike | None = None) -> Path:
    """Parcels coloured by their coverage, excluded parcels in red, on a background (PNG).

    Parameters
    ----------
    atlas : path or image
        3D integer label image, any grid; resampled (nearest) to the background's grid.
    coverage_tsv : path
        Table with ``index`` (label value), ``name``/``node``, ``coverage`` (fraction of the
        parcel inside the brain mask, 0-1) and ``included`` (bool or 0/1).
    out_file : path
        PNG written.
    background : path or image, optional
        3D image the parcels are drawn on; default nilearn's MNI152 template at 2 mm.

    Returns
    -------
    Path
        ``out_file``.
    """
    bg = datasets.load_mni152_template(resolution=2) if background is None else _as_3d(background)
    coverage_img, excluded_img = coverage_maps(atlas, coverage_tsv, bg)
    table = _coverage_table(coverage_tsv)
    cmap = colormaps["viridis"]
    n_excluded = int((~table["included"]).sum())
    fig = _slices_figure(f"Parcel coverage: {n_excluded} of {len(table)} parcels excluded")
    in_atlas = (np.asarray(coverage_img.dataobj) > 0) | (np.asarray(excluded_img.dataobj) > 0)
    cuts = spread_cuts(in_atlas, coverage_img.affine, SLICES_PER_AXIS)
    for display in _slice_rows(fig, bg, cuts, 0.0, 0.9, right=0.93):
        display.add_overlay(coverage_img, cmap=cmap, vmin=0.0, vmax=1.0, threshold=0.0)
        if n_excluded:
            display.add_overlay(excluded_img, cmap=ListedColormap([EXCLUDED_COLOUR]), vmin=0.0, vmax=1.0,
                                threshold=0.5)
    colorbar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap), cax=fig.add_axes((0.945, 0.1, 0.012, 0.7)))
    colorbar.set_label("coverage (fraction inside brain mask)", color="white")
    colorbar.ax.tick_params(colors="white")
    fig.legend([Patch(color=EXCLUDED_COLOUR)], [f"excluded ({n_excluded})"], loc="upper right", frameon=False,
               labelcolor="white")
    return save_figure(fig, out_file, format="png")


# --------------------------------------------------------------------------- matrix

def node_networks(names: Sequence[str]) -> list[str] | None:
    """One network label per node, parsed from the node names, or None when none carries one.

    Schaefer names ``17Networks_LH_VisCent_ExStr_1`` / ``7Networks_RH_Default_PFCv_2`` and
    ``LH_Vis_1`` give the network field (VisCent, Default, Vis); simulated ``net1_parcel3``
    gives ``net1``. In an atlas where only some names carry a network (Schaefer cortex with
    Tian subcortex), the others are labelled ``"other"``.
    """
    found = [next((m.group(1) for pattern in NETWORK_PATTERNS if (m := pattern.match(name))), None) for name in names]
    if all(network is None for network in found):
        return None
    return [network or OTHER_NETWORK for network in found]


def network_order(networks: Sequence[str]) -> np.ndarray:
    """Node order grouping networks, in order of first appearance, atlas order within each.

    Returns
    -------
    int array (N,)
        Indices into ``networks``.
    """
    rank = {network: i for i, network in enumerate(dict.fromkeys(networks))}
    return np.argsort([rank[n] for n in networks], kind="stable")


def symmetric_limit(matrix: np.ndarray) -> float:
    """Colour limit: 1 when every finite value lies in [-1, 1] (correlations), else max|value|."""
    finite = np.abs(matrix[np.isfinite(matrix)])
    return 1.0 if finite.size == 0 or finite.max() <= 1.0 else float(finite.max())


def plot_fc_matrix(relmat_tsv: str | os.PathLike, out_file: str | os.PathLike,
                   names: Sequence[str] | None = None) -> Path:
    """The connectivity matrix ordered by network, with network boundaries and names (PNG).

    Networks come from `node_networks`, in order of first appearance, atlas order within a
    network; without networks the atlas order is kept. Diverging colours at symmetric
    limits: +-1 when every value lies in [-1, 1] (correlations), else +-max|value|; n/a in grey.

    Parameters
    ----------
    relmat_tsv : path
        Square matrix (N, N), header row = node names, ``n/a`` for NaN.
    out_file : path
        PNG written.
    names : sequence of str, optional
        N node names to use instead of the header's (e.g. the atlas table's).

    Returns
    -------
    Path
        ``out_file``.
    """
    table = read_tsv(Path(relmat_tsv))
    matrix = table.to_numpy(float)
    names = list(table.columns) if names is None else list(names)
    if matrix.shape != (len(names), len(names)):
        raise ConntoolInputError(f"{relmat_tsv}: a square matrix with {len(names)} names is expected, "
                                 f"got shape {matrix.shape}")
    networks = node_networks(names)
    order = np.arange(len(names)) if networks is None else network_order(networks)
    ordered = matrix[np.ix_(order, order)]
    limit = symmetric_limit(ordered)

    fig = Figure(figsize=(11.0, 9.5), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["RdBu_r"].with_extremes(bad=NAN_COLOUR)
    shown = ax.imshow(np.ma.masked_invalid(ordered), cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
    fig.colorbar(shown, ax=ax, shrink=0.8)
    if networks is None:
        ax.set_title(f"{len(names)} nodes, atlas order")
    else:
        sorted_networks = np.asarray(networks)[order]
        starts = np.flatnonzero(np.r_[True, sorted_networks[1:] != sorted_networks[:-1]])
        ends = np.r_[starts[1:], len(names)]
        for boundary in starts[1:] - 0.5:
            ax.axhline(boundary, color="black", linewidth=0.8)
            ax.axvline(boundary, color="black", linewidth=0.8)
        centres = (starts + ends - 1) / 2
        ax.set_xticks(centres, sorted_networks[starts], rotation=90)
        ax.set_yticks(centres, sorted_networks[starts])
        ax.set_title(f"{len(names)} nodes ordered by network")
    return save_figure(fig, out_file, format="png")
