"""One typed, immutable configuration object, read from a pipeline preset (YAML).

Every default lives in a preset under ``pipelines/``; the dataclasses below only
describe and validate, so a preset with a missing or unknown key is an error.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from conntool.errors import ConntoolInputError

if typing.TYPE_CHECKING:
    from importlib.resources.abc import Traversable

FC_MEASURES = ("pearson", "partial", "covariance", "precision")
REGISTRATION_BACKENDS = ("ants", "dipy")
TEMPLATES = ("MNI152NLin2009cAsym", "MNI152NLin2009aSym", "MNI152NLin6Asym")
SEGMENTATION_METHODS = ("atropos", "template")


@dataclass(frozen=True)
class Normalization:
    """T1w → template registration: ``template`` (its TemplateFlow name: used when
    ``$TEMPLATEFLOW_HOME`` holds it, else nilearn's MNI152NLin2009aSym), ``backend``, and the
    grid of the template (and of its tissue priors) the T1w is registered to,
    ``template_resolution_mm``; ``affine_sampling``, the share of the template's voxels the
    DIPY backend's affine steps compute mutual information on (1: all)."""

    template: str
    backend: str
    template_resolution_mm: float
    affine_sampling: float


@dataclass(frozen=True)
class FmriNormalization(Normalization):
    """Normalisation, plus ``resolution_mm``: the template-space grid BOLD is resampled to."""

    resolution_mm: float


@dataclass(frozen=True)
class Segmentation:
    """GM/WM/CSF probabilities of the skull-stripped T1w.

    ``method``: ``atropos`` segments the subject's own T1w (ANTs Atropos, three classes,
    initialised by the template's priors pulled through the inverse warp, which also weigh in
    by ``prior_weight`` in [0, 1]; Markov-random-field smoothing ``mrf_smoothing`` over the
    6-neighbourhood; ``iterations`` EM steps); ``template`` uses the warped priors themselves.
    """

    method: str
    prior_weight: float
    mrf_smoothing: float
    iterations: int


@dataclass(frozen=True)
class PepolarCorrection:
    """Susceptibility distortion correction from spin-echo images of opposite phase-encoding
    directions (PEPOLAR): for DWI the session's b=0 images (a reversed series, or an
    ``fmap/*_epi`` intended for one), every series unwarped before they are combined; for BOLD
    two ``fmap/*_epi`` of opposite directions intended for the run. ``regularization`` weighs
    the field's bending against the two images' disagreement
    (:func:`conntool.steps.pepolar.field_from_pair`)."""

    pepolar: bool
    regularization: float


@dataclass(frozen=True)
class DistortionCorrection(PepolarCorrection):
    """Susceptibility distortion correction of BOLD: ``fieldmap`` uses a run's B0 fieldmap
    (phase difference, two phases or Hz) when it has one, smoothed within the fieldmap's brain
    mask by ``smoothing_fwhm_mm``; otherwise PEPOLAR (see the parent) when the run has a pair."""

    fieldmap: bool
    smoothing_fwhm_mm: float


@dataclass(frozen=True)
class TissueMasks:
    """WM and CSF nuisance masks from the tissue probabilities (Behzadi 2007)."""

    threshold: float
    erode_voxels: int
    min_voxels_to_erode: int


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
    min_segment_volumes: int
    min_time_s: float


@dataclass(frozen=True)
class TemporalFilter:
    detrend: bool
    high_pass_hz: float | None
    low_pass_hz: float | None
    order: int


@dataclass(frozen=True)
class Parcellation:
    min_coverage: float


@dataclass(frozen=True)
class Connectivity:
    measures: tuple[str, ...]
    fisher_z: bool


@dataclass(frozen=True)
class QcThresholds:
    """Limits beyond which the group report flags a run (flags only: nothing is excluded)."""

    max_mean_fd_mm: float
    max_censored_fraction: float
    min_node_coverage: float
    min_coregistration_nmi: float | None
    min_normalization_correlation: float | None


@dataclass(frozen=True)
class FmriConfig:
    dummy_scans: int | str
    slice_timing: bool
    motion_separation_mm: float
    coregistration_sampling: float
    normalization: FmriNormalization
    distortion_correction: DistortionCorrection
    segmentation: Segmentation
    tissue_masks: TissueMasks
    smoothing: Smoothing
    confounds: Confounds
    censoring: Censoring
    filter: TemporalFilter
    parcellation: Parcellation
    connectivity: Connectivity
    qc: QcThresholds


@dataclass(frozen=True)
class DmriConfig:
    denoise: str
    gibbs_removal: bool
    motion_correction: bool
    motion_sampling_proportion: float
    distortion_correction: PepolarCorrection
    normalization: Normalization
    segmentation: Segmentation
    model: str
    dti_odf_power: float
    tracking: str
    stopping: str
    fa_threshold: float
    seed_fa_threshold: float
    seed_wm_threshold: float
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
        need(f.confounds.strategy, tuple(confound_strategy_names()), "fmri.confounds.strategy")
        load_confound_strategy(f.confounds.strategy)
        need(f.normalization.template, TEMPLATES, "fmri.normalization.template")
        need(f.normalization.backend, REGISTRATION_BACKENDS, "fmri.normalization.backend")
        need(f.segmentation.method, SEGMENTATION_METHODS, "fmri.segmentation.method")
        for m in f.connectivity.measures:
            need(m, FC_MEASURES, "fmri.connectivity.measures")
        if isinstance(f.dummy_scans, str):
            need(f.dummy_scans, ("auto",), "fmri.dummy_scans")
    if cfg.dmri is not None:
        d = cfg.dmri
        need(d.denoise, ("mppca", "patch2self", "none"), "dmri.denoise")
        need(d.model, ("dti", "csd"), "dmri.model")
        need(d.tracking, ("deterministic", "probabilistic"), "dmri.tracking")
        need(d.stopping, ("fa", "tissue"), "dmri.stopping")
        need(d.normalization.template, TEMPLATES, "dmri.normalization.template")
        need(d.normalization.backend, REGISTRATION_BACKENDS, "dmri.normalization.backend")
        need(d.segmentation.method, SEGMENTATION_METHODS, "dmri.segmentation.method")
        _require(d.distortion_correction.regularization >= 0, "dmri.distortion_correction.regularization",
                 d.distortion_correction.regularization, "at least 0")
        _require(0 < d.motion_sampling_proportion <= 1, "dmri.motion_sampling_proportion",
                 d.motion_sampling_proportion, "in (0, 1]")
        _require(0 <= d.seed_fa_threshold < 1, "dmri.seed_fa_threshold", d.seed_fa_threshold, "in [0, 1)")
        _require(0 <= d.seed_wm_threshold < 1, "dmri.seed_wm_threshold", d.seed_wm_threshold, "in [0, 1)")
        _require(d.dti_odf_power > 0, "dmri.dti_odf_power", d.dti_odf_power, "positive")


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        shown = f"{value:g}" if isinstance(value, float) else value
        raise ConntoolInputError(f"{key} ({shown}) must be {rule}")


def _check_fmri_ranges(f: FmriConfig) -> None:
    """Numeric ranges of the fmri section (the TR-dependent ones: :func:`check_against_tr`)."""
    if isinstance(f.dummy_scans, int):
        _require(f.dummy_scans >= 0, "fmri.dummy_scans", f.dummy_scans, "'auto' or at least 0")
    _require(f.motion_separation_mm >= 0, "fmri.motion_separation_mm", f.motion_separation_mm, "at least 0")
    _require(0 < f.coregistration_sampling <= 1, "fmri.coregistration_sampling", f.coregistration_sampling,
             "in (0, 1]")
    for key in ("resolution_mm", "template_resolution_mm"):
        value = getattr(f.normalization, key)
        _require(value > 0, f"fmri.normalization.{key}", value, "positive")
    _require(0 < f.normalization.affine_sampling <= 1, "fmri.normalization.affine_sampling",
             f.normalization.affine_sampling, "in (0, 1]")
    _check_segmentation(f.segmentation, "fmri.segmentation")
    _require(f.distortion_correction.regularization >= 0, "fmri.distortion_correction.regularization",
             f.distortion_correction.regularization, "at least 0")
    _require(f.distortion_correction.smoothing_fwhm_mm >= 0, "fmri.distortion_correction.smoothing_fwhm_mm",
             f.distortion_correction.smoothing_fwhm_mm, "at least 0")
    masks = f.tissue_masks
    _require(0 < masks.threshold < 1, "fmri.tissue_masks.threshold", masks.threshold, "in (0, 1)")
    _require(masks.erode_voxels >= 0, "fmri.tissue_masks.erode_voxels", masks.erode_voxels, "at least 0")
    _require(masks.min_voxels_to_erode >= 0, "fmri.tissue_masks.min_voxels_to_erode", masks.min_voxels_to_erode,
             "at least 0")
    _require(f.smoothing.fwhm_mm >= 0, "fmri.smoothing.fwhm_mm", f.smoothing.fwhm_mm, "at least 0")
    _require(f.confounds.acompcor_components >= 1, "fmri.confounds.acompcor_components",
             f.confounds.acompcor_components, "at least 1")
    c = f.censoring
    for key in ("fd_mm", "dvars_std"):
        value = getattr(c, key)
        _require(value is None or value > 0, f"fmri.censoring.{key}", value, "positive or null")
    _require(c.min_segment_volumes >= 0, "fmri.censoring.min_segment_volumes", c.min_segment_volumes, "at least 0")
    _require(c.min_time_s >= 0, "fmri.censoring.min_time_s", c.min_time_s, "at least 0")
    t = f.filter
    for key in ("high_pass_hz", "low_pass_hz"):
        value = getattr(t, key)
        _require(value is None or value > 0, f"fmri.filter.{key}", value, "positive or null")
    if t.high_pass_hz is not None and t.low_pass_hz is not None:
        _require(t.low_pass_hz > t.high_pass_hz, "fmri.filter.low_pass_hz", t.low_pass_hz,
                 f"above high_pass_hz ({t.high_pass_hz:g})")
    _require(t.order >= 1, "fmri.filter.order", t.order, "at least 1")
    coverage = f.parcellation.min_coverage
    _require(0 < coverage <= 1, "fmri.parcellation.min_coverage", coverage, "in (0, 1]")
    q = f.qc
    _require(q.max_mean_fd_mm > 0, "fmri.qc.max_mean_fd_mm", q.max_mean_fd_mm, "positive")
    for key in ("max_censored_fraction", "min_node_coverage"):
        _require(0 <= getattr(q, key) <= 1, f"fmri.qc.{key}", getattr(q, key), "in [0, 1]")
    measures = f.connectivity.measures
    _require(len(measures) > 0 and len(set(measures)) == len(measures), "fmri.connectivity.measures",
             ", ".join(measures), "a non-empty list without repeats")


def _check_segmentation(s: Segmentation, where: str) -> None:
    _require(0 <= s.prior_weight <= 1, f"{where}.prior_weight", s.prior_weight, "in [0, 1]")
    _require(s.mrf_smoothing >= 0, f"{where}.mrf_smoothing", s.mrf_smoothing, "at least 0")
    _require(s.iterations >= 1, f"{where}.iterations", s.iterations, "at least 1")


def _check_dmri_ranges(d: DmriConfig) -> None:
    """Numeric ranges of the dmri section."""
    _check_segmentation(d.segmentation, "dmri.segmentation")
    _require(d.normalization.template_resolution_mm > 0, "dmri.normalization.template_resolution_mm",
             d.normalization.template_resolution_mm, "positive")
    _require(0 < d.normalization.affine_sampling <= 1, "dmri.normalization.affine_sampling",
             d.normalization.affine_sampling, "in (0, 1]")
    _require(0 < d.fa_threshold < 1, "dmri.fa_threshold", d.fa_threshold, "in (0, 1)")
    _require(d.seeds_per_voxel >= 1, "dmri.seeds_per_voxel", d.seeds_per_voxel, "at least 1")
    _require(d.step_size_mm > 0, "dmri.step_size_mm", d.step_size_mm, "positive")
    _require(0 < d.max_angle_deg <= 90, "dmri.max_angle_deg", d.max_angle_deg, "in (0, 90]")
    _require(d.min_length_mm >= 0, "dmri.min_length_mm", d.min_length_mm, "at least 0")
    _require(d.max_length_mm > d.min_length_mm, "dmri.max_length_mm", d.max_length_mm,
             f"above min_length_mm ({d.min_length_mm:g})")
    _require(d.search_radius_mm >= 0, "dmri.search_radius_mm", d.search_radius_mm, "at least 0")


def config_from_dict(data: dict, source: str) -> PipelineConfig:
    """Build and validate a configuration; every error is one line naming ``source`` and the key."""
    cfg = _build(PipelineConfig, data, source)
    try:
        _require(0 <= cfg.seed < 2 ** 32, "seed", cfg.seed, "in [0, 2**32)")
        _check_choices(cfg)
        if cfg.fmri is not None:
            _check_fmri_ranges(cfg.fmri)
        if cfg.dmri is not None:
            _check_dmri_ranges(cfg.dmri)
    except ConntoolInputError as err:
        raise ConntoolInputError(f"{source}: {err}") from None
    return cfg


def check_against_tr(cfg: PipelineConfig, tr: float, where: str) -> None:
    """Check the preset's temporal filter against one run's repetition time ``tr`` (s).

    Both cut-offs must lie below the Nyquist frequency 1 / (2 ``tr``); ``where`` names the
    run's file in the error.
    """
    if cfg.fmri is None:
        return
    nyquist = 0.5 / tr
    for key in ("high_pass_hz", "low_pass_hz"):
        value = getattr(cfg.fmri.filter, key)
        if value is not None and value >= nyquist:
            raise ConntoolInputError(
                f"{where}: {cfg.name} fmri.filter.{key} ({value:g}) must be below the Nyquist frequency "
                f"({nyquist:g} Hz at RepetitionTime {tr:g} s)")


@dataclass(frozen=True)
class ConfoundStrategy:
    """A nuisance-regression strategy, read from ``pipelines/confounds/<name>.yaml``.

    ``columns`` are confound-table column names, in regression order; an entry starting
    with ``^`` is a regular expression, and stands for every column it matches in full, in
    the table's order.
    """

    name: str
    description: str
    columns: tuple[str, ...]


def _confounds_folder() -> Traversable:
    return resources.files("conntool.pipelines").joinpath("confounds")


def confound_strategy_names() -> list[str]:
    """Names of the shipped confound strategies (``fmri.confounds.strategy`` choices)."""
    return sorted(p.name[:-5] for p in _confounds_folder().iterdir() if p.name.endswith(".yaml"))


@functools.cache
def load_confound_strategy(name: str) -> ConfoundStrategy:
    """Read and validate one confound strategy; an unknown name is an error naming the known ones."""
    if name not in confound_strategy_names():
        raise ConntoolInputError(
            f"confound strategy {name!r} is unknown (known: {', '.join(confound_strategy_names())})")
    where = f"confounds/{name}.yaml"
    strategy = _build(ConfoundStrategy, yaml.safe_load(_confounds_folder().joinpath(f"{name}.yaml").read_text()),
                      where)
    if strategy.name != name:
        raise ConntoolInputError(f"{where}: name {strategy.name!r} differs from the file name")
    if not strategy.columns or len(set(strategy.columns)) != len(strategy.columns):
        raise ConntoolInputError(f"{where}: columns must be a non-empty list without repeats")
    for column in strategy.columns:
        if column.startswith("^"):
            try:
                re.compile(column)
            except re.error as err:
                raise ConntoolInputError(
                    f"{where}: column pattern {column!r} is not a regular expression ({err})") from err
    return strategy


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
