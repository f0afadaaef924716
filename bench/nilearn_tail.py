"""The connectome tail as a plain nilearn script: what a nilearn user writes to turn fMRIPrep
derivatives into connectomes with the ``fmri-36p-scrub`` settings, one participant after the
other in one process (no workflow engine, no parallelism beyond what numpy's BLAS does).

Usage: python bench/nilearn_tail.py FMRIPREP_DIR ATLAS_NII OUT_DIR

Per participant: 36P confounds and the FD/DVARS censoring mask (both taken with conntool's own
functions, so that the regressors and the sample mask are identical to conntool's) →
``nilearn.image.clean_img`` inside the fMRIPrep brain mask (detrend, Butterworth band-pass,
confound regression, censored volumes dropped) → ``NiftiLabelsMasker`` parcel means →
``ConnectivityMeasure`` Pearson (sample covariance) and partial correlation (Ledoit-Wolf),
Fisher z of both → TSV files. A run with less than ``MIN_TIME_S`` kept is cleaned without the
band-pass and gets no matrices (as conntool does). ``bench/bench_cohort.py`` times this
script against ``conntool connectome`` and checks that the matrices agree.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from nilearn import image
from nilearn.connectome import ConnectivityMeasure
from nilearn.maskers import NiftiLabelsMasker
from sklearn.covariance import EmpiricalCovariance, LedoitWolf

from conntool.steps.confounds import select
from conntool.steps.denoise import censoring_mask

# fmri-36p-scrub (bench_cohort.py checks these against the preset)
STRATEGY = "36P"
FD_MM, DVARS_STD, MIN_SEGMENT, MIN_TIME_S = 0.5, 1.5, 5, 240.0
DETREND, HIGH_PASS, LOW_PASS, ORDER = True, 0.01, 0.08, 5


def main(fmriprep: Path, atlas: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    spent = dict.fromkeys(("clean", "parcellate", "connectivity", "write"), 0.0)
    n_done = n_excluded = 0
    for bold in sorted(fmriprep.glob("sub-*/func/*_desc-preproc_bold.nii.gz")):
        sub = bold.name.split("_")[0]
        mask = bold.with_name(bold.name.replace("_desc-preproc_bold", "_desc-brain_mask"))
        table = pd.read_csv(next(bold.parent.glob(f"{sub}_*desc-confounds_timeseries.tsv")), sep="\t",
                            na_values="n/a")
        t0 = time.perf_counter()
        img = image.load_img(bold)
        tr = float(img.header.get_zooms()[3])
        outliers = table.filter(regex=r"^non_steady_state_outlier_?\d+$").to_numpy().any(axis=1)
        n_dummy = int(np.argmin(outliers)) if outliers.any() else 0
        keep = censoring_mask(table["framewise_displacement"].to_numpy(), table["std_dvars"].to_numpy(),
                              FD_MM, DVARS_STD, MIN_SEGMENT, n_dummy)
        excluded = keep.sum() * tr < MIN_TIME_S
        cleaned = image.clean_img(
            img, mask_img=str(mask), confounds=select(table, STRATEGY), detrend=DETREND, standardize=None,
            high_pass=None if excluded else HIGH_PASS, low_pass=None if excluded else LOW_PASS, t_r=tr,
            clean__sample_mask=np.flatnonzero(keep), clean__standardize_confounds=True,
            clean__filter=False if excluded else "butterworth", clean__butterworth__order=ORDER,
            clean__butterworth__copy=True)
        t1 = time.perf_counter()
        masker = NiftiLabelsMasker(labels_img=str(atlas), mask_img=str(mask), strategy="mean", standardize=None)
        series = masker.fit_transform(cleaned)
        ids = [int(label) for col, label in masker.region_ids_.items() if col != "background"]
        t2 = time.perf_counter()
        matrices = {}
        if not excluded:
            for name, kind, estimator in (("pearson", "correlation", EmpiricalCovariance()),
                                          ("partial", "partial correlation", LedoitWolf())):
                matrix = ConnectivityMeasure(cov_estimator=estimator, kind=kind,
                                             standardize=False).fit_transform([series])[0]
                matrices[name] = matrix
                fisher = np.arctanh(np.clip(matrix, -1 + 1e-7, 1 - 1e-7))
                np.fill_diagonal(fisher, 0.0)
                matrices[f"{name}_fisherz"] = fisher
        t3 = time.perf_counter()
        pd.DataFrame(series, columns=ids).to_csv(out / f"{sub}_timeseries.tsv", sep="\t", index=False)
        for name, matrix in matrices.items():
            pd.DataFrame(matrix, columns=ids).to_csv(out / f"{sub}_{name}.tsv", sep="\t", index=False)
        t4 = time.perf_counter()
        for key, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            spent[key] += seconds
        n_done += 1
        n_excluded += bool(excluded)
    print(f"nilearn tail: {n_done} participants ({n_excluded} excluded); seconds in "
          + ", ".join(f"{k} {v:.1f}" for k, v in spent.items()))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.split("\n\n")[1])
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
