"""GM/WM/CSF probabilities of a skull-stripped T1w: ANTs Atropos initialised by template priors.

The template's priors are brought onto the T1w grid through the inverse warp of the
normalisation; the T1w's intensity bias is removed (N4, Tustison 2010: without it, the bright
back of a real head coil's image is called WM and the dark front GM); Atropos (Avants 2011) then fits a three-class Gaussian mixture to the T1w's own
intensities with a Markov random field, the priors weighing in by ``prior_weight``. The classes
follow the T1w, not the template, so registration errors and the subject's anatomy no longer
pass into the nuisance masks and tractography maps.
"""
from __future__ import annotations

import numpy as np

from conntool.steps.dwi_space import values_at_points

TISSUES = ("csf", "gm", "wm")  #: order of the priors given to Atropos, and so of its posteriors
DSEG_LABELS = {"gm": 1, "wm": 2, "csf": 3}  #: fMRIPrep's ``desc-`` free ``_dseg`` values (0 background)


def warped_priors(priors: dict[str, np.ndarray], prior_affine: np.ndarray,
                  template_points: np.ndarray) -> dict[str, np.ndarray]:
    """Template priors on the T1w grid.

    Parameters
    ----------
    priors : ``csf``, ``gm``, ``wm`` probabilities (I, J, K) on the template grid.
    prior_affine : (4, 4) template voxel → template world (mm).
    template_points : (X, Y, Z, 3) template world coordinates (mm) of each T1w voxel (the
        inverse coordinate map of the normalisation); NaN where unknown.

    Returns
    -------
    ``csf``, ``gm``, ``wm``: (X, Y, Z) float32 probabilities, linearly interpolated; 0 where a
    T1w voxel has no template point.
    """
    return {t: values_at_points(priors[t], prior_affine, template_points).astype(np.float32) for t in TISSUES}


def atropos(t1w: np.ndarray, brain: np.ndarray, voxel_mm: tuple[float, float, float],
            priors: dict[str, np.ndarray], prior_weight: float, mrf_smoothing: float,
            iterations: int) -> dict[str, np.ndarray]:
    """Posterior tissue probabilities of a T1w by N4 bias correction then ANTs Atropos,
    initialised by ``priors``.

    Parameters
    ----------
    t1w : (X, Y, Z) skull-stripped T1w intensities.
    brain : (X, Y, Z) bool, the voxels to classify.
    voxel_mm : voxel size (mm) along each array axis; sets the MRF neighbourhood's distances.
    priors : ``csf``, ``gm``, ``wm`` (X, Y, Z) probabilities on the T1w grid (:func:`warped_priors`).
    prior_weight : weight of the priors in the posterior, in [0, 1].
    mrf_smoothing : MRF smoothing factor over the 6-neighbourhood (Atropos ``-m``).
    iterations : EM iterations (Atropos ``-c``).

    Returns
    -------
    ``csf``, ``gm``, ``wm``: (X, Y, Z) float32 posteriors summing to 1 in ``brain``, 0 outside.

    N4 runs with antspyx's defaults, within ``brain``; Atropos with its constant internal seed
    (``-r 0``), so results are identical run to run and for any ITK thread count.
    """
    import ants

    def image(array):
        return ants.from_numpy(np.ascontiguousarray(array, np.float32), spacing=tuple(float(v) for v in voxel_mm))

    mask = image(brain)
    corrected = ants.n4_bias_field_correction(image(t1w), mask=mask)
    result = ants.atropos(a=corrected, x=mask, i=[image(priors[t]) for t in TISSUES],
                          m=f"[{mrf_smoothing:g},1x1x1]", c=f"[{iterations},0]", priorweight=prior_weight, r=0)
    return {t: np.where(brain, p.numpy(), 0).astype(np.float32)
            for t, p in zip(TISSUES, result["probabilityimages"])}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A∩B| / (|A| + |B|) of two boolean masks (1 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 2 * int((a & b).sum()) / total if total else 1.0


def hard_labels(probabilities: dict[str, np.ndarray], brain: np.ndarray) -> np.ndarray:
    """(X, Y, Z) uint8 labels of the most probable tissue (:data:`DSEG_LABELS`), 0 outside ``brain``."""
    values = np.array([DSEG_LABELS[t] for t in TISSUES], np.uint8)
    stacked = np.stack([probabilities[t] for t in TISSUES])
    return np.where(brain, values[stacked.argmax(axis=0)], 0).astype(np.uint8)
