"""Where report figures go and what they show: one table that the workflows (which draw
them) and the HTML pages (which show them) share.

Figures of a participant live in ``OUT/sub-<label>/figures/`` and are named as BIDS
derivatives: the entities of what they show, ``desc-<figure>`` and the suffix of the data
(``bold``, ``dwi``, ``T1w``), e.g. ``sub-01_task-rest_seg-Schaefer400_desc-connectivity_bold.png``.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from matplotlib import rc_context
from matplotlib.figure import Figure as MplFigure

from conntool.outputs import bids_name

DPI = 100  # PNGs of about 1200 px wide


class Figure(NamedTuple):
    suffix: str
    extension: str
    title: str
    caption: str


#: Per fMRI run (``run``), per fMRI run and atlas (``atlas``), per T1w (``anat``) and per DWI
#: session (``dwi``, ``dwi_atlas``); each keyed by its ``desc``.
FIGURES: dict[str, dict[str, Figure]] = {
    "anat": {
        "normalization": Figure("T1w", ".png", "T1w → template",
                                "The skull-stripped T1w resampled into template space, with the template's "
                                "edges drawn on it: the edges should follow the T1w's boundaries."),
        "segmentation": Figure("T1w", ".png", "Tissue segmentation",
                               "The skull-stripped T1w with the outline of each tissue where it is the most "
                               "probable (label-*_probseg): GM should follow the cortex, CSF the ventricles "
                               "and sulci."),
    },
    "run": {
        "motion": Figure("bold", ".svg", "Head motion",
                         "Rigid-body parameters (translations in mm, rotations in degrees) and framewise "
                         "displacement (Power 2012). Non-steady-state volumes and censored volumes are shaded; "
                         "the dashed line is the preset's FD censoring threshold."),
        "carpet": Figure("bold", ".png", "Carpet plot before and after denoising",
                         "Every row a voxel (grouped by tissue), every column a volume, each voxel z-scored. "
                         "Vertical bands before denoising are global or motion-related signal; after denoising "
                         "they should be gone."),
        "coregistration": Figure("bold", ".png", "BOLD → T1w",
                                 "The BOLD reference (mean of the preprocessed series in template space) with the "
                                 "T1w's edges: ventricles and the brain's outline should coincide."),
        "sdc": Figure("bold", ".png", "Susceptibility distortion correction",
                      "Sagittal slices of the BOLD reference as acquired (top) and corrected with the field of "
                      "the run's fieldmap or PEPOLAR pair (middle), each with the corrected reference's outline in "
                      "red, and the field in Hz inside the head (bottom). Only runs with field information have it."),
        "tissues": Figure("bold", ".png", "Nuisance masks",
                          "Brain, white-matter and CSF masks used for nuisance signals, on the BOLD reference."),
    },
    "atlas": {
        "coverage": Figure("bold", ".png", "Parcel coverage",
                           "Each parcel coloured by the fraction of it inside the BOLD brain mask; parcels below "
                           "the preset's minimum coverage (n/a nodes) are drawn in red."),
        "connectivity": Figure("bold", ".png", "Functional connectivity",
                               "Pearson correlation matrix, nodes ordered by network (from the atlas labels) "
                               "with network boundaries; n/a nodes in grey."),
    },
    "dwi": {
        "b0": Figure("dwi", ".png", "b=0 and brain mask", "Mean of the b=0 volumes with the brain mask's outline."),
        "fa": Figure("dwi", ".png", "Fractional anisotropy", "FA of the tensor fit, 0 to 1."),
        "gradients": Figure("dwi", ".svg", "Gradient table",
                            "Diffusion directions on the unit sphere, coloured by shell."),
        "tractogram": Figure("dwi", ".png", "Tractogram",
                             "Projections of a random subsample of streamlines, coloured by direction "
                             "(red left-right, green anterior-posterior, blue inferior-superior)."),
        "lengths": Figure("dwi", ".svg", "Streamline lengths", "Histogram of streamline lengths (mm)."),
        "sdc": Figure("dwi", ".png", "Susceptibility distortion correction",
                      "Sagittal slices of the b=0 images of the two opposite phase-encoding directions as "
                      "acquired (top two rows) and unwarped with the field estimated from them (next two), each "
                      "with the first corrected image's outline in red, and the field in Hz (bottom). After "
                      "correction the two should look alike. Only sessions with a reversed phase-encoding "
                      "image have it."),
    },
    "dwi_atlas": {
        "connectivity": Figure("dwi", ".png", "Structural connectivity",
                               "Streamline counts between parcels, log10(1 + count)."),
    },
}


def figures_folder(out_dir: Path, subject: str) -> Path:
    return Path(out_dir) / f"sub-{subject}" / "figures"


def figure_path(out_dir: Path, kind: str, desc: str, entities: dict[str, str]) -> Path:
    """Path of figure ``desc`` of ``kind`` (a key of :data:`FIGURES`) for file-name ``entities``."""
    spec = FIGURES[kind][desc]
    return figures_folder(out_dir, entities["sub"]) / bids_name({**entities, "desc": desc}, spec.suffix, spec.extension)


def figure_paths(out_dir: Path, kind: str, entities: dict[str, str]) -> dict[str, Path]:
    """Every figure of ``kind`` for ``entities``, keyed by ``desc``."""
    return {desc: figure_path(out_dir, kind, desc, entities) for desc in FIGURES[kind]}


def save_figure(fig: MplFigure, out_file: str | Path, **savefig) -> Path:
    """Save a figure (format from the suffix). SVGs get no creation date and element ids hashed
    with a fixed salt (matplotlib's default salt is random), so the same input draws the same bytes."""
    path = Path(out_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Date": None} if path.suffix == ".svg" else {}
    with rc_context({"svg.hashsalt": "conntool"}):
        fig.savefig(path, dpi=DPI, facecolor=fig.get_facecolor(), metadata=metadata, **savefig)
    return path
