"""Brain and tissue masks for BOLD data already in template space."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def tissue_masks(priors: dict[str, np.ndarray], in_fov: np.ndarray, threshold: float, erode_voxels: int,
                 min_voxels_to_erode: int) -> dict[str, np.ndarray]:
    """Brain, WM and CSF masks from tissue probabilities, limited to the BOLD field of view.

    WM and CSF are the voxels whose prior exceeds ``threshold``, eroded by ``erode_voxels``
    (6-connected, per iteration) when the thresholded mask has more than
    ``min_voxels_to_erode`` voxels, as for aCompCor (Behzadi 2007), so partial-volume grey
    matter does not leak into nuisance signals; a smaller mask is kept whole rather than
    eroded away.

    Parameters
    ----------
    priors : ``brain`` (binary), ``wm`` and ``csf`` (probabilities in [0, 1]), each (X, Y, Z)
    in_fov : (X, Y, Z) bool, voxels every BOLD volume covered

    Returns
    -------
    ``brain``, ``wm``, ``csf``: (X, Y, Z) bool; WM and CSF lie inside the brain mask
    """
    brain = (priors["brain"] > 0.5) & in_fov
    out = {"brain": brain}
    for tissue in ("wm", "csf"):
        core = priors[tissue] > threshold
        if erode_voxels and core.sum() > min_voxels_to_erode:
            core = ndimage.binary_erosion(core, iterations=erode_voxels)
        out[tissue] = core & brain
    return out
