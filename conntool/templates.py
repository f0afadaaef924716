"""The standard-space template and its tissue priors, as shipped with nilearn (offline).

nilearn ships the ICBM 2009a nonlinear symmetric MNI152 template (T1w, GM, WM, brain
mask); that is the space every conntool standard-space output is in.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
from nilearn import datasets, image

TEMPLATE_SPACE = "MNI152NLin2009aSym"


def _on_grid(img: nib.Nifti1Image, resolution_mm: float, interpolation: str) -> nib.Nifti1Image:
    if np.allclose(img.header.get_zooms()[:3], resolution_mm):
        return img
    return image.resample_img(img, target_affine=np.diag([resolution_mm] * 3), interpolation=interpolation,
                              force_resample=True, copy_header=True)


def template_t1w(resolution_mm: float = 2.0) -> nib.Nifti1Image:
    """Skull-stripped template T1w on an isotropic grid of ``resolution_mm``."""
    return _on_grid(datasets.load_mni152_template(resolution=2), resolution_mm, "continuous")


def template_grid(resolution_mm: float) -> nib.Nifti1Image:
    """An empty image defining the output grid of standard-space data."""
    ref = template_t1w(resolution_mm)
    return nib.Nifti1Image(np.zeros(ref.shape[:3], np.uint8), ref.affine)


def _on_reference(img: nib.Nifti1Image, reference: nib.Nifti1Image, interpolation: str) -> np.ndarray:
    return np.asarray(image.resample_to_img(img, reference, interpolation=interpolation, force_resample=True,
                                            copy_header=True).dataobj, float)


def template_brain(reference: nib.Nifti1Image) -> np.ndarray:
    """The template's brain mask on ``reference``'s grid, (X, Y, Z) bool (nearest neighbour)."""
    return _on_reference(datasets.load_mni152_brain_mask(resolution=2), reference, "nearest") > 0.5


def tissue_probabilities(reference: nib.Nifti1Image) -> dict[str, np.ndarray]:
    """GM, WM and CSF probability maps on ``reference``'s grid.

    nilearn ships GM and WM priors only; CSF is what the brain mask leaves over.
    """
    gm = np.clip(_on_reference(datasets.load_mni152_gm_template(resolution=2), reference, "continuous"), 0, 1)
    wm = np.clip(_on_reference(datasets.load_mni152_wm_template(resolution=2), reference, "continuous"), 0, 1)
    brain = template_brain(reference)
    csf = np.where(brain, np.clip(1 - gm - wm, 0, 1), 0.0)
    return {"gm": gm, "wm": wm, "csf": csf, "brain": brain.astype(float)}
