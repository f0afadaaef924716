"""Benchmark of the dMRI path on the real XA30 subject (Desikan), and MRtrix3 on the same inputs.

conntool runs its whole path (timed per stage); then MRtrix3's dwi2response/dwi2fod, tckgen
and tck2connectome run on conntool's preprocessed DWI, mask and DWI-space parcellation, with
conntool's settings where both tools have them: spherical-harmonic order, seed mask and seed
count, step size, angle, length limits, and anatomically constrained tracking (ACT) on a
five-tissue image made of the same WM/GM/CSF maps that conntool's tissue stopping uses.
Printed: streamlines per second of each tracker (conntool's tracking without its model fit,
which the tractography node times, against tckgen), the time of each fibre model fit, and the
Spearman correlation of the two log-count matrices. Needs Debian's mrtrix3.
Usage: python bench/bench_dmri.py OUT_DIR [DATA_DIR]
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from monitor import run_and_report
from nipype.utils.filemanip import loadpkl
from scipy.stats import spearmanr

from conntool.atlases import resolve_atlas
from conntool.bids import find_participant
from conntool.config import load_pipeline
from conntool.outputs import read_tsv
from conntool.workflows.dmri import init_dmri_wf


def mrtrix(*args: str) -> float:
    start = time.time()
    subprocess.run([*args, "-quiet", "-force", "-nthreads", "2"], check=True)
    return time.time() - start


def main(out: Path, data: Path) -> None:
    for stale in ("work-dmri", "derivatives-dmri", "mrtrix"):
        shutil.rmtree(out / stale, ignore_errors=True)
    atlas_dir = (data / "atlases").absolute()
    cfg = load_pipeline("dmri-csd-prob")
    wf = init_dmri_wf(find_participant(data.absolute() / "bids-xa30", "01", "dmri"),
                      [("Desikan", resolve_atlas("Desikan", atlas_dir))], str(atlas_dir), cfg,
                      (out / "derivatives-dmri").absolute())
    durations = run_and_report(wf, out / "work-dmri", "whole dMRI path, real XA30 subject (AP+PA, Desikan)")
    work = out / "work-dmri" / "dmri_sub_01" / "dwi_wf"
    dwi_dir = out / "derivatives-dmri" / "sub-01" / "dwi"
    sidecar = json.loads(next(dwi_dir.glob("*_tractography.json")).read_text())
    ours_count = sidecar["StreamlineCount"]
    ours = read_tsv(dwi_dir / "sub-01_space-dwi_seg-Desikan_meas-StreamlineCount_relmat.tsv").to_numpy()

    mr = out / "mrtrix"
    mr.mkdir(parents=True)
    preproc = dwi_dir / "sub-01_space-dwi_desc-preproc_dwi"
    mask_path = dwi_dir / "sub-01_space-dwi_desc-brain_mask.nii.gz"
    fa = np.asarray(nib.load(dwi_dir / "sub-01_space-dwi_model-tensor_desc-FA_dwimap.nii.gz").dataobj)
    mask_img = nib.load(mask_path)
    seed_mask = (np.asarray(mask_img.dataobj) > 0) & (fa > cfg.dmri.seed_fa_threshold)
    nib.save(nib.Nifti1Image(seed_mask.astype(np.uint8), mask_img.affine), mr / "seed.nii.gz")
    tissue = {k: np.asarray(nib.load(work / "tissue_to_dwi" / f"{k}.nii.gz").dataobj, float) for k in ("gm", "wm", "csf")}
    total = sum(tissue.values())
    total[total == 0] = 1.0
    five = np.stack([tissue["gm"], np.zeros_like(total), tissue["wm"], tissue["csf"], np.zeros_like(total)], -1)
    nib.save(nib.Nifti1Image((five / total[..., None]).astype(np.float32), mask_img.affine), mr / "5tt.nii.gz")
    lmax = str(sidecar["SphericalHarmonicOrder"])
    grad = ["-fslgrad", f"{preproc}.bvec", f"{preproc}.bval"]  # conntool's derivatives, BIDS/FSL frame
    fod_seconds = mrtrix("dwi2response", "tournier", f"{preproc}.nii.gz", str(mr / "wm.txt"), *grad, "-lmax", lmax)
    fod_seconds += mrtrix("dwi2fod", "csd", f"{preproc}.nii.gz", str(mr / "wm.txt"), str(mr / "fod.mif"), *grad,
                          "-mask", str(mask_path), "-lmax", lmax)
    n_seeds = int(seed_mask.sum()) * cfg.dmri.seeds_per_voxel
    seconds = mrtrix("tckgen", str(mr / "fod.mif"), str(mr / "tracks.tck"), "-algorithm", "iFOD2",
                     "-seed_image", str(mr / "seed.nii.gz"), "-seeds", str(n_seeds), "-mask",
                     str(mask_path), "-act", str(mr / "5tt.nii.gz"), "-step",
                     str(cfg.dmri.step_size_mm), "-angle", str(cfg.dmri.max_angle_deg), "-minlength",
                     str(cfg.dmri.min_length_mm), "-maxlength", str(cfg.dmri.max_length_mm))
    count_out = subprocess.run(["tckinfo", str(mr / "tracks.tck"), "-count"], capture_output=True, text=True).stdout
    mr_count = int(count_out.strip().split()[-1])
    labels = dwi_dir / "sub-01_space-dwi_seg-Desikan_dseg.nii.gz"
    mrtrix("tck2connectome", str(mr / "tracks.tck"), str(labels), str(mr / "connectome.csv"), "-symmetric",
           "-zero_diagonal")
    theirs = np.loadtxt(mr / "connectome.csv", delimiter=",")
    ids = resolve_atlas("Desikan", atlas_dir).label_ids
    theirs = theirs[np.ix_(np.asarray(ids) - 1, np.asarray(ids) - 1)] if theirs.shape[0] >= max(ids) else theirs
    upper = np.triu_indices(len(ours), 1)
    rho = spearmanr(np.log1p(ours[upper]), np.log1p(theirs[upper])).statistic
    ours_seconds = loadpkl(next((work / "tractography").glob("result_*.pklz"))).runtime.seconds
    print(f"\n{'step (2 cores each)':<44}{'streamlines':>12}{'seconds':>9}{'per second':>12}")
    print(f"{'conntool tracking (DIPY probabilistic, CSD)':<44}{ours_count:>12}{ours_seconds['tracking']:>9.1f}"
          f"{ours_count / ours_seconds['tracking']:>12.0f}")
    print(f"{'MRtrix3 tckgen iFOD2 (ACT)':<44}{mr_count:>12}{seconds:>9.1f}{mr_count / seconds:>12.0f}")
    print(f"{'conntool CSD fit (response + model)':<44}{'':>12}{ours_seconds['fibre_model']:>9.1f}")
    print(f"{'MRtrix3 dwi2response tournier + dwi2fod csd':<44}{'':>12}{fod_seconds:>9.1f}")
    print(f"{'conntool tractography node (fit + tracking)':<44}{ours_count:>12}{durations.get('tractography'):>9.1f}")
    print(f"Spearman rank correlation of log(1 + count) matrices: {rho:.3f}")


if __name__ == "__main__":
    default_data = Path(os.environ.get("CONNTOOL_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out"), Path(sys.argv[2]) if len(sys.argv) > 2
         else default_data)
