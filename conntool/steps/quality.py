"""Registration quality figures recorded in the QC JSON."""
from __future__ import annotations

import nibabel as nib
import numpy as np

from conntool.steps.resample import apply_affine_to_coords, grid_world_coords, inside_grid, sample_volume


def normalized_mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Studholme's normalised mutual information (H(A) + H(B)) / H(A, B) of paired samples.

    1 for independent intensities, 2 when one determines the other (at this binning); it
    does not assume the two contrasts are linearly related, so it suits BOLD against T1w.

    Parameters
    ----------
    a, b : (n,) paired intensities
    bins : equal-width histogram bins per image, between each one's minimum and maximum
    """
    joint, _, _ = np.histogram2d(a, b, bins=bins)
    p = joint / joint.sum()

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    return (entropy(p.sum(axis=1)) + entropy(p.sum(axis=0))) / entropy(p.ravel())


def coregistration_nmi(boldref: nib.Nifti1Image, t1w_brain: nib.Nifti1Image, t1w_to_boldref: np.ndarray) -> float:
    """NMI of the BOLD reference and the skull-stripped T1w brought onto its grid.

    Parameters
    ----------
    boldref : 3D BOLD reference
    t1w_brain : skull-stripped T1w (0 outside the brain)
    t1w_to_boldref : (4, 4) RAS mm, T1w point → BOLD reference point (Coregistration's result)

    Returns
    -------
    :func:`normalized_mutual_information` over the BOLD voxels that fall in the T1w brain.
    """
    points = apply_affine_to_coords(np.linalg.inv(t1w_to_boldref), grid_world_coords(boldref))
    t1w = sample_volume(np.asarray(t1w_brain.dataobj, np.float32), t1w_brain.affine, points, order=1)
    inside = inside_grid(t1w_brain.shape, t1w_brain.affine, points) & (t1w > 0)
    return normalized_mutual_information(np.asarray(boldref.dataobj, float)[inside], t1w[inside])
