"""Synthetic diffusion MRI with fibre bundles planted between chosen parcels.

Bundles are spindles of circular arcs in template space between the centres of parcel
pairs; voxels inside a spindle get a prolate tensor along the arc (multi-tensor signal with an
isotropic partial volume), other brain voxels isotropic grey-matter or CSF signal. The
planted structural connectivity (1 per bundle) is the ground truth.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
from dipy.core.sphere import HemiSphere, disperse_charges
from dipy.sims.voxel import multi_tensor

from conntool.steps.resample import apply_affine_to_coords, grid_world_coords

B_VALUE = 1000.0
SPINDLE_HALF_WIDTH_MM = 5.0
BUNDLE_GAP_MM = 10.0
FIBRE_EVALS = np.array([1.7e-3, 0.3e-3, 0.3e-3])


def gradient_scheme(shells: tuple[tuple[float, int], ...], n_b0: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """b-values and unit b-vectors: ``n_b0`` b=0, then for each (b-value, n) of ``shells``
    n evenly dispersed directions at that b-value."""
    bvals, bvecs = [np.zeros(n_b0)], [np.zeros((n_b0, 3))]
    for b_value, n_directions in shells:
        theta = np.arccos(rng.uniform(-1, 1, n_directions))
        phi = rng.uniform(0, 2 * np.pi, n_directions)
        dispersed, _ = disperse_charges(HemiSphere(theta=theta, phi=phi), 2000)
        bvecs.append(dispersed.vertices)
        bvals.append(np.full(n_directions, float(b_value)))
    return np.concatenate(bvals), np.vstack(bvecs)


def choose_bundles(atlas: nib.Nifti1Image, csf: np.ndarray, n_bundles: int,
                   rng: np.random.Generator) -> list[tuple[int, int]]:
    """Parcel pairs 50-90 mm apart whose straight path crosses no CSF and no other parcel; each
    parcel in one bundle at most.

    As in a brain, bundles run through white matter and end in grey matter. They also stay
    ``BUNDLE_GAP_MM`` clear of one another: a tensor model can follow each of them (crossing
    fibres test the fibre model, not the connectome's assembly). ``csf`` is the template CSF
    probability on the atlas grid.
    """
    from scipy import ndimage

    labels = np.asarray(atlas.dataobj)
    ids = [int(i) for i in np.unique(labels) if i > 0]
    centroids = {i: _centroid(labels, atlas.affine, i) for i in ids}
    to_voxel = np.linalg.inv(atlas.affine)

    def clear_path(a: int, b: int) -> bool:
        ijk = apply_affine_to_coords(to_voxel, np.linspace(centroids[a], centroids[b], 100))
        crossed = labels[tuple(np.rint(ijk).astype(int).T)]
        return bool(ndimage.map_coordinates(csf, ijk.T, order=1).max() < 0.3 and np.isin(crossed, [0, a, b]).all())

    def clear_of_bundles(a: int, b: int) -> bool:
        path = np.linspace(centroids[a], centroids[b], 50)
        return all(np.linalg.norm(path[:, None] - np.linspace(centroids[c], centroids[d], 50)[None], axis=-1).min()
                   > 2 * SPINDLE_HALF_WIDTH_MM + BUNDLE_GAP_MM for c, d in pairs)

    pairs, used = [], set()
    for a in rng.permutation(ids):
        if len(pairs) == n_bundles:
            break
        if a in used:
            continue
        options = [b for b in ids if b not in used and b != a and 50 < np.linalg.norm(centroids[a] - centroids[b]) < 90
                   and clear_path(a, b) and clear_of_bundles(a, b)]
        if options:
            b = int(rng.choice(options))
            pairs.append((int(a), b))
            used |= {int(a), b}
    return [(min(p), max(p)) for p in pairs]


def _centroid(labels: np.ndarray, affine: np.ndarray, label: int) -> np.ndarray:
    """The parcel voxel nearest the parcel's centre of mass (inside the parcel, unlike the centroid)."""
    voxels = np.argwhere(labels == label)
    medoid = voxels[np.argmin(np.linalg.norm(voxels - voxels.mean(axis=0), axis=1))]
    return apply_affine_to_coords(affine, medoid.astype(float))


def dwi_signal(points_mni: np.ndarray, to_subject_linear: np.ndarray, atlas: nib.Nifti1Image,
               bundles: list[tuple[int, int]], priors_at_points: dict[str, np.ndarray], bvals: np.ndarray,
               bvecs: np.ndarray) -> np.ndarray:
    """Signal (N, n_volumes) at points whose template coordinates are ``points_mni``."""
    from dipy.core.gradients import gradient_table

    gtab = gradient_table(bvals, bvecs=bvecs)
    labels = np.asarray(atlas.dataobj)
    n_points = len(points_mni)
    direction = np.zeros((n_points, 3))
    for a, b in bundles:
        start, end = _centroid(labels, atlas.affine, a), _centroid(labels, atlas.affine, b)
        to_start = start - points_mni
        to_end = end - points_mni
        d_start = np.linalg.norm(to_start, axis=1) + 1e-9
        d_end = np.linalg.norm(to_end, axis=1) + 1e-9
        # A spindle of circular arcs through both parcel centres: every point X on such an arc sees
        # the chord at the same angle AXB, and the arc's tangent is the external bisector of AXB, so
        # fibres converge on the two parcels instead of fanning out at the ends.
        seen_angle = np.arccos(np.clip(np.einsum("ij,ij->i", to_start, to_end) / (d_start * d_end), -1, 1))
        chord = np.linalg.norm(end - start)
        inside = seen_angle >= np.pi - 2 * np.arctan(2 * SPINDLE_HALF_WIDTH_MM / chord)
        tangent = to_end / d_end[:, None] - to_start / d_start[:, None]
        subject = tangent[inside] @ to_subject_linear.T
        direction[inside] = subject / np.linalg.norm(subject, axis=1, keepdims=True)
    gm, csf = priors_at_points["gm"], priors_at_points["csf"]
    brain = priors_at_points["brain"] > 0.5
    iso_gm = np.exp(-bvals * 0.8e-3)
    iso_csf = np.exp(-bvals * 3.0e-3)
    signal = np.zeros((n_points, len(bvals)))
    tissue = np.clip(gm + csf, 1e-6, None)
    signal[brain] = (gm[brain, None] * iso_gm + csf[brain, None] * iso_csf) / tissue[brain, None]
    for k in np.flatnonzero(np.any(direction != 0, axis=1)):
        d = direction[k]
        angles = [(np.degrees(np.arccos(np.clip(d[2], -1, 1))), np.degrees(np.arctan2(d[1], d[0])))]
        fibre, _ = multi_tensor(gtab, np.array([FIBRE_EVALS]), S0=1.0, angles=angles, fractions=[100], snr=None)
        signal[k] = 0.85 * fibre + 0.15 * iso_gm
    return signal


def planted_matrix(bundles: list[tuple[int, int]], n_parcels: int) -> np.ndarray:
    matrix = np.zeros((n_parcels, n_parcels))
    for a, b in bundles:
        matrix[a - 1, b - 1] = matrix[b - 1, a - 1] = 1.0
    return matrix


def dwi_grid(shape: tuple[int, int, int], voxel_mm: float) -> nib.Nifti1Image:
    affine = np.diag([voxel_mm] * 3 + [1.0])
    affine[:3, 3] = np.array([0.0, -18.0, 6.0]) - (np.asarray(shape) - 1) / 2 * voxel_mm
    return nib.Nifti1Image(np.zeros(shape, np.uint8), affine)


def simulate_dwi(anatomy, atlas: nib.Nifti1Image, priors: dict[str, np.ndarray], template_affine: np.ndarray,
                 bundles: list[tuple[int, int]], rng: np.random.Generator, snr: float = 30.0,
                 shape: tuple[int, int, int] = (52, 62, 52), voxel_mm: float = 3.0, n_b0: int = 3,
                 shells: tuple[tuple[float, int], ...] = ((B_VALUE, 32),), distort=None):
    """DWI image, b-values and b-vectors for one subject (``anatomy`` maps subject → template),
    and the b=0 images of the reversed phase encoding (None without ``distort``).

    ``distort(points, pe_vector)`` (world points of the grid, world step of one voxel along
    the phase-encoding axis) gives the points each EPI voxel shows and their intensity factor
    (:func:`conntool.simulate.epi_sources`); the series is then phase-encoded along ``j-``
    (anterior → posterior on this grid: AP) and ``n_b0`` b=0 volumes along ``j`` are returned
    as the reversed (PA) image. Without it the series is undistorted.
    """
    from scipy import ndimage

    bvals, bvecs = gradient_scheme(shells, n_b0, rng)
    grid = dwi_grid(shape, voxel_mm)
    grid_points = grid_world_coords(grid).reshape(-1, 3)
    s0 = 1000.0
    sigma = s0 / snr

    def acquire(pe_sign: float, b: np.ndarray, vectors: np.ndarray) -> nib.Nifti1Image:
        sources, intensity = (grid_points, np.ones(len(grid_points))) if distort is None else distort(
            grid_points, pe_sign * grid.affine[:3, 1])
        points = anatomy(sources)
        ijk = apply_affine_to_coords(np.linalg.inv(template_affine), points)
        at_points = {k: ndimage.map_coordinates(v, ijk.T, order=1) for k, v in priors.items()}
        signal = dwi_signal(points, np.linalg.inv(anatomy.to_template)[:3, :3], atlas, bundles, at_points, b, vectors)
        signal *= (intensity * t2_weight(at_points))[:, None]
        noisy = np.sqrt((s0 * signal + rng.normal(0, sigma, signal.shape)) ** 2
                        + rng.normal(0, sigma, signal.shape) ** 2)
        return nib.Nifti1Image(np.rint(noisy.reshape(shape + (len(b),))).astype(np.int16), grid.affine)

    series = acquire(-1.0, bvals, bvecs)
    reversed_b0 = None if distort is None else acquire(1.0, np.zeros(n_b0), np.zeros((n_b0, 3)))
    return series, bvals, bvecs, reversed_b0


def t2_weight(at_points: dict[str, np.ndarray]) -> np.ndarray:
    """b=0 signal relative to white matter (T2 weighting): CSF 2.5, GM 1.3 (typical ratios at
    3 T, TE ≈ 80 ms), from the tissue priors at the points; the contrast that registers b=0
    images to each other and to the T1w."""
    return 1.0 + 0.3 * at_points["gm"] + 1.5 * at_points["csf"]
