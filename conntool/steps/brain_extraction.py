"""T1w brain extraction.

Registration to the skull-stripped template needs a skull-stripped T1w: matched against
the whole head, the affine shrinks scalp onto the template's brain edge. deepbet
(Fisch et al. 2024, a 3D U-Net trained on 7,837 T1w images of many scanners) is used
because its weights ship inside its wheel (nothing is downloaded) and it takes seconds
on a CPU.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np


def brain_mask(t1w: nib.Nifti1Image) -> np.ndarray:
    """Boolean brain mask on ``t1w``'s grid (largest component, holes filled)."""
    import torch
    from deepbet.bet import BrainExtraction

    torch.set_num_threads(1)  # nipype's processes are the parallelism; also keeps results bitwise stable
    image = nib.Nifti1Image(np.asarray(t1w.dataobj, np.float32), t1w.affine)
    _, mask, _ = BrainExtraction(no_gpu=True).run(image)
    return np.asarray(mask.dataobj) > 0
