"""A synthetic BIDS dataset with known functional connectivity and head motion.

Each subject's anatomy is the nilearn MNI152 template moved by a random affine and a
smooth deformation; its BOLD carries parcel signals with a block (network) covariance,
sampled slice by slice at the SliceTiming times, plus rigid head motion (drift and
spikes), non-steady-state volumes, scanner drift, a WM/CSF physiological nuisance
and thermal noise. Ground truth is written under ``derivatives/simulation``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage, signal
from sklearn.cluster import KMeans

from conntool.outputs import write_json, write_tsv
from conntool.simulate_dwi import choose_bundles, planted_matrix, simulate_dwi
from conntool.steps.dwi_space import world_to_bvecs
from conntool.steps.motion import rigid_matrix, volume_centre
from conntool.steps.resample import apply_affine_to_coords, grid_world_coords
from conntool.steps.segmentation import DSEG_LABELS, TISSUES, hard_labels
from conntool.templates import NILEARN


@dataclass(frozen=True)
class SimulationSettings:
    """What a simulated participant looks like (defaults: the small ``PROFILES["small"]``).

    Sizes: ``t1w_voxel_mm`` (the T1w grid, sampled from the 1 mm template below 2 mm),
    ``bold_shape`` × ``n_volumes`` at ``bold_voxel_mm``, ``dwi_shape`` at ``dwi_voxel_mm`` with
    ``dwi_n_b0`` b=0 volumes and ``dwi_shells`` ((b-value, directions), ...). ``b0_peak_hz``:
    peak off-resonance of a susceptibility field (:func:`b0_field`) that distorts the BOLD along
    ``j`` (``PhaseEncodingDirection`` j, ``TotalReadoutTime`` ``readout_s``) and comes with a
    phase-difference fieldmap (``bold_fieldmap`` ``phasediff``) or a pair of spin-echo images of
    opposite phase encoding (``epi``: ``fmap/*_dir-{AP,PA}_epi``), and that distorts the DWI along ``j-`` and comes with b=0
    images along ``j`` (``fmap/*_dir-PA_epi``); 0 (the default) gives undistorted BOLD and DWI
    and no fieldmap.
    """

    n_parcels: int = 100
    n_networks: int = 5
    within_r: float = 0.7
    between_r: float = 0.05
    n_volumes: int = 243
    n_dummy: int = 3
    tr: float = 2.0
    bold_shape: tuple[int, int, int] = (56, 68, 56)
    bold_voxel_mm: float = 3.0
    signal_pct: float = 2.0
    nuisance_pct: float = 2.0
    noise_pct: float = 1.0
    motion_drift_mm: float = 1.5
    n_spikes: int = 3
    t1w_voxel_mm: float = 2.0
    dwi_shape: tuple[int, int, int] = (52, 62, 52)
    dwi_voxel_mm: float = 3.0
    dwi_n_b0: int = 3
    dwi_shells: tuple[tuple[float, int], ...] = ((1000.0, 32),)
    b0_peak_hz: float = 0.0
    readout_s: float = 0.05
    bold_fieldmap: str = "phasediff"


#: Susceptibility field sources, template world (mm): centre, width (Gaussian sigma, mm) and share
#: of the peak; the air-tissue boundaries above the frontal sinus and orbits (positive) and near
#: the ear canals (negative), where EPI is most displaced.
B0_SOURCES = (((0.0, 45.0, -25.0), 14.0, 1.0), ((-45.0, -15.0, -35.0), 12.0, -0.7),
              ((45.0, -15.0, -35.0), 12.0, -0.7))
FIELDMAP_ECHO_TIMES = (0.00492, 0.00738)  #: s, a Siemens GRE fieldmap's two echoes (ΔTE 2.46 ms)


# Participants of today's sizes. hcp: HCP-like multiband BOLD (2 mm, 600 volumes, TR 0.8 s)
# and three-shell DWI at 2 mm; abcd: ABCD-like BOLD (2.4 mm, 90 x 90 x 60, 383 volumes, TR 0.8 s)
# and four-shell DWI at 1.7 mm (96 directions on b = 500/1000/2000/3000 as 6/15/15/60). Both
# have a 1 mm T1w. small: today's default (2 mm T1w, 3 mm BOLD of 243 volumes, 3 mm DWI of 35).
PROFILES = {
    "small": SimulationSettings(),
    "hcp": SimulationSettings(n_volumes=600, tr=0.8, bold_shape=(96, 114, 96), bold_voxel_mm=2.0, n_spikes=6,
                              t1w_voxel_mm=1.0, dwi_shape=(96, 114, 80), dwi_voxel_mm=2.0, dwi_n_b0=6,
                              dwi_shells=((1000.0, 30), (2000.0, 30), (3000.0, 30))),
    "abcd": SimulationSettings(n_volumes=383, tr=0.8, bold_shape=(90, 90, 60), bold_voxel_mm=2.4,
                               n_spikes=5, t1w_voxel_mm=1.0, dwi_shape=(112, 134, 94), dwi_voxel_mm=1.7, dwi_n_b0=7,
                               dwi_shells=((500.0, 6), (1000.0, 15), (2000.0, 15), (3000.0, 60))),
}


def make_atlas(n_parcels: int, seed: int) -> tuple[nib.Nifti1Image, list[str]]:
    """Grey matter of the template split into ``n_parcels`` compact parcels (k-means)."""
    template = NILEARN.t1w(2.0)
    gm = NILEARN.tissue_probabilities(template)["gm"] > 0.3
    coords = np.argwhere(gm)
    kmeans = KMeans(n_clusters=n_parcels, n_init=1, random_state=seed).fit(coords[::8])
    order = np.argsort(kmeans.cluster_centers_[:, 0] * 1e6 + kmeans.cluster_centers_[:, 1])
    rank = np.empty(n_parcels, int)
    rank[order] = np.arange(n_parcels)
    labels = np.zeros(template.shape, np.int16)
    labels[tuple(coords.T)] = rank[kmeans.predict(coords)] + 1
    return nib.Nifti1Image(labels, template.affine), [f"sim_parcel_{i:03d}" for i in range(1, n_parcels + 1)]


def network_covariance(n_parcels: int, n_networks: int, within: float, between: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Block correlation matrix (random network membership) and the membership."""
    networks = rng.integers(0, n_networks, n_parcels)
    same = networks[:, None] == networks[None, :]
    cov = np.where(same, within, between)
    np.fill_diagonal(cov, 1.0)
    return cov, networks


def latent_signals(cov: np.ndarray, duration_s: float, dt: float, rng: np.random.Generator,
                   band_hz: tuple[float, float] = (0.01, 0.08)) -> np.ndarray:
    """(n_samples, n_parcels) band-limited signals with correlation ``cov``.

    The same filter on independent white series keeps their mixing's correlation.
    """
    n = int(np.ceil(duration_s / dt)) + 1
    white = rng.standard_normal((n, cov.shape[0]))
    sos = signal.butter(3, band_hz, btype="band", fs=1 / dt, output="sos")
    filtered = signal.sosfiltfilt(sos, white, axis=0)
    filtered /= filtered.std(axis=0)
    return filtered @ np.linalg.cholesky(cov).T


def head_motion(n_volumes: int, drift_mm: float, n_spikes: int, rng: np.random.Generator) -> np.ndarray:
    """(T, 6) rigid parameters: slow drift plus a few sudden displacements (mm, rad)."""
    steps = rng.standard_normal((n_volumes, 6))
    drift = ndimage.gaussian_filter1d(np.cumsum(steps, axis=0), 4, axis=0)
    drift -= drift[0]
    drift *= drift_mm / np.abs(drift).max(axis=0)
    drift[:, 3:] = np.deg2rad(drift[:, 3:])  # 1 mm of drift ↔ 1 degree of rotation
    for t in rng.choice(np.arange(10, n_volumes - 5), n_spikes, replace=False):
        drift[t:t + 2, :3] += rng.uniform(-1.5, 1.5, 3)
    return drift


def random_deformation(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth displacement field (X, Y, Z, 3) in mm, about 2-3 mm at most."""
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 8) for _ in range(3)], axis=-1)
    return field * (2.5 / np.abs(field).max())


class _SubjectAnatomy:
    """Maps a subject's world coordinates into the template (affine + smooth warp)."""

    def __init__(self, rng: np.random.Generator, template: nib.Nifti1Image):
        params = np.concatenate([rng.uniform(-5, 5, 3), np.deg2rad(rng.uniform(-5, 5, 3))])
        self.to_template = rigid_matrix(params, np.zeros(3)) @ np.diag(list(rng.uniform(0.95, 1.05, 3)) + [1])
        self.template_affine = template.affine
        self.displacement = random_deformation(rng, template.shape)

    def _shift(self, template_points: np.ndarray) -> np.ndarray:
        ijk = apply_affine_to_coords(np.linalg.inv(self.template_affine), template_points)
        return np.stack([ndimage.map_coordinates(self.displacement[..., k], np.moveaxis(ijk, -1, 0), order=1,
                                                 mode="nearest") for k in range(3)], axis=-1)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        linear = apply_affine_to_coords(self.to_template, points)
        return linear + self._shift(linear)

    def inverse(self, template_points: np.ndarray, n_iter: int = 10) -> np.ndarray:
        """Subject coordinates of template points: solve q + shift(q) = m by fixed point."""
        linear = template_points.copy()
        for _ in range(n_iter):
            linear = template_points - self._shift(linear)
        return apply_affine_to_coords(np.linalg.inv(self.to_template), linear)


def b0_field(template_points: np.ndarray, peak_hz: float) -> np.ndarray:
    """Off-resonance (Hz) at template world ``template_points`` (..., 3): :data:`B0_SOURCES`."""
    field = np.zeros(template_points.shape[:-1])
    for centre, width, share in B0_SOURCES:
        field += share * peak_hz * np.exp(-np.sum((template_points - centre) ** 2, axis=-1) / (2 * width ** 2))
    return field


def epi_sources(grid: np.ndarray, field_at, readout_s: float, pe_vector: np.ndarray,
                n_iter: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Forward EPI distortion: the point each EPI voxel shows, and its intensity factor.

    A true point ``x`` appears at ``y = x + field(x) · readout_s · pe_vector`` (``pe_vector``:
    world step of one voxel along the phase-encoding axis, positive direction), so the voxel at
    world ``grid`` (..., 3) shows ``x = y - field(x) · readout_s · pe_vector``, found by
    fixed-point iteration (it converges while the shift's gradient stays below one voxel per
    voxel); its intensity is the true one divided by the Jacobian ``1 + ∂shift/∂pe`` at ``x``.
    ``field_at`` maps world points (..., 3) to Hz.
    """
    sources = grid.copy()
    for _ in range(n_iter):
        sources = grid - (field_at(sources) * readout_s)[..., None] * pe_vector
    jacobian = 1 + (field_at(sources + pe_vector / 2) - field_at(sources - pe_vector / 2)) * readout_s
    return sources, 1 / jacobian


def _sample(volume: np.ndarray, affine: np.ndarray, points: np.ndarray, order: int) -> np.ndarray:
    ijk = apply_affine_to_coords(np.linalg.inv(affine), points)
    return ndimage.map_coordinates(volume, np.moveaxis(ijk, -1, 0), order=order, mode="constant", cval=0.0)


def _template_fine(voxel_mm: float) -> nib.Nifti1Image:
    """nilearn's 1 mm template (0-1), on a ``voxel_mm`` grid when that is not 1 mm."""
    from nilearn import datasets, image

    fine = datasets.load_mni152_template(resolution=1)
    if voxel_mm == 1.0:
        return fine
    return image.resample_img(fine, target_affine=np.diag([voxel_mm] * 3), interpolation="continuous",
                              force_resample=True, copy_header=True)


def simulate_subject(out_dir: Path, subject: str, atlas: nib.Nifti1Image, settings: SimulationSettings,
                     seed: int, bundles: list[tuple[int, int]] | None = None) -> dict:
    """Write one subject's T1w and BOLD (and DWI when ``bundles`` are given); return its ground truth."""
    rng = np.random.default_rng(seed)
    s = settings
    template = NILEARN.t1w(2.0)
    priors = NILEARN.tissue_probabilities(template)
    anatomy = _SubjectAnatomy(rng, template)

    t1w_source = template if s.t1w_voxel_mm >= 2.0 else _template_fine(s.t1w_voxel_mm)
    t1w_affine = t1w_source.affine.copy()
    t1w_affine[:3, 3] += rng.uniform(-6, 6, 3)
    t1w_img = nib.Nifti1Image(np.zeros(t1w_source.shape, np.float32), t1w_affine)
    t1w_in_template = anatomy(grid_world_coords(t1w_img))
    t1w = _sample(np.asarray(t1w_source.dataobj, float), t1w_source.affine, t1w_in_template, 1)
    t1w = (1000 * t1w + rng.normal(0, 10.0, t1w.shape)).clip(0).astype(np.float32)  # template is 0-1
    tissues = hard_labels({k: _sample(priors[k], template.affine, t1w_in_template, 1) for k in TISSUES},
                          _sample(priors["brain"], template.affine, t1w_in_template, 1) > 0.5)

    bold_affine = np.diag([s.bold_voxel_mm] * 3 + [1.0])
    bold_affine[:3, 3] = np.array([0.0, -18.0, 6.0]) - (np.asarray(s.bold_shape) - 1) / 2 * s.bold_voxel_mm
    grid = grid_world_coords(nib.Nifti1Image(np.zeros(s.bold_shape, np.uint8), bold_affine))
    n_slices = s.bold_shape[2]
    order = np.concatenate([np.arange(0, n_slices, 2), np.arange(1, n_slices, 2)])
    slice_times = np.empty(n_slices)
    slice_times[order] = np.arange(n_slices) * s.tr / n_slices

    cov, networks = network_covariance(s.n_parcels, s.n_networks, s.within_r, s.between_r, rng)
    dt = 0.1
    latent = latent_signals(cov, s.n_volumes * s.tr + s.tr, dt, rng)
    nuisance = latent_signals(np.eye(1), s.n_volumes * s.tr + s.tr, dt, rng, band_hz=(0.005, 0.2))[:, 0]
    fine_t = np.arange(len(latent)) * dt
    motion = head_motion(s.n_volumes, s.motion_drift_mm, s.n_spikes, rng)
    centre = volume_centre(nib.Nifti1Image(np.zeros(s.bold_shape), bold_affine))

    def field_at(points: np.ndarray) -> np.ndarray:
        return b0_field(anatomy(points), s.b0_peak_hz)

    bold_at_rest, intensity = grid, np.ones(s.bold_shape)
    if s.b0_peak_hz:
        bold_at_rest, intensity = epi_sources(grid, field_at, s.readout_s, bold_affine[:3, 1])

    baseline = 900 * priors["gm"] + 650 * priors["wm"] + 1400 * priors["csf"]
    labels = np.asarray(atlas.dataobj, int)
    saturation = np.ones(s.n_volumes)
    saturation[:s.n_dummy] = 1 + 0.5 ** np.arange(s.n_dummy)  # T1 saturation: 2, 1.5, 1.25, ...
    trend = 0.005 * np.linspace(0, 1, s.n_volumes) ** 2 + 0.01 * np.linspace(-1, 1, s.n_volumes)
    bold = np.zeros(s.bold_shape + (s.n_volumes,), np.float32)
    slice_index = np.broadcast_to(np.arange(n_slices), s.bold_shape)
    for t in range(s.n_volumes):
        moved = apply_affine_to_coords(np.linalg.inv(rigid_matrix(motion[t], centre)), bold_at_rest)
        points = anatomy(moved)
        base = _sample(baseline, template.affine, points, 1)
        label = _sample(labels, template.affine, points, 0).astype(int)
        gm, wm, csf = (_sample(priors[k], template.affine, points, 1) for k in ("gm", "wm", "csf"))
        times = t * s.tr + slice_times
        parcel_now = np.stack([np.interp(times, fine_t, latent[:, k]) for k in range(s.n_parcels)], axis=1)
        nuisance_now = np.interp(times, fine_t, nuisance)[slice_index]
        neural = np.where(label > 0, parcel_now[slice_index, np.maximum(label - 1, 0)], 0.0) * gm
        physiology = nuisance_now * (wm + csf + 0.25 * gm)
        bold[..., t] = intensity * base * saturation[t] * (1 + trend[t] + s.signal_pct / 100 * neural
                                                           + s.nuisance_pct / 100 * physiology)
    noise_sd = s.noise_pct / 100 * baseline[baseline > 0].mean()
    for x in range(s.bold_shape[0]):  # the same draws as one call over the whole array, a slab at a time
        bold[x] += rng.normal(0, noise_sd, bold.shape[1:]).astype(np.float32)

    anat_dir = out_dir / f"sub-{subject}" / "anat"
    func_dir = out_dir / f"sub-{subject}" / "func"
    anat_dir.mkdir(parents=True, exist_ok=True)
    func_dir.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(t1w, t1w_affine), anat_dir / f"sub-{subject}_T1w.nii.gz")
    np.rint(np.clip(bold, 0, 32767, out=bold), out=bold)
    bold_img = nib.Nifti1Image(bold.astype(np.int16), bold_affine)
    del bold
    bold_img.header.set_xyzt_units("mm", "sec")
    bold_img.header["pixdim"][4] = s.tr
    nib.save(bold_img, func_dir / f"sub-{subject}_task-rest_bold.nii.gz")
    bold_meta = {"RepetitionTime": s.tr, "SliceTiming": [round(x, 4) for x in slice_times], "TaskName": "rest",
                 "SliceEncodingDirection": "k"}
    true_field = None
    if s.b0_peak_hz:
        bold_meta.update(PhaseEncodingDirection="j", TotalReadoutTime=s.readout_s)
        fmap_rng = np.random.default_rng([seed, 1])
        if s.bold_fieldmap == "phasediff":
            true_field = _write_fieldmap(out_dir / f"sub-{subject}", subject, grid, bold_affine, anatomy, template,
                                         s.b0_peak_hz, fmap_rng)
        else:
            true_field = _write_epi_pair(out_dir / f"sub-{subject}", subject, grid, bold_affine, anatomy,
                                         (template.affine, priors), field_at, s.readout_s, fmap_rng)
    write_json(func_dir / f"sub-{subject}_task-rest_bold.json", bold_meta)

    dwi_field = None
    if bundles is not None:
        distort = (lambda points, pe_vector: epi_sources(points, field_at, s.readout_s, pe_vector)) if s.b0_peak_hz \
            else None
        dwi_img, bvals, bvecs, reversed_b0 = simulate_dwi(anatomy, atlas, priors, template.affine, bundles, rng,
                                                          shape=s.dwi_shape, voxel_mm=s.dwi_voxel_mm, n_b0=s.dwi_n_b0,
                                                          shells=s.dwi_shells, distort=distort)
        dwi_dir = out_dir / f"sub-{subject}" / "dwi"
        dwi_dir.mkdir(parents=True, exist_ok=True)
        stem = dwi_dir / f"sub-{subject}_dwi"
        nib.save(dwi_img, f"{stem}.nii.gz")
        np.savetxt(f"{stem}.bval", bvals[None], fmt="%g")
        np.savetxt(f"{stem}.bvec", world_to_bvecs(bvecs, dwi_img.affine).T, fmt="%.6f")  # BIDS frame
        write_json(Path(f"{stem}.json"), {"PhaseEncodingDirection": "j-", "TotalReadoutTime": s.readout_s})
        if reversed_b0 is not None:
            fmap_dir = out_dir / f"sub-{subject}" / "fmap"
            fmap_dir.mkdir(parents=True, exist_ok=True)
            nib.save(reversed_b0, fmap_dir / f"sub-{subject}_dir-PA_epi.nii.gz")
            write_json(fmap_dir / f"sub-{subject}_dir-PA_epi.json", {
                "PhaseEncodingDirection": "j", "TotalReadoutTime": s.readout_s,
                "IntendedFor": [f"bids::sub-{subject}/dwi/sub-{subject}_dwi.nii.gz"]})
            dwi_field = nib.Nifti1Image(field_at(grid_world_coords(dwi_img)).astype(np.float32), dwi_img.affine)

    true_coordmap = anatomy.inverse(grid_world_coords(template)).astype(np.float32)
    kept = np.arange(s.n_dummy, s.n_volumes)
    ref_time = (slice_times.min() + slice_times.max()) / 2
    at_ref = np.stack([np.interp(kept * s.tr + ref_time, fine_t, latent[:, k]) for k in range(s.n_parcels)], 1)
    return {"fc": cov, "realised_fc": np.corrcoef(at_ref.T), "motion": motion, "networks": networks,
            "fieldmap": true_field, "dwi_fieldmap": dwi_field,
            "coordmap": nib.Nifti1Image(true_coordmap, template.affine), "tissues": nib.Nifti1Image(tissues, t1w_affine)}


def _write_fieldmap(sub_dir: Path, subject: str, grid: np.ndarray, affine: np.ndarray, anatomy, template,
                    peak_hz: float, rng: np.random.Generator) -> nib.Nifti1Image:
    """A Siemens-style GRE fieldmap of the subject at rest on the BOLD grid (``grid``, world):
    ``magnitude1`` (the T1w anatomy) and ``phasediff`` (2π field ΔTE, wrapped, in [-4096, 4096);
    noise outside the head, as a real one has), ``IntendedFor`` the BOLD run. Returns the true
    field (Hz) on that grid."""
    fmap_dir = sub_dir / "fmap"
    fmap_dir.mkdir(parents=True, exist_ok=True)
    points = anatomy(grid)
    field = b0_field(points, peak_hz)
    magnitude = 1000 * _sample(np.asarray(template.dataobj, float), template.affine, points, 1)
    phase = np.angle(np.exp(2j * np.pi * field * (FIELDMAP_ECHO_TIMES[1] - FIELDMAP_ECHO_TIMES[0])))
    phase = np.where(magnitude > 50, phase, rng.uniform(-np.pi, np.pi, phase.shape))
    stem = fmap_dir / f"sub-{subject}"
    nib.save(nib.Nifti1Image(magnitude.astype(np.float32), affine), f"{stem}_magnitude1.nii.gz")
    nib.save(nib.Nifti1Image(np.clip(np.rint(phase * 4096 / np.pi), -4096, 4095).astype(np.int16), affine),
             f"{stem}_phasediff.nii.gz")
    write_json(Path(f"{stem}_magnitude1.json"), {"EchoTime": FIELDMAP_ECHO_TIMES[0]})
    write_json(Path(f"{stem}_phasediff.json"), {
        "EchoTime1": FIELDMAP_ECHO_TIMES[0], "EchoTime2": FIELDMAP_ECHO_TIMES[1],
        "IntendedFor": [f"bids::sub-{subject}/func/sub-{subject}_task-rest_bold.nii.gz"]})
    return nib.Nifti1Image(field.astype(np.float32), affine)


def _write_epi_pair(sub_dir: Path, subject: str, grid: np.ndarray, affine: np.ndarray, anatomy,
                    template_priors: tuple[np.ndarray, dict], field_at, readout_s: float, rng: np.random.Generator,
                    n_volumes: int = 3) -> nib.Nifti1Image:
    """Spin-echo EPI references of the subject at rest on the BOLD grid (``grid``, world),
    phase-encoded along ``j-`` (``dir-AP``) and ``j`` (``dir-PA``) and distorted by the field
    (``field_at``: subject world points → Hz) accordingly, ``n_volumes`` each with noise,
    ``IntendedFor`` the BOLD run (BIDS "Case 4"). ``template_priors``: the template's affine and
    tissue priors. Returns the true field (Hz) on that grid."""
    from conntool.simulate_dwi import t2_weight

    fmap_dir = sub_dir / "fmap"
    fmap_dir.mkdir(parents=True, exist_ok=True)
    template_affine, priors = template_priors
    for direction, sign in (("AP", -1.0), ("PA", 1.0)):
        sources, intensity = epi_sources(grid, field_at, readout_s, sign * affine[:3, 1])
        points = anatomy(sources)
        at_points = {k: _sample(priors[k], template_affine, points, 1) for k in ("gm", "csf", "brain")}
        reference = 1000 * t2_weight(at_points) * at_points["brain"] * intensity
        noisy = reference[..., None] + rng.normal(0, 20.0, reference.shape + (n_volumes,))
        stem = fmap_dir / f"sub-{subject}_dir-{direction}_epi"
        nib.save(nib.Nifti1Image(np.clip(noisy, 0, None).astype(np.float32), affine), f"{stem}.nii.gz")
        write_json(Path(f"{stem}.json"), {
            "PhaseEncodingDirection": "j-" if sign < 0 else "j", "TotalReadoutTime": readout_s,
            "IntendedFor": [f"bids::sub-{subject}/func/sub-{subject}_task-rest_bold.nii.gz"]})
    return nib.Nifti1Image(field_at(grid).astype(np.float32), affine)


def simulate_dataset(out_dir: Path, n_subjects: int = 1, seed: int = 0, modalities: tuple[str, ...] = ("fmri",),
                     settings: SimulationSettings = SimulationSettings()) -> Path:
    """Write a BIDS dataset of ``n_subjects`` with ground truth; returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "dataset_description.json",
               {"Name": "conntool simulation", "BIDSVersion": "1.9.0", "DatasetType": "raw",
                "GeneratedBy": [{"Name": "conntool simulate"}], "SimulationSeed": seed})
    truth_dir = out_dir / "derivatives" / "simulation"
    truth_dir.mkdir(parents=True, exist_ok=True)
    atlas, names = make_atlas(settings.n_parcels, seed)
    atlas_name = f"Sim{settings.n_parcels}"
    nib.save(atlas, truth_dir / f"atlas-{atlas_name}_space-{NILEARN.name}_res-02_dseg.nii.gz")
    write_tsv(truth_dir / f"atlas-{atlas_name}_dseg.tsv",
              pd.DataFrame({"index": np.arange(1, len(names) + 1), "name": names}))
    subjects = [f"{i:02d}" for i in range(1, n_subjects + 1)]
    bundles = None
    if "dmri" in modalities:
        bundles = choose_bundles(atlas, NILEARN.tissue_probabilities(atlas)["csf"], 6, np.random.default_rng(seed))
        write_tsv(truth_dir / "desc-truth_bundles.tsv", pd.DataFrame(bundles, columns=["index_a", "index_b"]))
        write_tsv(truth_dir / f"seg-{atlas_name}_meas-StreamlineCount_desc-truth_relmat.tsv",
                  pd.DataFrame(planted_matrix(bundles, len(names)), columns=names))
    for k, subject in enumerate(subjects):
        truth = simulate_subject(out_dir, subject, atlas, settings, seed * 1000 + k, bundles)
        sub_dir = truth_dir / f"sub-{subject}"
        sub_dir.mkdir(exist_ok=True)
        write_tsv(sub_dir / f"sub-{subject}_task-rest_desc-truth_relmat.tsv", pd.DataFrame(truth["fc"], columns=names))
        write_tsv(sub_dir / f"sub-{subject}_task-rest_desc-realised_relmat.tsv",
                  pd.DataFrame(truth["realised_fc"], columns=names))
        write_tsv(sub_dir / f"sub-{subject}_task-rest_desc-truth_motion.tsv",
                  pd.DataFrame(truth["motion"], columns=["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]))
        nib.save(truth["coordmap"], sub_dir / f"sub-{subject}_from-{NILEARN.name}_to-T1w_desc-truth_coordmap.nii.gz")
        nib.save(truth["tissues"], sub_dir / f"sub-{subject}_desc-truth_dseg.nii.gz")
        if truth["fieldmap"] is not None:
            nib.save(truth["fieldmap"], sub_dir / f"sub-{subject}_desc-truth_fieldmap.nii.gz")
        if truth["dwi_fieldmap"] is not None:
            nib.save(truth["dwi_fieldmap"], sub_dir / f"sub-{subject}_space-dwi_desc-truth_fieldmap.nii.gz")
        write_json(sub_dir / f"sub-{subject}_task-rest_desc-truth.json",
                   {"NonSteadyStateVolumes": settings.n_dummy, "Networks": truth["networks"].tolist(),
                    "Seed": seed * 1000 + k, "Atlas": atlas_name,
                    "Settings": json.loads(json.dumps(settings.__dict__))})
    write_tsv(truth_dir / "desc-truth_dseg.tsv",
              pd.DataFrame({"index": list(DSEG_LABELS.values()), "name": [t.upper() for t in DSEG_LABELS]}))
    write_tsv(out_dir / "participants.tsv", pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects]}))
    return out_dir
