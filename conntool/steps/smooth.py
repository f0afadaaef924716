"""Spatial smoothing restricted to a mask (normalised convolution)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def smooth_in_mask(data: np.ndarray, affine: np.ndarray, mask: np.ndarray, fwhm_mm: float) -> np.ndarray:
    """Gaussian smoothing that only averages voxels inside ``mask``.

    Inside the mask each volume becomes G * (data · mask) / G * mask (normalised
    convolution, Knutsson & Westin 1993): a weighted mean over mask voxels only, so neither
    the zeros outside the field of view nor tissue outside the brain bleed in, and the
    mask's edge is not darkened. Voxels outside the mask are returned unchanged.

    Parameters
    ----------
    data : (X, Y, Z) or (X, Y, Z, T)
    affine : (4, 4) voxel → world (mm); its column norms give the voxel sizes
    mask : (X, Y, Z) bool
    fwhm_mm : Gaussian full width at half maximum, mm; 0 returns ``data`` as float32

    Returns
    -------
    float32 array of ``data``'s shape
    """
    out = np.array(data, np.float32)
    if fwhm_mm == 0 or not mask.any():
        return out
    voxel_mm = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    sigma = fwhm_mm / FWHM_PER_SIGMA / voxel_mm
    weight = ndimage.gaussian_filter(mask.astype(np.float64), sigma, mode="constant")[mask]
    volumes = out.reshape(out.shape[:3] + (-1,))
    for t in range(volumes.shape[-1]):
        masked = np.where(mask, volumes[..., t], 0.0)
        volumes[..., t][mask] = ndimage.gaussian_filter(masked, sigma, mode="constant")[mask] / weight
    return out
