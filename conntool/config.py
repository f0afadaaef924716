"""One typed, immutable configuration object, read from a pipeline preset (YAML).

Every default lives in a preset under ``pipelines/``; the dataclasses below only
describe and validate, so a preset with a missing or unknown key is an error.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from conntool.errors import ConntoolInputError

CONFOUND_STRATEGIES = ("6P", "9P", "24P", "36P", "aCompCor")
FC_MEASURES = ("pearson", "partial", "covariance", "precision")
REGISTRATION_BACKENDS = ("ants", "dipy")


@dataclass(frozen=True)
class Normalization:
    backend: str
    resolution_mm: float


@dataclass(frozen=True)
class Smoothing:
    fwhm_mm: float


@dataclass(frozen=True)
class Confounds:
    strategy: str
    acompcor_components: int


@dataclass(frozen=True)
class Censoring:
    fd_mm: float | None
    dvars_std: float | None
    min_time_s: float


@dataclass(frozen=True)
class TemporalFilter:
    detrend: bool
    high_pass_hz: float | None
    low_pass_hz: float | None


@dataclass(frozen=True)
class Parcellation:
    min_coverage: float


@dataclass(frozen=True)
class Connectivity:
    measures: tuple[str, ...]
    fisher_z: bool


@dataclass(frozen=True)
class FmriConfig:
    dummy_scans: int | str
    slice_timing: bool
    normalization: Normalization
    smoothing: Smoothing
    confounds: Confounds
    censoring: Censoring
    filter: TemporalFilter
    parcellation: Parcellation
    connectivity: Connectivity


@dataclass(frozen=True)
class DmriConfig:
    denoise: str
    gibbs_removal: bool
    motion_correction: bool
    normalization: Normalization
    model: str
    tracking: str
    stopping: str
    fa_threshold: float
    seeds_per_voxel: int
    step_size_mm: float
    max_angle_deg: float
    min_length_mm: float
    max_length_mm: float
    search_radius_mm: float


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    version: int
    description: str
    seed: int
    fmri: FmriConfig | None = None
    dmri: DmriConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Short hash of the full configuration, recorded in provenance."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and simple types."""
    if not isinstance(data, dict):
        raise ConntoolInputError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConntoolInputError(f"{where}: unknown key(s) {', '.join(unknown)}")
    values = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is dataclasses.MISSING:
                raise ConntoolInputError(f"{where}: missing key '{name}'")
            continue
        values[name] = _coerce(hints[name], data[name], f"{where}.{name}")
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        real = [o for o in options if o is not type(None)]
        if len(real) == 1:  # Optional[X]: X's own error is the useful one
            return _coerce(real[0], value, where)
        for option in real:
            try:
                return _coerce(option, value, where)
            except ConntoolInputError:
                continue
        raise ConntoolInputError(f"{where}: {value!r} is not a valid {hint}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConntoolInputError(f"{where}: expected a list")
        return tuple(_coerce(typing.get_args(hint)[0], v, where) for v in value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and isinstance(value, hint) and not (
        hint is int and isinstance(value, bool)
    ):
        return value
    raise ConntoolInputError(f"{where}: {value!r} is not a valid {getattr(hint, '__name__', hint)}")


def _check_choices(cfg: PipelineConfig) -> None:
    def need(value: Any, allowed: tuple, where: str) -> None:
        if value not in allowed:
            raise ConntoolInputError(f"{where}: {value!r} is not one of {', '.join(allowed)}")

    if cfg.fmri is not None:
        f = cfg.fmri
        need(f.confounds.strategy, CONFOUND_STRATEGIES, "fmri.confounds.strategy")
        need(f.normalization.backend, REGISTRATION_BACKENDS, "fmri.normalization.backend")
        for m in f.connectivity.measures:
            need(m, FC_MEASURES, "fmri.connectivity.measures")
        if isinstance(f.dummy_scans, str) and f.dummy_scans != "auto":
            raise ConntoolInputError("fmri.dummy_scans: expected 'auto' or a number")
    if cfg.dmri is not None:
        d = cfg.dmri
        need(d.denoise, ("mppca", "patch2self", "none"), "dmri.denoise")
        need(d.model, ("dti", "csd"), "dmri.model")
        need(d.tracking, ("deterministic", "probabilistic"), "dmri.tracking")
        need(d.stopping, ("fa", "tissue"), "dmri.stopping")
        need(d.normalization.backend, REGISTRATION_BACKENDS, "dmri.normalization.backend")


def config_from_dict(data: dict, source: str) -> PipelineConfig:
    cfg = _build(PipelineConfig, data, source)
    _check_choices(cfg)
    return cfg


def preset_names() -> list[str]:
    root = resources.files("conntool.pipelines")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_text(name_or_path: str) -> tuple[str, str]:
    """Return (source, YAML text) of a preset name or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConntoolInputError(f"{name_or_path}: pipeline file not found")
        return str(path), path.read_text()
    if name_or_path not in preset_names():
        raise ConntoolInputError(
            f"--pipeline {name_or_path}: unknown preset (known: {', '.join(preset_names())})"
        )
    return name_or_path, resources.files("conntool.pipelines").joinpath(f"{name_or_path}.yaml").read_text()


def load_pipeline(name_or_path: str) -> PipelineConfig:
    source, text = preset_text(name_or_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConntoolInputError(f"{source}: not valid YAML ({err.__class__.__name__})") from err
    return config_from_dict(data, source)
