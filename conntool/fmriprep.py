"""Find and validate fMRIPrep derivatives: preprocessed BOLD in a standard space, its brain
mask and its confounds table, per participant and run.

Like :mod:`conntool.bids` for raw data, every check happens here, before any work, so bad or
missing derivative files stop the command with one line naming the file.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from conntool.bids import ENTITY_NAMES, filename_entities, load_image
from conntool.errors import ConntoolInputError

#: Spaces fMRIPrep writes, in the order conntool prefers when ``--space`` is not given.
PREFERRED_SPACES = ("MNI152NLin2009cAsym", "MNI152NLin6Asym", "MNI152NLin2009aSym", "MNI152NLin2009cSym")
_PREPROC = re.compile(r"_desc-preproc_bold\.nii(\.gz)?$")


@dataclass(frozen=True)
class PreprocRun:
    """One fMRIPrep-preprocessed BOLD run in a standard space.

    ``entities`` uses pybids names (``subject``, ``task``, ...) without ``space``/``res``,
    like :class:`conntool.bids.BoldRun`; ``n_dummy`` leading volumes are flagged as
    non-steady-state in the confounds table.
    """

    path: Path
    mask: Path
    confounds: Path
    entities: dict
    space: str
    tr: float
    n_volumes: int
    n_dummy: int


@dataclass(frozen=True)
class PreprocParticipant:
    label: str
    bold: tuple[PreprocRun, ...]


def _spaces(files: list[Path]) -> list[str]:
    return sorted({filename_entities(f).get("space", "") for f in files} - {""})


def choose_space(found: list[str], wanted: str | None, where: Path) -> str:
    """``wanted`` if fMRIPrep wrote it, else the first of :data:`PREFERRED_SPACES` it wrote."""
    if wanted is not None:
        if wanted not in found:
            raise ConntoolInputError(f"--space {wanted}: not in {where} (found: {', '.join(found) or 'none'})")
        return wanted
    for space in PREFERRED_SPACES:
        if space in found:
            return space
    raise ConntoolInputError(f"{where}: no preprocessed BOLD in a standard MNI space (found: "
                             f"{', '.join(found) or 'none'}); pass --space")


def _sibling(bold: Path, replace: str, by: str, what: str) -> Path:
    path = bold.with_name(re.sub(replace, by, bold.name))
    if not path.is_file():
        raise ConntoolInputError(f"{bold}: its {what} {path.name} is missing")
    return path


def _confounds_table(bold: Path) -> Path:
    """The run's confounds TSV: same entities less ``space``/``res``/``desc`` (fMRIPrep ≥ 20.2
    names it ``desc-confounds_timeseries``, earlier versions ``desc-confounds_regressors``)."""
    stem = re.sub(r"_(space|res|den|desc)-[A-Za-z0-9]+", "", _PREPROC.sub("", bold.name))
    for suffix in ("_desc-confounds_timeseries.tsv", "_desc-confounds_regressors.tsv"):
        if (bold.parent / (stem + suffix)).is_file():
            return bold.parent / (stem + suffix)
    raise ConntoolInputError(f"{bold}: its confounds table {stem}_desc-confounds_timeseries.tsv is missing")


def _repetition_time(bold: Path, img: nib.Nifti1Image) -> float:
    sidecar = Path(str(bold).split(".nii")[0] + ".json")
    tr = None
    if sidecar.is_file():
        try:
            tr = json.loads(sidecar.read_text()).get("RepetitionTime")
        except json.JSONDecodeError as err:
            raise ConntoolInputError(f"{sidecar}: not valid JSON ({err.msg})") from err
    if tr is None and img.header.get_xyzt_units()[1] in ("sec", "msec"):
        tr = float(img.header.get_zooms()[3]) / (1000 if img.header.get_xyzt_units()[1] == "msec" else 1)
    if isinstance(tr, bool) or not isinstance(tr, (int, float)) or not np.isfinite(tr) or tr <= 0:
        raise ConntoolInputError(f"{bold}: no valid RepetitionTime (sidecar or header), got {tr!r}")
    return float(tr)


def _preproc_run(bold: Path, space: str) -> PreprocRun:
    img = load_image(bold, 4)
    mask_path = _sibling(bold, r"_desc-preproc_bold\.nii(\.gz)?$", r"_desc-brain_mask.nii\1", "brain mask")
    mask = load_image(mask_path, 3)
    if mask.shape != img.shape[:3] or not np.allclose(mask.affine, img.affine, atol=1e-3):
        raise ConntoolInputError(f"{mask_path}: grid differs from {bold.name}")
    confounds = _confounds_table(bold)
    try:
        table = pd.read_csv(confounds, sep="\t", na_values="n/a")
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ConntoolInputError(f"{confounds}: not a readable TSV ({err.__class__.__name__})") from err
    if len(table) != img.shape[3]:
        raise ConntoolInputError(f"{confounds}: {len(table)} rows for {img.shape[3]} volumes in {bold.name}")
    for column in ("framewise_displacement", "trans_x", "rot_z"):
        if column not in table:
            raise ConntoolInputError(f"{confounds}: no '{column}' column (not an fMRIPrep confounds table?)")
    outliers = table.filter(regex=r"^non_steady_state_outlier_?\d+$").to_numpy().any(axis=1)
    entities = {ENTITY_NAMES[k]: v for k, v in filename_entities(bold).items() if k in ENTITY_NAMES}
    return PreprocRun(bold, mask_path, confounds, entities, space, _repetition_time(bold, img), img.shape[3],
                      int(np.argmin(outliers)) if outliers.any() else 0)


def find_preprocessed(fmriprep_dir: Path, labels: list[str] | None, space: str | None) -> list[PreprocParticipant]:
    """fMRIPrep outputs of participants ``labels`` (every ``sub-*`` when empty) in ``space``."""
    root = Path(fmriprep_dir)
    if not root.is_dir():
        raise ConntoolInputError(f"{root}: not a directory")
    description = root / "dataset_description.json"
    if not description.is_file():
        raise ConntoolInputError(f"{root}: not a BIDS derivatives folder (no dataset_description.json)")
    subjects = sorted(p.name[4:] for p in root.glob("sub-*") if p.is_dir())
    if not subjects:
        raise ConntoolInputError(f"{root}: no sub-* folders found")
    wanted = sorted({label.removeprefix("sub-") for label in labels}) if labels else subjects
    participants = []
    for label in wanted:
        if label not in subjects:
            raise ConntoolInputError(f"--participant-label {label}: no sub-{label} in {root}")
        files = sorted(f for f in (root / f"sub-{label}").glob("**/func/*_desc-preproc_bold.nii*")
                       if _PREPROC.search(f.name))
        if not files:
            raise ConntoolInputError(f"{root / f'sub-{label}'}: no func/*_desc-preproc_bold.nii.gz")
        chosen = choose_space(_spaces(files), space, root / f"sub-{label}")
        in_space = [f for f in files if filename_entities(f).get("space") == chosen]
        participants.append(PreprocParticipant(label, tuple(_preproc_run(f, chosen) for f in in_space)))
    return participants
