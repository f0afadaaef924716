"""BIDS-derivatives files: names, atomic writes, sidecars and provenance."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conntool.errors import ConntoolInputError


def _atomic(path: Path, write) -> Path:
    """Write through ``write(tmp_path)`` to a temporary file beside ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def remove_stale_parts(folder: Path) -> None:
    """Delete temporary files a killed run left mid-write (``.<name>.<random>.part``)."""
    for path in Path(folder).rglob(".*.part"):
        path.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return _atomic(path, write)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=_jsonable)
            f.write("\n")
    return _atomic(path, write)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_tsv(path: Path, frame: pd.DataFrame) -> Path:
    """TSV with a header row; NaN written as BIDS ``n/a``; floats at full precision."""
    return _atomic(path, lambda tmp: frame.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.10g"))


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values="n/a")


def copy_atomic(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically; an uncompressed ``.nii`` sent to a ``.nii.gz`` name is
    gzipped on the way (work files stay uncompressed, which is faster to write and read)."""
    if str(dst).endswith(".nii.gz") and str(src).endswith(".nii"):
        def write(tmp):
            with open(src, "rb") as source, gzip.open(tmp, "wb", compresslevel=1) as target:
                shutil.copyfileobj(source, target, 16 * 2**20)
        return _atomic(dst, write)
    return _atomic(dst, lambda tmp: shutil.copyfile(src, tmp))


#: BIDS entity order (raw entities, then the derivative ones), so every entity of a source
#: file (``echo``, ``ce``, ...) is kept in the names of what is derived from it.
ENTITY_ORDER = ["sub", "ses", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc", "stain", "rec", "dir",
                "run", "mod", "echo", "flip", "inv", "mt", "part", "proc", "hemi", "space", "split", "recording",
                "chunk", "res", "den", "seg", "label", "model", "meas", "stat", "fmapid", "desc"]


def bids_name(entities: dict[str, str], suffix: str, extension: str) -> str:
    """``sub-01_task-rest_space-X_seg-Y_meas-Z_relmat.tsv`` with BIDS entity order."""
    parts = [f"{key}-{entities[key]}" for key in ENTITY_ORDER if entities.get(key) not in (None, "")]
    return "_".join(parts + [suffix]) + extension


def subject_folder(out_dir: Path, entities: dict[str, str], datatype: str) -> Path:
    """``OUT/sub-<label>[/ses-<label>]/<datatype>`` for BIDS file-name ``entities``."""
    folder = Path(out_dir) / f"sub-{entities['sub']}"
    if entities.get("ses"):
        folder = folder / f"ses-{entities['ses']}"
    return folder / datatype


def recorded_config_hash(out_dir: Path, modality: str) -> str | None:
    """Config hash of the ``modality`` ('fmri', 'dmri') results in ``out_dir``, if any were made."""
    path = Path(out_dir) / "dataset_description.json"
    if not path.is_file():
        return None
    try:
        generated = json.loads(path.read_text()).get("GeneratedBy", [])
    except (json.JSONDecodeError, AttributeError):
        return None
    return next((g.get("ConfigHash") for g in generated if g.get("Modality") == modality), None)


def check_not_overwriting(paths: list[Path], overwrite: bool, config_hash: str | None = None,
                          recorded_hash: str | None = None) -> None:
    """Refuse (exit 2 at the CLI) when results exist and ``--overwrite`` was not given.

    Results made with the same configuration (``recorded_hash == config_hash``, and no JSON
    sidecar among them naming another hash) are those of an earlier, interrupted run of the
    same command: the rerun may replace them, so it resumes without ``--overwrite``.
    """
    existing = [Path(p) for p in paths if Path(p).exists()]
    if not existing or overwrite:
        return
    if config_hash is not None and recorded_hash == config_hash:
        others = [p for p in existing if p.suffix == ".json"
                  and json.loads(p.read_text()).get("ConfigHash", config_hash) != config_hash]
        if not others:
            return
        existing = others
    raise ConntoolInputError(f"{existing[0]}: output exists ({len(existing)} in all) from another configuration; "
                             "pass --overwrite to replace")


def dataset_description(out_dir: Path, version: str, modality: str, config: dict, config_hash: str,
                        command: str, seeds: dict[str, int], spaces: list[str]) -> Path:
    """Write (or update) the derivatives' description: one ``GeneratedBy`` entry per modality,
    with the configuration, its hash, the command, the random seeds and the template space(s)
    the outputs are in."""
    path = Path(out_dir) / "dataset_description.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    generated = [g for g in previous.get("GeneratedBy", []) if g.get("Modality") not in (None, modality)]
    generated.append({"Name": "conntool", "Version": version, "Modality": modality, "ConfigHash": config_hash,
                      "Command": command, "RandomSeeds": seeds, "Spaces": spaces,
                      "PipelineConfig": config})
    return write_json(path, {
        "Name": "conntool derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": sorted(generated, key=lambda g: g["Modality"]),
    })
