"""Susceptibility distortion correction from a B0 fieldmap (phase difference, two phases, or Hz).

EPI is displaced along its phase-encoding (PE) axis by ``d = Δf · T_ro`` voxels, where ``Δf``
is the off-resonance field (Hz) and ``T_ro`` the BIDS ``TotalReadoutTime`` (s), towards
``+PE`` for ``PhaseEncodingDirection`` ``j`` and ``-PE`` for ``j-`` (Jezzard & Balaban 1995;
SDCflows' convention). The signal of a true point ``x`` appears at ``y = x + d(x) e`` with
intensity divided by the Jacobian ``1 + ∂d/∂pe``. Correction therefore samples the distorted
image at ``x + d(x) e`` and multiplies by the Jacobian.

SDCflows' phase manipulation (``au2rads``, ``phdiff2fmap``) rescales the phase by the image's
own minimum and maximum; conntool uses the scanner convention instead (Siemens stores
[-4096, 4096) for [-π, π)), so a phase map that does not span the full range is not stretched,
and unwraps with scikit-image (Herráez 2002) because SDCflows leaves wraps in.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

from conntool.steps.resample import grid_world_coords, sample_volume

SIEMENS_PHASE_RANGE = 4096.0  #: Siemens stores phase in [-4096, 4096) (or [0, 4096) x 2) for [-π, π)


def phase_to_radians(phase: np.ndarray) -> np.ndarray:
    """Scanner phase values → radians (an image already in radians, |values| ≤ 2π, is kept).

    Values beyond 2π are taken as Siemens' 12-bit convention, ``value · π / 4096``.
    """
    phase = np.asarray(phase, float)
    if np.abs(phase).max() <= 2 * np.pi + 1e-3:
        return phase
    return phase * np.pi / SIEMENS_PHASE_RANGE


def unwrap(phase: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """3D phase unwrapping inside ``mask`` (scikit-image, Herráez 2002); 0 outside.

    The result is shifted by the multiple of 2π that puts its median in the mask into
    [-π, π), as the wrapped phase's is: unwrapping fixes the phase only up to such a shift.
    """
    from skimage.restoration import unwrap_phase

    wrapped = np.angle(np.exp(1j * np.asarray(phase, float)))
    unwrapped = unwrap_phase(np.ma.array(wrapped, mask=~mask)).filled(0.0)
    median = np.median(unwrapped[mask])
    unwrapped -= 2 * np.pi * np.round(median / (2 * np.pi))
    return np.where(mask, unwrapped, 0.0)


def phasediff_to_hz(phasediff_rad: np.ndarray, echo_time1: float, echo_time2: float) -> np.ndarray:
    """Field (Hz) from an unwrapped phase difference (radians) between echoes at ``echo_time1``
    and ``echo_time2`` (s): ``Δφ / (2π ΔTE)``."""
    return np.asarray(phasediff_rad, float) / (2 * np.pi * (echo_time2 - echo_time1))


def smooth_within(field: np.ndarray, mask: np.ndarray, voxel_mm: np.ndarray, fwhm_mm: float) -> np.ndarray:
    """Gaussian smoothing of ``field`` from the voxels in ``mask`` only (normalised
    convolution), which also carries the field a few voxels beyond the mask, where the EPI
    brain edge may lie; 0 where no mask voxel is near."""
    sigma = fwhm_mm / np.sqrt(8 * np.log(2)) / np.asarray(voxel_mm, float)
    weight = ndimage.gaussian_filter(mask.astype(float), sigma)
    total = ndimage.gaussian_filter(np.where(mask, field, 0.0), sigma)
    return np.divide(total, weight, out=np.zeros_like(total), where=weight > 1e-2)


def pe_axis_and_sign(phase_encoding_dir: str) -> tuple[int, float]:
    """BIDS ``PhaseEncodingDirection`` (``i``, ``j-`` ...) → (voxel axis, +1 or -1)."""
    return "ijk".index(phase_encoding_dir[0]), (-1.0 if phase_encoding_dir.endswith("-") else 1.0)


def shift_voxels(field_hz: np.ndarray, readout_s: float, phase_encoding_dir: str) -> np.ndarray:
    """Voxel shift map: displacement (voxels) along the PE voxel axis, signed in the axis'
    direction, of the EPI signal of each point with off-resonance ``field_hz``."""
    return np.asarray(field_hz, float) * readout_s * pe_axis_and_sign(phase_encoding_dir)[1]


def distorted_points(points: np.ndarray, shift: np.ndarray, affine: np.ndarray,
                     pe_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the EPI shows each true point, and the Jacobian there.

    Parameters
    ----------
    points : (..., 3) world coordinates (mm) in the frame of the EPI reference; NaN allowed.
    shift : (X, Y, Z) voxel shift map on the EPI reference grid (:func:`shift_voxels`).
    affine : (4, 4) EPI reference voxel → world (mm).
    pe_axis : voxel axis of phase encoding.

    Returns
    -------
    distorted : (..., 3) world coordinates (mm) at which to sample the EPI.
    jacobian : (...) ``1 + ∂shift/∂pe`` at the points (1 where the shift map has no value);
        EPI intensities sampled at ``distorted`` are multiplied by it.
    """
    ijk = np.moveaxis(np.asarray(points, float) @ np.linalg.inv(affine)[:3, :3].T + np.linalg.inv(affine)[:3, 3],
                      -1, 0)
    ijk = np.nan_to_num(ijk, nan=-1e6)
    gradient = np.gradient(shift, axis=pe_axis)
    d = ndimage.map_coordinates(shift, ijk, order=1, mode="nearest")
    jacobian = 1.0 + ndimage.map_coordinates(gradient, ijk, order=1, mode="nearest")
    return points + d[..., None] * affine[:3, pe_axis], jacobian


def unwarp(volume: np.ndarray, affine: np.ndarray, shift: np.ndarray, pe_axis: int) -> np.ndarray:
    """An EPI volume (or series) with its distortion undone, on its own grid.

    Parameters
    ----------
    volume : (X, Y, Z) or (X, Y, Z, T) the EPI as acquired, voxel → world ``affine``.
    shift : (X, Y, Z) voxel shift map on that grid (:func:`shift_voxels`).
    pe_axis : voxel axis of phase encoding.

    Returns
    -------
    Same shape, float32: cubic-spline samples at the distorted points (overshoot below 0
    clipped), times the Jacobian; a series one volume at a time.
    """
    points = grid_world_coords(nib.Nifti1Image(np.zeros(volume.shape[:3], np.uint8), affine))
    distorted, jacobian = distorted_points(points, shift, affine, pe_axis)

    def one(v: np.ndarray) -> np.ndarray:
        return (np.clip(sample_volume(np.asarray(v, float), affine, distorted), 0, None) * jacobian).astype(np.float32)

    if volume.ndim == 3:
        return one(volume)
    return np.stack([one(volume[..., t]) for t in range(volume.shape[-1])], axis=-1)


def magnitude_mask(magnitude: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool head mask of a fieldmap's magnitude image: Otsu on the median-filtered
    image (DIPY's ``median_otsu``, as for the DWI), holes filled; where the phase is signal."""
    from dipy.segment.mask import median_otsu

    _, mask = median_otsu(np.asarray(magnitude, np.float32), median_radius=2, numpass=2)
    return ndimage.binary_fill_holes(mask)


def field_hz(kind: str, images: list[np.ndarray], mask: np.ndarray, echo_times: tuple[float, float] | None,
             units: str) -> np.ndarray:
    """The off-resonance field (Hz) inside ``mask`` from a BIDS fieldmap's images.

    ``kind`` ``phasediff`` (one phase-difference image), ``phases`` (the two echoes' phases,
    subtracted) — both unwrapped and divided by 2π ΔTE — or ``fieldmap`` (the field itself in
    ``units`` Hz or rad/s). Outside ``mask``: 0.
    """
    if kind == "fieldmap":
        field = np.asarray(images[0], float) / (2 * np.pi if units == "rad/s" else 1.0)
        return np.where(mask, field, 0.0)
    phase = phase_to_radians(images[0]) if kind == "phasediff" else (
        phase_to_radians(images[1]) - phase_to_radians(images[0]))
    return phasediff_to_hz(unwrap(phase, mask), *echo_times)
