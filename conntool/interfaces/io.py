"""Small file helpers shared by the interfaces (arrays and images in a node's folder)."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np


def save_image(data: np.ndarray, affine: np.ndarray, name: str, cwd: str, tr: float | None = None) -> str:
    """Save an array as NIfTI in ``cwd`` (TR recorded for 4D series); return the path."""
    img = nib.Nifti1Image(data, affine)
    if tr is not None:
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = tr
    path = os.path.join(cwd, name)
    nib.save(img, path)
    return path


def save_array(array: np.ndarray, name: str, cwd: str) -> str:
    path = os.path.join(cwd, name)
    np.save(path, array)
    return path


def load_mask(path: str) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj) > 0
