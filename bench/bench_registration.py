"""T1w → template registration: ANTs vs DIPY on a simulated subject with a known warp.

Accuracy is the distance (mm) between each backend's coordinate map and the true one,
inside the template brain; time is wall-clock, single-threaded as in the pipeline, brain
extraction excluded. Usage: python bench/bench_registration.py OUT_DIR
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn.datasets import load_mni152_brain_mask

from conntool.simulate import simulate_dataset
from conntool.steps.brain_extraction import brain_mask
from conntool.steps.registration import normalize
from conntool.templates import TEMPLATE_SPACE, template_t1w


def main(out: Path) -> None:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    bids = out / "bids"
    if not (bids / "dataset_description.json").exists():
        simulate_dataset(bids, 1, seed=0)
    truth = nib.load(bids / "derivatives" / "simulation" / "sub-01" /
                     f"sub-01_from-{TEMPLATE_SPACE}_to-T1w_desc-truth_coordmap.nii.gz").get_fdata()
    template, mask = template_t1w(2.0), load_mni152_brain_mask(resolution=2)
    brain = np.asarray(mask.dataobj) > 0
    t1w = nib.load(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    t1w_brain = nib.Nifti1Image(t1w.get_fdata(dtype=np.float32) * brain_mask(t1w), t1w.affine)
    print(f"{'backend':<8}{'time s':>8}{'mean err mm':>13}{'p95 err mm':>12}{'similarity':>12}")
    for backend in ("ants", "dipy"):
        start = time.time()
        coordmap, _, similarity = normalize(t1w_brain, template, backend, seed=0)
        elapsed = time.time() - start
        error = np.linalg.norm(coordmap.get_fdata() - truth, axis=-1)[brain]
        error = error[np.isfinite(error)]
        print(f"{backend:<8}{elapsed:>8.1f}{error.mean():>13.2f}{np.percentile(error, 95):>12.2f}{similarity:>12.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out"))
