"""Brain and tissue masks for BOLD data already in template space."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def tissue_masks(priors: dict[str, np.ndarray], in_fov: np.ndarray, threshold: float = 0.9,
                 erode_voxels: int = 1) -> dict[str, np.ndarray]:
    """Brain, GM, WM and CSF masks from tissue priors, limited to the BOLD field of view.

    WM and CSF are thresholded at ``threshold`` and eroded, as for aCompCor
    (Behzadi 2007), so partial-volume grey matter does not leak into nuisance signals.
    """
    brain = (priors["brain"] > 0.5) & in_fov
    out = {"brain": brain, "gm": (priors["gm"] > 0.5) & brain}
    for tissue in ("wm", "csf"):
        core = priors[tissue] > threshold
        if erode_voxels:
            core = ndimage.binary_erosion(core, iterations=erode_voxels) if core.sum() > 500 else core
        out[tissue] = core & brain
    return out
