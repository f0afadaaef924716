"""BIDS-derivatives files: names, atomic writes, sidecars and provenance."""
from __future__ import annotations

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
    return _atomic(dst, lambda tmp: shutil.copyfile(src, tmp))


def bids_name(entities: dict[str, str], suffix: str, extension: str) -> str:
    """``sub-01_task-rest_space-X_seg-Y_meas-Z_relmat.tsv`` with BIDS entity order."""
    order = ["sub", "ses", "task", "acq", "dir", "run", "space", "res", "seg", "model", "meas", "stat", "desc"]
    parts = [f"{key}-{entities[key]}" for key in order if entities.get(key) not in (None, "")]
    return "_".join(parts + [suffix]) + extension


def check_not_overwriting(paths: list[Path], overwrite: bool) -> None:
    """Refuse (exit 2 at the CLI) when results exist and ``--overwrite`` was not given."""
    existing = [p for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise ConntoolInputError(f"{existing[0]}: output exists ({len(existing)} in all); "
                                 "pass --overwrite to replace")


def dataset_description(out_dir: Path, version: str, config: dict, config_hash: str, command: str,
                        seeds: dict[str, int]) -> Path:
    return write_json(Path(out_dir) / "dataset_description.json", {
        "Name": "conntool derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "conntool", "Version": version, "ConfigHash": config_hash,
                         "Command": command}],
        "RandomSeeds": seeds,
        "PipelineConfig": config,
    })
