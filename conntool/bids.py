"""Find and validate the inputs of one participant in a raw BIDS dataset (pybids).

Everything a run will need is checked here, before a workflow is built or an
output folder made, so bad input stops the run with one line and nothing written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from conntool.errors import ConntoolInputError
from conntool.steps.dwi_preproc import check_gradients


@dataclass(frozen=True)
class BoldRun:
    path: Path
    entities: dict
    tr: float
    slice_times: tuple[float, ...] | None
    n_volumes: int


@dataclass(frozen=True)
class DwiRun:
    path: Path
    bval: Path
    bvec: Path
    entities: dict
    phase_encoding: str | None


@dataclass(frozen=True)
class Participant:
    label: str
    t1w: Path
    bold: tuple[BoldRun, ...] = field(default_factory=tuple)
    dwi: tuple[DwiRun, ...] = field(default_factory=tuple)


def _layout(bids_dir: Path):
    from bids import BIDSLayout

    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise ConntoolInputError(f"{bids_dir}: not a directory")
    if not (bids_dir / "dataset_description.json").is_file():
        raise ConntoolInputError(f"{bids_dir}: not a BIDS dataset (no dataset_description.json)")
    try:
        return BIDSLayout(str(bids_dir), validate=False)
    except Exception as err:  # pybids raises its own and ValueError for malformed datasets
        raise ConntoolInputError(f"{bids_dir}: cannot index BIDS dataset ({err})") from err


def load_image(path: Path, ndim: int) -> nib.Nifti1Image:
    """Load a NIfTI and read all of its data, so truncated files fail here, not mid-run."""
    try:
        img = nib.load(path)
    except Exception as err:
        raise ConntoolInputError(f"{path}: not a readable NIfTI ({err})") from err
    if len(img.shape) != ndim:
        raise ConntoolInputError(f"{path}: {len(img.shape)}D image, expected {ndim}D")
    try:
        np.asanyarray(img.dataobj)
    except Exception as err:
        raise ConntoolInputError(f"{path}: image data unreadable or truncated ({err.__class__.__name__})") from err
    return img


def _sidecar(layout, path: str) -> dict:
    try:
        return layout.get_metadata(path)
    except Exception as err:
        raise ConntoolInputError(f"{path}: cannot read JSON sidecar ({err})") from err


def _bold_run(layout, bids_file) -> BoldRun:
    path = Path(bids_file.path)
    img = load_image(path, 4)
    meta = _sidecar(layout, bids_file.path)
    tr = meta.get("RepetitionTime")
    if tr is None:
        raise ConntoolInputError(f"{path}: RepetitionTime missing from the JSON sidecar")
    if img.shape[-1] < 10:
        raise ConntoolInputError(f"{path}: only {img.shape[-1]} volumes; at least 10 are needed")
    slice_times = meta.get("SliceTiming")
    if slice_times is not None and len(slice_times) != img.shape[2]:
        raise ConntoolInputError(f"{path}: SliceTiming has {len(slice_times)} entries for {img.shape[2]} slices")
    entities = {k: v for k, v in bids_file.get_entities().items() if k in ("subject", "session", "task", "run",
                                                                         "acquisition", "direction")}
    return BoldRun(path, entities, float(tr), tuple(slice_times) if slice_times else None, img.shape[-1])


def _dwi_run(layout, bids_file) -> DwiRun:
    path = Path(bids_file.path)
    stem = str(path).split(".nii")[0]
    bval, bvec = Path(stem + ".bval"), Path(stem + ".bvec")
    for f in (bval, bvec):
        if not f.is_file():
            raise ConntoolInputError(f"{f}: missing (needed beside {path.name})")
    img = load_image(path, 4)
    try:
        bvals, bvecs = np.loadtxt(bval, ndmin=1), np.loadtxt(bvec, ndmin=2)
    except ValueError as err:
        raise ConntoolInputError(f"{bval.name}/{bvec.name}: not numeric text ({err})") from err
    try:
        check_gradients(img.shape[-1], bvals, bvecs, str(path))
    except ValueError as err:
        raise ConntoolInputError(str(err)) from err
    meta = _sidecar(layout, bids_file.path)
    entities = {k: v for k, v in bids_file.get_entities().items() if k in ("subject", "session", "run",
                                                                         "acquisition", "direction")}
    return DwiRun(path, bval, bvec, entities, meta.get("PhaseEncodingDirection"))


def find_participant(bids_dir: Path, label: str | None, modality: str) -> Participant:
    """Inputs of one participant for ``modality`` ('fmri' or 'dmri'), validated."""
    layout = _layout(bids_dir)
    subjects = layout.get_subjects()
    if not subjects:
        raise ConntoolInputError(f"{bids_dir}: no sub-* folders found")
    label = (label or subjects[0]).removeprefix("sub-")
    if label not in subjects:
        raise ConntoolInputError(f"--participant-label {label}: no sub-{label} in {bids_dir}")
    t1ws = layout.get(subject=label, suffix="T1w", extension=[".nii", ".nii.gz"], datatype="anat")
    if not t1ws:
        raise ConntoolInputError(f"{Path(bids_dir) / f'sub-{label}'}: no anat/*_T1w.nii.gz")
    t1w = Path(t1ws[0].path)
    load_image(t1w, 3)
    if modality == "fmri":
        files = layout.get(subject=label, suffix="bold", extension=[".nii", ".nii.gz"], datatype="func")
        if not files:
            raise ConntoolInputError(f"{Path(bids_dir) / f'sub-{label}'}: no func/*_bold.nii.gz")
        return Participant(label, t1w, bold=tuple(_bold_run(layout, f) for f in files))
    files = layout.get(subject=label, suffix="dwi", extension=[".nii", ".nii.gz"], datatype="dwi")
    if not files:
        raise ConntoolInputError(f"{Path(bids_dir) / f'sub-{label}'}: no dwi/*_dwi.nii.gz")
    return Participant(label, t1w, dwi=tuple(_dwi_run(layout, f) for f in files))
