"""Simulated fMRIPrep derivatives with known functional connectivity.

What ``conntool connectome FMRIPREP_DIR`` reads, without running fMRIPrep: per subject a
preprocessed BOLD series already on the template grid (no motion, no registration left to
do), its brain mask and an fMRIPrep-shaped confounds TSV + JSON.

Signal model (per voxel ``x`` of the head, volume ``t``)::

    bold = B(x) * s(t) * (1 + drift(t) + a_sig * gm(x) * n_{parcel(x)}(t)        neural, planted FC
                          + a_glob * w_glob(x) * g(t)                            global signal
                          + a_phys * (w_csf(x) p_csf(t) + w_wm(x) p_wm(t))       physiology
                          + a_loc * sum_j v_j(x) q_j(t)                          deep WM / ventricles
                          - a_sh * w_sh(x) * sum_k (d trans_k(t))**2)            spin history
           - rho * G(x) . m(t)                                                   residual motion
           + thermal noise

``B`` is a tissue baseline (GM 900, WM 650, CSF 1400, a 300 shell of "head" around the
brain: the series is not skull-stripped), ``s(t)`` T1 saturation of the first volumes
(the non-steady-state volumes), ``n`` parcel signals with a block (network) correlation
(`conntool.simulate.network_covariance`), ``w_*`` smooth random spatial maps (the global
signal mostly in grey matter, the WM and CSF signals in their tissue and partly in grey
matter). ``v_j`` are signed patterns confined to WM or CSF (tissue probability to the
4th power) that average to zero over the WM / CSF masks: the mean WM and CSF signals do
not see them, CompCor does (several components per mask, as in real data).
``m(t)`` are the head-motion parameters written in the confounds (trans mm, rot rad);
``G`` is the first-order effect of a small rigid displacement on the baseline
(``grad B`` for translations, ``r x grad B`` for rotations), so the realignment residual
``rho * m`` is an edge artefact. Every nuisance term that reaches grey matter is in the
span of fMRIPrep's 36 parameters (motion with derivatives and squares, WM, CSF, global
signal, each with derivative and square): regressing them recovers the planted
connectivity, leaving them in does not (tests: r >= 0.8 against about 0.7).

Confounds are computed from the written data as fMRIPrep computes them (nipype's
CompCor, DVARS and non-steady-state code, Power's FD, Jenkinson's RMS deviation, its
``derivative1``/``power2`` expansions), under the column names of the fMRIPrep 21
confounds file nilearn ships for its tests; families whose size depends on the data
(CompCor components, cosines, outlier one-hots) have as many columns as the data give.

Layout (``space`` defaults to fMRIPrep's ``MNI152NLin2009cAsym``; the grid is
`conntool.templates.NILEARN`'s grid, the nilearn template, so the atlas matches exactly)::

    OUT/dataset_description.json                      DatasetType derivative, GeneratedBy fMRIPrep
    OUT/sub-01/func/sub-01_task-rest_space-<space>_desc-preproc_bold.nii.gz (+ .json)
    OUT/sub-01/func/sub-01_task-rest_space-<space>_desc-brain_mask.nii.gz   (+ .json)
    OUT/sub-01/func/sub-01_task-rest_desc-confounds_timeseries.tsv          (+ .json)
    OUT/sourcedata/simulation/atlas-Sim100_space-MNI152NLin2009aSym_res-02_dseg.nii.gz
    OUT/sourcedata/simulation/atlas-Sim100_dseg.tsv                  (--atlas-dir this folder)
    OUT/sourcedata/simulation/sub-01/sub-01_task-rest_desc-{truth,realised}_relmat.tsv,
        _desc-truth_motion.tsv, _desc-truth_nuisance.tsv, _desc-truth.json
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import image
from scipy import ndimage
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from conntool.outputs import write_json, write_tsv
from conntool.steps.dvars import dvars
from conntool.simulate import head_motion, latent_signals, make_atlas, network_covariance
from conntool.steps.motion import framewise_displacement as motion_fd
from conntool.steps.motion import rigid_matrix, volume_centre
from conntool.templates import NILEARN

TRUTH_SUBDIR = Path("sourcedata") / "simulation"
HEADER_RESOURCE = ("nilearn.interfaces.fmriprep", "data/test-v21_desc-confounds_timeseries.tsv")
FD_THRESHOLD_MM = 0.5       # fMRIPrep's --fd-spike-threshold default
DVARS_THRESHOLD = 1.5       # fMRIPrep's --dvars-spike-threshold default (standardised DVARS)
HIGH_PASS_S = 128.0         # fMRIPrep's CompCor / cosine high-pass cut-off
COMPCOR_VARIANCE = 0.5      # fMRIPrep retains components up to 50 % of the variance
TCOMPCOR_PERCENTILE = 0.02  # tCompCor ROI: the 2 % of brain voxels with the highest temporal SD
FD_RADIUS_MM = 50.0         # Power et al. 2012
RMS_RADIUS_MM = 80.0        # Jenkinson 1999 / MCFLIRT's rms files

#: Columns whose number depends on the data; the header lists each family where its block goes.
_FAMILIES = {family: re.compile(pattern) for family, pattern in [
    ("t_comp_cor", r"^t_comp_cor_\d+$"), ("c_comp_cor", r"^c_comp_cor_\d+$"), ("w_comp_cor", r"^w_comp_cor_\d+$"),
    ("a_comp_cor", r"^a_comp_cor_\d+$"), ("cosine", r"^cosine\d+$"),
    ("non_steady_state_outlier", r"^non_steady_state_outlier\d+$"), ("motion_outlier", r"^motion_outlier\d+$")]}
_MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


@dataclass(frozen=True)
class FmriprepSimulationSettings:
    """Amplitudes (percent of the local baseline) and shapes of the simulated run."""

    n_parcels: int = 100
    n_networks: int = 5
    within_r: float = 0.7
    between_r: float = 0.05
    n_dummy: int = 3
    signal_pct: float = 2.0
    global_pct: float = 3.0
    physio_pct: float = 2.0
    physio_gm_share: float = 0.5       # grey matter's weight on the WM and CSF signals (times a smooth map)
    n_local_sources: int = 6           # per tissue: deep-WM and ventricular signals (CompCor finds them)
    local_pct: float = 3.0
    spin_history_pct: float = 0.5      # per mm² of squared framewise translation
    residual_motion: float = 0.15      # fraction of the head motion realignment leaves (edge artefact)
    noise_pct: float = 1.0
    motion_drift_mm: float = 1.5
    motion_scale: float = 1.0          # multiplies the whole head motion (drift and sudden displacements)
    n_spikes: int = 3
    weight_smoothness_mm: float = 25.0


def confounds_header() -> list[str]:
    """Column names of nilearn's shipped fMRIPrep 21 confounds file (in its order)."""
    package, name = HEADER_RESOURCE
    with resources.files(package).joinpath(name).open() as f:
        return f.readline().rstrip("\n").split("\t")


def _family(column: str) -> str | None:
    return next((family for family, pattern in _FAMILIES.items() if pattern.match(column)), None)


def derivative1(x: np.ndarray) -> np.ndarray:
    """fMRIPrep's ``derivative1``: backward difference, ``n/a`` in the first row."""
    return np.concatenate([[np.nan], np.diff(x)])


def framewise_displacement(motion: np.ndarray, radius_mm: float = FD_RADIUS_MM) -> np.ndarray:
    """Power 2012 FD (nipype ``FramewiseDisplacement``, SPM parameters) with fMRIPrep's ``n/a`` first row."""
    fd = motion_fd(motion, radius_mm)
    fd[0] = np.nan
    return fd


def rms_deviation(motion: np.ndarray, centre: np.ndarray, radius_mm: float = RMS_RADIUS_MM) -> np.ndarray:
    """Relative RMS deviation between consecutive volumes (Jenkinson 1999, MCFLIRT's ``_rel.rms``)."""
    out = [np.nan]
    matrices = [rigid_matrix(m, centre) for m in motion]
    for before, after in zip(matrices[:-1], matrices[1:]):
        delta = after @ np.linalg.inv(before) - np.eye(4)
        a, t = delta[:3, :3], delta[:3, 3] + delta[:3, :3] @ centre
        out.append(np.sqrt(radius_mm ** 2 / 5 * np.trace(a.T @ a) + t @ t))
    return np.asarray(out)


def non_steady_state_volumes(volume_means: np.ndarray) -> int:
    """nipype's ``NonSteadyStateDetector`` (what fMRIPrep runs): the leading outliers among the
    whole-image means of the first 50 volumes."""
    from nipype.algorithms.confounds import is_outlier

    return int(is_outlier(np.asarray(volume_means)[:50]))


def noise_components(series: np.ndarray, tr: float) -> tuple[np.ndarray, dict, np.ndarray]:
    """nipype's ``compute_noise_components`` for one mask with fMRIPrep's settings (cosine pre-filter
    at 128 s, per-voxel variance normalisation, components up to 50 % of the variance).

    ``series`` is (voxels, T). The SVD of the (T, voxels) matrix is taken through its T x T Gram
    matrix (same singular values and vectors, up to sign; much faster for voxels >> T).
    Returns the retained components (T, k), their metadata (all components) and the
    non-constant cosine regressors.
    """
    from nipype.algorithms.confounds import _compute_tSTD, cosine_filter

    series = np.array(series, dtype=np.float32)
    series[np.isnan(series.sum(axis=1))] = 0
    filtered, basis = cosine_filter(series, tr, HIGH_PASS_S, failure_mode="error")
    m = filtered.T
    m = m / _compute_tSTD(m, 1.0)
    m = m.astype(np.float64)
    eigval, eigvec = np.linalg.eigh(m @ m.T)
    order = np.argsort(eigval)[::-1]
    s = np.sqrt(np.clip(eigval[order], 0, None))
    u = eigvec[:, order]
    u *= np.where(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])] < 0, -1.0, 1.0)  # a fixed sign
    variance = s ** 2 / np.sum(s ** 2)
    cumulative = np.cumsum(variance)
    n_kept = int(np.searchsorted(cumulative, COMPCOR_VARIANCE) + 1)
    meta = {"singular_value": s, "variance_explained": variance, "cumulative_variance_explained": cumulative,
            "retained": np.arange(len(s)) < n_kept}
    return u[:, :n_kept], meta, basis


def _compcor(series: np.ndarray, masks: dict[str, np.ndarray], skip: int, tr: float):
    """CompCor of (voxels, T) series over several voxel masks after ``skip`` volumes, stacked mask
    by mask as nipype does; components zero-padded over the skipped volumes, as nipype's
    ``ignore_initial_volumes``."""
    blocks, meta, basis = [], {"mask": [], "singular_value": [], "variance_explained": [],
                               "cumulative_variance_explained": [], "retained": []}, None
    for name, mask in masks.items():
        components, info, basis = noise_components(series[mask][:, skip:], tr)
        blocks.append(components)
        meta["mask"] += [name] * len(info["singular_value"])
        for key in ("singular_value", "variance_explained", "cumulative_variance_explained", "retained"):
            meta[key] += list(info[key])
    components = np.hstack(blocks)
    padded = np.zeros((series.shape[1], components.shape[1]))
    padded[skip:] = components
    return padded, basis, meta


def _tcompcor_mask(brain_series: np.ndarray) -> np.ndarray:
    """nipype ``TCompCor``'s ROI among (voxels, T) brain series: the 2 % of voxels with the highest
    temporal SD after removing a quadratic (Legendre) trend."""
    from nipype.algorithms.confounds import _compute_tSTD

    n = brain_series.shape[1]
    basis = np.polynomial.legendre.legvander(np.linspace(-1, 1, n), 2)
    q = np.linalg.qr(basis)[0]
    series = np.asarray(brain_series, np.float32)
    residual = series - (series @ q.astype(np.float32)) @ q.T.astype(np.float32)
    tstd = _compute_tSTD(residual, 0, axis=-1)
    threshold = np.percentile(tstd, np.round(100.0 * (1.0 - TCOMPCOR_PERCENTILE)).astype(int))
    return tstd >= threshold


def _split_components(components: np.ndarray, meta: dict, method: str,
                      prefixes: dict[str, str]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict]]:
    """CompCor output as fMRIPrep names it: per mask (``CSF`` → ``c_comp_cor_XX``, ``WM`` → ``w_``,
    ``combined`` → ``a_``; tCompCor → ``t_``), numbered from 00, with the JSON of retained components."""
    families: dict[str, dict[str, np.ndarray]] = {prefix: {} for prefix in prefixes.values()}
    sidecar, column = {}, 0
    masks, retained = np.asarray(meta["mask"]), np.asarray(meta["retained"])
    for mask, prefix in prefixes.items():  # nipype stacks the components mask by mask, in this order
        for i, row in enumerate(np.flatnonzero((masks == mask) & retained)):
            name = f"{prefix}_comp_cor_{i:02d}"
            families[prefix][name] = components[:, column]
            column += 1
            entry = {"CumulativeVarianceExplained": round(float(meta["cumulative_variance_explained"][row]), 10),
                     "Method": method, "Retained": True,
                     "SingularValue": round(float(meta["singular_value"][row]), 10),
                     "VarianceExplained": round(float(meta["variance_explained"][row]), 10)}
            if method == "aCompCor":
                entry["Mask"] = mask
            sidecar[name] = dict(sorted(entry.items()))
    return families, sidecar


class _Grid:
    """The template grid, tissue priors, masks and the baseline image shared by every subject."""

    def __init__(self, resolution_mm: float, atlas: nib.Nifti1Image):
        self.reference = NILEARN.grid(resolution_mm)
        self.affine, self.shape, self.res = self.reference.affine, self.reference.shape[:3], resolution_mm
        priors = NILEARN.tissue_probabilities(self.reference)
        self.gm, self.wm, self.csf = priors["gm"], priors["wm"], priors["csf"]
        self.brain = priors["brain"] > 0.5
        self.head = ndimage.binary_dilation(self.brain, iterations=2)
        self.labels = np.asarray(image.resample_to_img(atlas, self.reference, interpolation="nearest",
                                                       force_resample=True, copy_header=True).dataobj, int)
        self.labels[~self.brain] = 0
        # anatomical CompCor / signal ROIs: confident CSF; WM eroded away from grey matter
        self.csf_mask = self.brain & (self.csf >= 0.9)
        self.wm_mask = ndimage.binary_erosion(self.brain & (self.wm >= 0.9))
        if min(self.csf_mask.sum(), self.wm_mask.sum()) < 20:
            raise ValueError(f"resolution {resolution_mm} mm: too coarse for WM and CSF masks (use <= 4 mm)")
        self.baseline = np.where(self.brain, 900 * self.gm + 650 * self.wm + 1400 * self.csf,
                                 np.where(self.head, 300.0, 0.0))
        grad = np.stack(np.gradient(self.baseline, resolution_mm), axis=-1)   # intensity per mm
        centre = volume_centre(self.reference)
        r = nib.affines.apply_affine(self.affine, np.stack(np.indices(self.shape), axis=-1)) - centre
        self.centre = centre
        self.head_mm = r[self.head]
        # intensity change per unit of (trans mm, rot rad) of a small rigid displacement
        self.motion_gain = np.concatenate([grad, np.cross(r, grad)], axis=-1)[self.head]

    def smooth_weight(self, rng: np.random.Generator, smoothness_mm: float) -> np.ndarray:
        """A smooth random field over the head voxels, scaled to [0, 1]: a sum of 8 plane waves of
        random direction and phase, with wavelengths of 1.5-3 times ``smoothness_mm``."""
        directions = rng.standard_normal((8, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavenumbers = directions * (2 * np.pi / (smoothness_mm * rng.uniform(1.5, 3, (8, 1))))
        field = np.cos(self.head_mm @ wavenumbers.T + rng.uniform(0, 2 * np.pi, 8)).sum(axis=1)
        return (field - field.min()) / (field.max() - field.min())


def _outer(weights: np.ndarray, series: np.ndarray) -> np.ndarray:
    return np.multiply.outer(weights.astype(np.float32), series.astype(np.float32))


def _simulate_subject(out_dir: Path, subject: str, grid: _Grid, s: FmriprepSimulationSettings, seed: int,
                      n_volumes: int, tr: float, space: str) -> dict:
    rng = np.random.default_rng(seed)
    head = grid.head
    gm, wm, csf = grid.gm[head], grid.wm[head], grid.csf[head]
    in_brain = grid.brain[head]
    label = grid.labels[head]
    base = grid.baseline[head]

    def smooth() -> np.ndarray:
        return grid.smooth_weight(rng, s.weight_smoothness_mm)

    cov, networks = network_covariance(s.n_parcels, s.n_networks, s.within_r, s.between_r, rng)
    duration = n_volumes * tr
    neural = latent_signals(cov, duration, tr, rng)[:n_volumes]

    def source(band_hz):
        return latent_signals(np.eye(1), duration, tr, rng, band_hz=band_hz)[:n_volumes, 0]

    nuisance = {"global_signal": source((0.005, 0.1)), "physio_csf": source((0.01, 0.2)),
                "physio_wm": source((0.01, 0.2))}
    local = {f"local_{tissue}_{i}": source((0.01, 0.2)) for tissue in ("csf", "wm") for i in range(s.n_local_sources)}
    motion = s.motion_scale * head_motion(n_volumes, s.motion_drift_mm, s.n_spikes, rng)
    w_glob = (gm + 0.3 * (wm + csf)) * 2 * smooth()  # mostly grey matter; a smooth map from 0 to 2
    w_csf = 0.5 * csf + s.physio_gm_share * gm * smooth()
    w_wm = 0.5 * wm + s.physio_gm_share * gm * smooth()
    w_sh = in_brain * smooth()
    w_local = {}
    for name in local:  # deep-WM / ventricular patterns, signed, averaging to 0 over their tissue's mask
        tissue_w = (csf if "_csf_" in name else wm) ** 4
        pattern = 2 * smooth() - 1
        in_mask = (grid.csf_mask if "_csf_" in name else grid.wm_mask)[head]
        w_local[name] = tissue_w * (pattern - (tissue_w * pattern)[in_mask].sum() / tissue_w[in_mask].sum())

    saturation = np.ones(n_volumes)
    saturation[:s.n_dummy] = 1 + 0.5 ** np.arange(s.n_dummy)  # T1 saturation: 2, 1.5, 1.25, ...
    lin = np.linspace(0, 1, n_volumes)
    drift = 0.005 * lin ** 2 + 0.01 * (2 * lin - 1)
    step = np.vstack([np.zeros((1, 6)), np.diff(motion, axis=0)])
    spin_history = (step[:, :3] ** 2).sum(axis=1)

    # relative change of the baseline, (voxels, T): neural signal, then every spatially weighted source at once
    weights = [np.ones(len(base)), s.global_pct / 100 * w_glob, s.physio_pct / 100 * w_csf,
               s.physio_pct / 100 * w_wm, *(s.local_pct / 100 * w for w in w_local.values()),
               -s.spin_history_pct / 100 * w_sh]
    sources = [drift, nuisance["global_signal"], nuisance["physio_csf"], nuisance["physio_wm"],
               *(local[name] for name in w_local), spin_history]
    series = np.stack(weights, axis=1).astype(np.float32) @ np.stack(sources).astype(np.float32)
    series += (s.signal_pct / 100 * np.where(label > 0, gm, 0.0)).astype(np.float32)[:, None] \
        * neural.astype(np.float32).T[np.maximum(label - 1, 0)]
    series += 1
    series *= _outer(base, saturation)
    series -= (s.residual_motion * grid.motion_gain @ motion.T).astype(np.float32)
    series += rng.normal(0, s.noise_pct / 100 * grid.baseline[grid.brain].mean(), series.shape).astype(np.float32)

    data = np.zeros(grid.shape + (n_volumes,), np.float32, order="F")  # NIfTI's order: fast to write
    data[head] = series
    func_dir = out_dir / f"sub-{subject}" / "func"
    func_dir.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{subject}_task-rest"
    bold_img = nib.Nifti1Image(data, grid.affine)
    bold_img.header.set_xyzt_units("mm", "sec")
    bold_img.header["pixdim"][4] = tr
    nib.save(bold_img, func_dir / f"{stem}_space-{space}_desc-preproc_bold.nii.gz")
    del data, bold_img
    write_json(func_dir / f"{stem}_space-{space}_desc-preproc_bold.json",
               {"RepetitionTime": tr, "SkullStripped": False, "TaskName": "rest"})
    nib.save(nib.Nifti1Image(grid.brain.astype(np.uint8), grid.affine),
             func_dir / f"{stem}_space-{space}_desc-brain_mask.nii.gz")
    write_json(func_dir / f"{stem}_space-{space}_desc-brain_mask.json", {"Type": "Brain"})

    columns, sidecar = _confounds(series, grid, motion, tr)
    write_tsv(func_dir / f"{stem}_desc-confounds_timeseries.tsv", pd.DataFrame(columns))
    write_json(func_dir / f"{stem}_desc-confounds_timeseries.json", dict(sorted(sidecar.items())))

    kept = np.arange(s.n_dummy, n_volumes)
    return {"fc": cov, "realised_fc": np.corrcoef(neural[kept].T), "motion": motion, "networks": networks,
            "nuisance": pd.DataFrame(nuisance | local)}


def _confounds(series: np.ndarray, grid: _Grid, motion: np.ndarray, tr: float) -> tuple[dict, dict]:
    """fMRIPrep's confound columns (nilearn's fMRIPrep 21 header order) and their JSON sidecar,
    from the (head voxels, T) series as written."""
    n = series.shape[1]
    head = grid.head
    brain, csf_mask, wm_mask = grid.brain[head], grid.csf_mask[head], grid.wm_mask[head]
    combined = csf_mask | wm_mask
    brain_series = series[brain]
    skip = non_steady_state_volumes(series.sum(axis=0, dtype=np.float64) / np.prod(grid.shape))
    tcc_mask = np.zeros_like(brain)
    tcc_mask[brain] = _tcompcor_mask(brain_series[:, skip:])
    values = {"global_signal": brain_series.mean(axis=0, dtype=np.float64),
              "csf": series[csf_mask].mean(axis=0, dtype=np.float64),
              "white_matter": series[wm_mask].mean(axis=0, dtype=np.float64),
              "csf_wm": series[combined].mean(axis=0, dtype=np.float64),
              "tcompcor": series[tcc_mask].mean(axis=0, dtype=np.float64)}
    sidecar = {name: {"Method": "Mean"} for name in values}
    for name in ("global_signal", "csf", "white_matter"):
        values[f"{name}_derivative1"] = derivative1(values[name])
    values.update({name: motion[:, k] for k, name in enumerate(_MOTION)})
    for name in _MOTION:
        values[f"{name}_derivative1"] = derivative1(values[name])
    for name in list(values):
        if name in _MOTION or name in ("global_signal", "csf", "white_matter") or name.endswith("_derivative1"):
            values[f"{name}_power2"] = values[name] ** 2
    values["std_dvars"], values["dvars"] = dvars(lambda: [brain_series], remove_zerovariance=True, variance_tol=1e-7)
    values["framewise_displacement"] = framewise_displacement(motion)
    values["rmsd"] = rms_deviation(motion, grid.centre)

    acomp, basis, meta = _compcor(series, {"CSF": csf_mask, "WM": wm_mask, "combined": combined}, skip, tr)
    families, sidecar_a = _split_components(acomp, meta, "aCompCor", {"CSF": "c", "WM": "w", "combined": "a"})
    tcomp, _, tmeta = _compcor(series, {"tCompCor": tcc_mask}, skip, tr)
    tfamily, sidecar_t = _split_components(tcomp, tmeta, "tCompCor", {"tCompCor": "t"})
    families = {f"{prefix}_comp_cor": cols for prefix, cols in (families | tfamily).items()}
    sidecar.update(sidecar_a | sidecar_t)
    cosines = np.zeros((n, basis.shape[1] if basis.size else 0))  # tCompCor's pre-filter basis, zero-padded
    if basis.size:
        cosines[skip:] = basis
    families["cosine"] = {f"cosine{i:02d}": cosines[:, i] for i in range(cosines.shape[1])}
    families["non_steady_state_outlier"] = {f"non_steady_state_outlier{i:02d}": np.eye(n)[:, i] for i in range(skip)}
    with np.errstate(invalid="ignore"):
        outliers = np.flatnonzero((values["framewise_displacement"] > FD_THRESHOLD_MM)
                                  | (values["std_dvars"] > DVARS_THRESHOLD))
    families["motion_outlier"] = {f"motion_outlier{i:02d}": np.eye(n)[:, t] for i, t in enumerate(outliers)}

    columns, done = {}, set()
    for name in confounds_header():
        family = _family(name)
        if family is None:
            if name not in values:
                raise RuntimeError(f"confound column {name!r} of nilearn's fMRIPrep header is not simulated")
            columns[name] = values[name]
        elif family not in done:
            done.add(family)
            columns.update(families[family])
    return columns, sidecar


def simulate_fmriprep_dataset(out_dir: Path, n_subjects: int, seed: int, *, n_volumes: int = 200, tr: float = 2.0,
                              resolution_mm: float = 3.0, space: str = "MNI152NLin2009cAsym",
                              settings: FmriprepSimulationSettings = FmriprepSimulationSettings(),
                              motion_scales: Sequence[float] | None = None) -> None:
    """Write an fMRIPrep-shaped derivatives folder of ``n_subjects`` with known connectivity.

    ``motion_scales`` (one per subject) sets each subject's ``motion_scale``, so that head
    motion, and the artefacts it leaves, differ across the cohort (for QC-FC).

    Ground truth (planted and realised FC, motion, nuisance series) and the atlas the
    parcel signals were planted in go to ``out_dir/sourcedata/simulation`` (usable as
    ``--atlas-dir``; the atlas is ``Sim<n_parcels>``). The same seed gives identical files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "dataset_description.json",
               {"Name": "conntool simulation (fMRIPrep-shaped derivatives)", "BIDSVersion": "1.4.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "fMRIPrep", "Version": "21.0.0",
                                 "Description": "simulated by conntool: shaped as fMRIPrep 21 outputs, "
                                                "not produced by fMRIPrep"},
                                {"Name": "conntool simulate --fmriprep"}],
                "SimulationSeed": seed})
    truth_dir = out_dir / TRUTH_SUBDIR
    truth_dir.mkdir(parents=True, exist_ok=True)
    atlas, names = make_atlas(settings.n_parcels, seed)
    atlas_name = f"Sim{settings.n_parcels}"
    nib.save(atlas, truth_dir / f"atlas-{atlas_name}_space-{NILEARN.name}_res-02_dseg.nii.gz")
    write_tsv(truth_dir / f"atlas-{atlas_name}_dseg.tsv",
              pd.DataFrame({"index": np.arange(1, len(names) + 1), "name": names}))
    grid = _Grid(resolution_mm, atlas)
    for k in range(n_subjects):
        subject = f"{k + 1:02d}"
        own = settings if motion_scales is None else replace(settings, motion_scale=float(motion_scales[k]))
        with threadpool_limits(limits=1, user_api="blas"):  # small products: faster, and core-count independent
            truth = _simulate_subject(out_dir, subject, grid, own, seed * 1000 + k, n_volumes, tr, space)
        sub_dir = truth_dir / f"sub-{subject}"
        sub_dir.mkdir(exist_ok=True)
        write_tsv(sub_dir / f"sub-{subject}_task-rest_desc-truth_relmat.tsv", pd.DataFrame(truth["fc"], columns=names))
        write_tsv(sub_dir / f"sub-{subject}_task-rest_desc-realised_relmat.tsv",
                  pd.DataFrame(truth["realised_fc"], columns=names))
        write_tsv(sub_dir / f"sub-{subject}_task-rest_desc-truth_motion.tsv",
                  pd.DataFrame(truth["motion"], columns=_MOTION))
        write_tsv(sub_dir / f"sub-{subject}_task-rest_desc-truth_nuisance.tsv", truth["nuisance"])
        write_json(sub_dir / f"sub-{subject}_task-rest_desc-truth.json",
                   {"NonSteadyStateVolumes": settings.n_dummy, "Networks": truth["networks"].tolist(),
                    "Seed": seed * 1000 + k, "Atlas": atlas_name, "Space": space, "RepetitionTime": tr,
                    "ResolutionMM": resolution_mm, "Settings": json.loads(json.dumps(asdict(own)))})
