"""Find and validate the inputs of one participant in a raw BIDS dataset (pybids).

Everything a run will need is checked here, before a workflow is built or an
output folder made, so bad input stops the run with one line and nothing written.
Images are read volume block by volume block, never whole, so validating a long
run costs little memory.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from conntool.errors import ConntoolInputError
from conntool.series import opened
from conntool.steps.dwi_preproc import check_gradients
from conntool.steps.fieldmap import pe_axis_and_sign

LOG = logging.getLogger("conntool")

#: BIDS filename keys → pybids entity names (the names ``BoldRun.entities`` uses).
ENTITY_NAMES = {
    "sub": "subject", "ses": "session", "sample": "sample", "task": "task", "tracksys": "tracksys",
    "acq": "acquisition", "nuc": "nucleus", "voi": "volume", "ce": "ceagent", "trc": "tracer", "stain": "stain",
    "rec": "reconstruction", "dir": "direction", "run": "run", "mod": "modality", "echo": "echo", "flip": "flip",
    "inv": "inversion", "mt": "mt", "part": "part", "proc": "processing", "hemi": "hemisphere",
    "recording": "recording", "chunk": "chunk",
}
_AXES = {"i": 0, "j": 1, "k": 2}
_BLOCK_BYTES = 256 * 2**20  # volumes read at once during validation


@dataclass(frozen=True)
class Fieldmap:
    """B0 field information that applies to a run (BIDS ``fmap/``, by ``IntendedFor`` or
    ``B0FieldSource``/``B0FieldIdentifier``).

    ``kind``: ``phasediff`` (``images`` = the phase difference; ``echo_times`` = EchoTime1,
    EchoTime2), ``phases`` (phase1, phase2 with their EchoTime) or ``fieldmap`` (the field
    itself, in ``units`` Hz or rad/s). ``magnitude`` is the (first) magnitude image, the
    anatomy it is registered by; times in s.
    """

    kind: str
    images: tuple[Path, ...]
    magnitude: Path
    echo_times: tuple[float, float] | None = None
    units: str = "rad"

    @property
    def identifier(self) -> str:
        """A name for file names (``fmapid-``): the first image's entities other than subject and
        session, then the kind (``phasediff``, ``acqgre1phasediff``)."""
        return _fmap_identifier(self.images[0], self.kind)


@dataclass(frozen=True)
class PeImage:
    """Volumes of a spin-echo EPI image averaged into one reference for PEPOLAR distortion
    correction (an ``fmap/*_epi``, or the b=0 volumes of a DWI series), with the
    phase-encoding direction and readout time (s) it was acquired with."""

    path: Path
    volumes: tuple[int, ...]
    phase_encoding_dir: str
    readout_s: float

    @property
    def identifier(self) -> str:
        """The ``fmapid-`` of a field estimated with this image (``dirPAepi``, ``dirPAdwi``)."""
        return _fmap_identifier(self.path, self.path.name.split(".")[0].rsplit("_", 1)[-1])


def _fmap_identifier(path: Path, tail: str) -> str:
    """``path``'s entities other than subject and session, then ``tail``, alphanumerics only."""
    entities = filename_entities(path)
    return re.sub(r"[^a-zA-Z0-9]", "", "".join(f"{k}{v}" for k, v in entities.items() if k not in ("sub", "ses"))
                  + tail)


def opposite_pair(first: PeImage, candidates: list[PeImage]) -> tuple[PeImage, PeImage] | None:
    """``first`` and the first of ``candidates`` phase-encoded the opposite way along the same
    axis (None when there is none): the pair a PEPOLAR field is estimated from."""
    axis, sign = pe_axis_and_sign(first.phase_encoding_dir)
    opposite = [c for c in candidates if pe_axis_and_sign(c.phase_encoding_dir) == (axis, -sign)]
    return (first, opposite[0]) if opposite else None


@dataclass(frozen=True)
class BoldRun:
    """One BOLD series and the acquisition facts its processing needs.

    ``slice_times`` are ordered along the voxel ``slice_axis`` (index 0 = voxel 0), whatever
    the sign of ``SliceEncodingDirection``; ``phase_encoding_dir`` is BIDS's ``i|j|k[-]``
    in the image's voxel axes; ``total_readout_time`` in s (None when the sidecar has none).
    """

    path: Path
    entities: dict
    tr: float
    slice_times: tuple[float, ...] | None
    n_volumes: int
    slice_axis: int = 2
    phase_encoding_dir: str | None = None
    total_readout_time: float | None = None
    fieldmap: Fieldmap | None = None
    epi: tuple[PeImage, ...] = ()

    def pepolar_pair(self) -> tuple[PeImage, PeImage] | None:
        """The first two ``fmap/*_epi`` of opposite phase encoding intended for the run (the
        BOLD itself is not used: a gradient-echo image does not have the spin-echo contrast
        the field is estimated from); None when there are none."""
        for k, first in enumerate(self.epi):
            pair = opposite_pair(first, list(self.epi[k + 1:]))
            if pair is not None:
                return pair
        return None


@dataclass(frozen=True)
class DwiRun:
    """One DWI series with its gradient files (found beside it or by BIDS inheritance)."""

    path: Path
    bval: Path
    bvec: Path
    entities: dict
    slice_axis: int = 2
    phase_encoding_dir: str | None = None
    total_readout_time: float | None = None
    epi: tuple[PeImage, ...] = ()


@dataclass(frozen=True)
class Participant:
    label: str
    t1w: Path
    bold: tuple[BoldRun, ...] = field(default_factory=tuple)
    dwi: tuple[DwiRun, ...] = field(default_factory=tuple)


def filename_entities(path: Path) -> dict[str, str]:
    """BIDS key → value pairs of a file name, in file-name order (``sub-01_ses-2_..._bold.nii.gz``).

    Read from the name alone: pybids parses some entities from the whole absolute path,
    so a dataset stored under a folder called ``dwi`` or ``func`` would be misread.
    """
    stem = Path(path).name.split(".")[0]
    return dict(part.split("-", 1) for part in stem.split("_") if "-" in part)


def short_entities(entities: dict) -> dict[str, str]:
    """pybids entity names → BIDS file-name keys (``{"subject": "01"}`` → ``{"sub": "01"}``)."""
    keys = {name: key for key, name in ENTITY_NAMES.items()}
    return {keys[name]: str(value) for name, value in entities.items() if name in keys}


def _entities(path: Path) -> dict:
    return {ENTITY_NAMES[k]: v for k, v in filename_entities(path).items() if k in ENTITY_NAMES}


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


def _check_geometry(path: Path, img: nib.Nifti1Image) -> None:
    affine = img.affine
    zooms = np.asarray(img.header.get_zooms()[:3], float)
    if not np.all(np.isfinite(affine)) or not np.all(zooms > 0):
        raise ConntoolInputError(f"{path}: image affine or voxel sizes are not finite and positive")
    # a singular voxel→world matrix maps the grid onto a plane: no world position is defined
    scale = np.prod(np.linalg.norm(affine[:3, :3], axis=0))
    if scale == 0 or abs(np.linalg.det(affine[:3, :3])) < 1e-6 * scale:
        raise ConntoolInputError(f"{path}: image affine is zero or singular (no valid voxel-to-world mapping)")


def load_image(path: Path, ndim: int | tuple[int, ...], signal: bool = True) -> nib.Nifti1Image:
    """Open a NIfTI of ``ndim`` dimensions (one of them, for a tuple) and check every voxel of
    it, block by block (memory: one block).

    Truncated files, NaN/Inf values and (with ``signal``) an all-zero image fail here,
    not in the middle of a run.
    """
    try:
        img = nib.load(path)
    except Exception as err:
        raise ConntoolInputError(f"{path}: not a readable NIfTI ({err})") from err
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if len(img.shape) not in allowed:
        raise ConntoolInputError(f"{path}: {len(img.shape)}D image, expected {' or '.join(f'{n}D' for n in allowed)}")
    ndim = len(img.shape)
    _check_geometry(path, img)
    n_blocks = img.shape[3] if ndim == 4 else 1
    per_volume = int(np.prod(img.shape[:3])) * img.get_data_dtype().itemsize
    step = max(1, _BLOCK_BYTES // max(per_volume, 1)) if ndim == 4 else 1
    nonzero = False
    try:
        with opened(path) as stream:
            for start in range(0, n_blocks, step):
                block = np.asarray(stream.dataobj[..., start:start + step] if ndim == 4 else stream.dataobj)
                if not np.all(np.isfinite(block)):
                    where = "" if ndim == 3 else f" (volumes {start}-{min(start + step, n_blocks) - 1})"
                    raise ConntoolInputError(f"{path}: image holds NaN or infinite values{where}")
                nonzero = nonzero or bool(np.any(block))
    except ConntoolInputError:
        raise
    except Exception as err:
        raise ConntoolInputError(f"{path}: image data unreadable or truncated ({err.__class__.__name__})") from err
    if signal and not nonzero:
        raise ConntoolInputError(f"{path}: image is all zeros")
    return img


def _sidecar(layout, path: Path) -> dict:
    try:
        return layout.get_metadata(str(path))
    except Exception as err:
        raise ConntoolInputError(f"{path}: cannot read JSON sidecar ({err})") from err


def _positive_seconds(meta: dict, key: str, path: Path, required: bool) -> float | None:
    value = meta.get(key)
    if value is None:
        if required:
            raise ConntoolInputError(f"{path}: {key} missing from the JSON sidecar")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConntoolInputError(f"{path}: {key} must be a positive number of seconds, got {value!r}")
    return float(value)


def _axis(meta: dict, key: str, path: Path, default: str | None) -> str | None:
    value = meta.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or value.rstrip("-") not in _AXES or value.count("-") > 1:
        raise ConntoolInputError(f"{path}: {key} must be one of i, j, k, i-, j-, k-; got {value!r}")
    return value


def _acquisition_geometry(meta: dict, path: Path, shape: tuple[int, ...]) -> tuple[int, str | None, float | None]:
    """(slice axis, phase-encoding direction, total readout time in s) from the sidecar; the
    readout time is ``EffectiveEchoSpacing · (N_PE - 1)`` (BIDS) when only the spacing is given."""
    slice_dir = _axis(meta, "SliceEncodingDirection", path, "k")
    pe_dir = _axis(meta, "PhaseEncodingDirection", path, None)
    readout = _positive_seconds(meta, "TotalReadoutTime", path, required=False)
    spacing = _positive_seconds(meta, "EffectiveEchoSpacing", path, required=False)
    if readout is None and spacing is not None and pe_dir is not None:
        readout = spacing * (shape[_AXES[pe_dir[0]]] - 1)
    return _AXES[slice_dir.rstrip("-")], pe_dir, readout


def _slice_times(meta: dict, path: Path, img, slice_axis: int, tr: float) -> tuple[float, ...] | None:
    times = meta.get("SliceTiming")
    if times is None:
        return None
    n_slices = img.shape[slice_axis]
    if not isinstance(times, list) or not all(isinstance(t, (int, float)) for t in times):
        raise ConntoolInputError(f"{path}: SliceTiming must be a list of numbers")
    if len(times) != n_slices:
        raise ConntoolInputError(f"{path}: SliceTiming has {len(times)} entries for {n_slices} slices "
                                 f"along axis {'ijk'[slice_axis]}")
    values = np.asarray(times, float)
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() >= tr:
        raise ConntoolInputError(f"{path}: SliceTiming values must lie in [0, RepetitionTime={tr:g} s); "
                                 f"found {values.min():g} to {values.max():g}")
    if meta.get("SliceEncodingDirection", "k").endswith("-"):
        values = values[::-1]  # BIDS lists them from the last voxel slice when the direction is negative
    return tuple(values.tolist())


def _bold_run(layout, path: Path) -> BoldRun:
    img = load_image(path, 4)
    meta = _sidecar(layout, path)
    tr = _positive_seconds(meta, "RepetitionTime", path, required=True)
    if img.shape[-1] < 10:
        raise ConntoolInputError(f"{path}: only {img.shape[-1]} volumes; at least 10 are needed")
    header_tr = float(img.header.get_zooms()[3])
    if not math.isclose(header_tr, tr, rel_tol=0.01):
        LOG.warning("%s: NIfTI header TR %g s disagrees with the sidecar's RepetitionTime %g s; "
                    "using the sidecar (BIDS)", path.name, header_tr, tr)
    slice_axis, pe_dir, readout = _acquisition_geometry(meta, path, img.shape)
    fieldmap, epi = _fieldmap_for(layout, path, meta), _epi_for(layout, path, meta)
    found = fieldmap.images[0] if fieldmap else (epi[0].path if epi else None)
    if found is not None and (pe_dir is None or readout is None):
        raise ConntoolInputError(f"{path}: has a fieldmap ({found.name}) but no PhaseEncodingDirection "
                                 "and TotalReadoutTime (or EffectiveEchoSpacing) to apply it with")
    return BoldRun(path, _entities(path), tr, _slice_times(meta, path, img, slice_axis, tr), img.shape[-1],
                   slice_axis, pe_dir, readout, fieldmap, epi)


def _intended_for(meta: dict, subject_dir: Path) -> set[Path]:
    """Absolute paths a fieldmap's ``IntendedFor`` names (``bids::sub-01/func/...`` URIs, or
    paths relative to the subject folder)."""
    entries = meta.get("IntendedFor", [])
    entries = [entries] if isinstance(entries, str) else entries
    found = set()
    for entry in entries:
        if entry.startswith("bids::"):
            found.add((subject_dir.parent / entry.removeprefix("bids::")).absolute())
        else:
            found.add((subject_dir / entry).absolute())
    return found


def _fmap_images_for(layout, run: Path, run_meta: dict, suffix: str) -> list[tuple[Path, dict]]:
    """``fmap/*_<suffix>`` images (with their sidecars) whose ``IntendedFor`` names ``run``
    or whose ``B0FieldIdentifier`` is the run's ``B0FieldSource``."""
    entities = filename_entities(run)
    subject_dir = run.parent.parent if "ses" not in entities else run.parent.parent.parent
    session = {"session": entities["ses"]} if "ses" in entities else {}
    source = run_meta.get("B0FieldSource")
    found = []
    for image in _in_datatype(layout.get(subject=entities["sub"], suffix=suffix, extension=[".nii", ".nii.gz"],
                                         **session), "fmap"):
        meta = _sidecar(layout, image)
        identifiers = meta.get("B0FieldIdentifier", [])
        identifiers = [identifiers] if isinstance(identifiers, str) else identifiers
        if run.absolute() in _intended_for(meta, subject_dir) or (source and source in identifiers):
            found.append((image, meta))
    return found


def _fieldmap_for(layout, bold: Path, bold_meta: dict) -> Fieldmap | None:
    """The fieldmap intended for ``bold`` (:func:`_fmap_images_for`), validated; None when
    there is none. Phase difference, two phases and a direct field map are recognised (BIDS
    "Case 1-3")."""
    for suffix in ("phasediff", "phase1", "fieldmap"):
        for image, meta in _fmap_images_for(layout, bold, bold_meta, suffix):
            return _fieldmap(image, suffix, meta, layout)
    return None


def _epi_for(layout, run: Path, run_meta: dict) -> tuple[PeImage, ...]:
    """The ``fmap/*_epi`` images intended for ``run`` (BIDS "Case 4"), validated: each needs
    its phase-encoding direction and readout time; all their volumes are used."""
    found = []
    for image, meta in _fmap_images_for(layout, run, run_meta, "epi"):
        img = load_image(image, (3, 4))
        _, pe_dir, readout = _acquisition_geometry(meta, image, img.shape)
        if pe_dir is None or readout is None:
            raise ConntoolInputError(f"{image}: an EPI fieldmap needs PhaseEncodingDirection and TotalReadoutTime "
                                     "(or EffectiveEchoSpacing) in its sidecar")
        found.append(PeImage(image, tuple(range(img.shape[3] if img.ndim == 4 else 1)), pe_dir, readout))
    return tuple(found)


def _companion(image: Path, suffix: str) -> Path:
    stem = image.name.split(".nii")[0].rsplit("_", 1)[0]
    for extension in (".nii.gz", ".nii"):
        candidate = image.parent / f"{stem}_{suffix}{extension}"
        if candidate.is_file():
            return candidate
    raise ConntoolInputError(f"{image}: no {stem}_{suffix}.nii[.gz] beside it")


def _fieldmap(image: Path, suffix: str, meta: dict, layout) -> Fieldmap:
    if suffix == "phasediff":
        echo_times = (_positive_seconds(meta, "EchoTime1", image, required=True),
                      _positive_seconds(meta, "EchoTime2", image, required=True))
        images, magnitude, units = (image,), _companion(image, "magnitude1"), "rad"
    elif suffix == "phase1":
        second = _companion(image, "phase2")
        echo_times = (_positive_seconds(meta, "EchoTime", image, required=True),
                      _positive_seconds(_sidecar(layout, second), "EchoTime", second, required=True))
        images, magnitude, units = (image, second), _companion(image, "magnitude1"), "rad"
    else:
        units = meta.get("Units")
        if units not in ("Hz", "rad/s"):
            raise ConntoolInputError(f"{image}: Units must be Hz or rad/s for a fieldmap, got {units!r}")
        echo_times, images, magnitude = None, (image,), _companion(image, "magnitude")
    if echo_times is not None and echo_times[1] <= echo_times[0]:
        raise ConntoolInputError(f"{image}: the second echo time ({echo_times[1]:g} s) must be later than the "
                                 f"first ({echo_times[0]:g} s)")
    reference = load_image(magnitude, 3)
    for other in images:
        if load_image(other, 3, signal=False).shape[:3] != reference.shape[:3]:
            raise ConntoolInputError(f"{other}: grid differs from its magnitude image {magnitude.name}")
    return Fieldmap(suffix if suffix != "phase1" else "phases", images, magnitude, echo_times, units)


def _gradient_file(layout, path: Path, extension: str) -> Path:
    beside = Path(str(path).split(".nii")[0] + extension)
    if beside.is_file():
        return beside
    getter = layout.get_bval if extension == ".bval" else layout.get_bvec
    try:
        found = getter(str(path))
    except Exception:  # pybids raises when no file applies
        found = None
    if not found:
        raise ConntoolInputError(f"{path}: no {extension} file beside it or inherited (BIDS inheritance)")
    return Path(found)


def _dwi_run(layout, path: Path) -> DwiRun:
    bval, bvec = _gradient_file(layout, path, ".bval"), _gradient_file(layout, path, ".bvec")
    img = load_image(path, 4)
    try:
        bvals, bvecs = np.loadtxt(bval, ndmin=1), np.loadtxt(bvec, ndmin=2)
    except ValueError as err:
        raise ConntoolInputError(f"{bval.name}/{bvec.name}: not numeric text ({err})") from err
    for name, values in ((bval, bvals), (bvec, bvecs)):
        if not np.all(np.isfinite(values)):
            raise ConntoolInputError(f"{name}: holds NaN or infinite values")
    if bvals.min() < 0:
        raise ConntoolInputError(f"{bval}: negative b-values")
    try:
        check_gradients(img.shape[-1], bvals, bvecs, str(path))
    except ValueError as err:
        raise ConntoolInputError(str(err)) from err
    meta = _sidecar(layout, path)
    slice_axis, pe_dir, readout = _acquisition_geometry(meta, path, img.shape)
    return DwiRun(path, bval, bvec, _entities(path), slice_axis, pe_dir, readout, _epi_for(layout, path, meta))


def check_combinable(paths: list[Path]) -> None:
    """Series that are combined (concatenated) must share their grid: same shape and affine."""
    first = nib.load(paths[0])
    for other in paths[1:]:
        img = nib.load(other)
        if img.shape[:3] != first.shape[:3] or not np.allclose(img.affine, first.affine, atol=1e-3):
            raise ConntoolInputError(f"{other}: grid {img.shape[:3]} differs from {paths[0].name} "
                                     f"{first.shape[:3]} (shape or orientation); they cannot be combined")


def _in_datatype(files, datatype: str) -> list[Path]:
    """Files whose own folder (not some folder above the dataset) is ``datatype``."""
    return sorted(Path(f.path) for f in files if Path(f.path).parent.name == datatype)


def choose_t1w(paths: list[Path]) -> Path:
    """The T1w a participant's processing uses when the dataset has several.

    Rule: the first session, then the first run, then the first file name (sorted); a
    warning names the one used. (fMRIPrep averages several into a template; conntool
    registers everything to one image, so it uses one.)
    """
    def key(path: Path):
        ents = filename_entities(path)
        return ents.get("ses", ""), ents.get("run", "").zfill(6), path.name

    chosen = sorted(paths, key=key)[0]
    if len(paths) > 1:
        LOG.warning("sub-%s: %d T1w images; using %s (rule: first session, first run, then name)",
                    filename_entities(chosen)["sub"], len(paths), chosen.name)
    return chosen


def find_participants(bids_dir: Path, labels: list[str] | None, modality: str) -> list[Participant]:
    """Inputs of the participants ``labels`` (all in the dataset when None or empty) for
    ``modality`` ('fmri' or 'dmri'), validated, in sorted label order."""
    layout = _layout(bids_dir)
    subjects = sorted(layout.get_subjects())
    if not subjects:
        raise ConntoolInputError(f"{bids_dir}: no sub-* folders found")
    wanted = sorted({label.removeprefix("sub-") for label in labels}) if labels else subjects
    for label in wanted:
        if label not in subjects:
            raise ConntoolInputError(f"--participant-label {label}: no sub-{label} in {bids_dir}")
    return [_participant(layout, Path(bids_dir), label, modality) for label in wanted]


def find_participant(bids_dir: Path, label: str, modality: str) -> Participant:
    """Inputs of one participant (see :func:`find_participants`)."""
    return find_participants(bids_dir, [label], modality)[0]


def _participant(layout, bids_dir: Path, label: str, modality: str) -> Participant:
    images = [".nii", ".nii.gz"]
    t1ws = _in_datatype(layout.get(subject=label, suffix="T1w", extension=images), "anat")
    if not t1ws:
        raise ConntoolInputError(f"{bids_dir / f'sub-{label}'}: no anat/*_T1w.nii.gz")
    t1w = choose_t1w(t1ws)
    load_image(t1w, 3)
    if modality == "fmri":
        files = _in_datatype(layout.get(subject=label, suffix="bold", extension=images), "func")
        if not files:
            raise ConntoolInputError(f"{bids_dir / f'sub-{label}'}: no func/*_bold.nii.gz")
        return Participant(label, t1w, bold=tuple(_bold_run(layout, f) for f in files))
    files = _in_datatype(layout.get(subject=label, suffix="dwi", extension=images), "dwi")
    if not files:
        raise ConntoolInputError(f"{bids_dir / f'sub-{label}'}: no dwi/*_dwi.nii.gz")
    runs = tuple(_dwi_run(layout, f) for f in files)
    for session in sorted({r.entities.get("session", "") for r in runs}):
        check_combinable([r.path for r in runs if r.entities.get("session", "") == session])
    return Participant(label, t1w, dwi=runs)
