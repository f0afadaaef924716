"""`conntool connectome` on fMRIPrep-shaped simulated derivatives: truth recovered, the tail equal
to nilearn's, group-level exports, and a cohort built by the example Makefile."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nilearn.connectome import ConnectivityMeasure
from nilearn.maskers import NiftiLabelsMasker
from sklearn.covariance import EmpiricalCovariance

from conntool.outputs import read_tsv
from conntool.simulate_fmriprep import simulate_fmriprep_dataset
from tests.conftest import ROOT
from tests.integration.conftest import conntool

pytestmark = pytest.mark.slow
SPACE = "MNI152NLin2009cAsym"


def _args(deriv, out, work, *extra):
    return ["connectome", deriv, out, "--atlas", "Sim100", "--atlas-dir", deriv / "sourcedata" / "simulation",
            "--work-dir", work, "--nprocs", "2", *extra]


@pytest.fixture(scope="module")
def fmriprep(tmp_path_factory):
    deriv = tmp_path_factory.mktemp("fmriprep") / "deriv"
    simulate_fmriprep_dataset(deriv, 2, seed=0)
    return deriv


@pytest.fixture(scope="module")
def run(fmriprep, tmp_path_factory):
    root = tmp_path_factory.mktemp("connectome")
    result = conntool(*_args(fmriprep, root / "out", root / "work", "--save-bold"))
    return root, result


def _func(root, sub):
    return root / "out" / f"sub-{sub}" / "func"


def _pearson(root, sub):
    stem = f"sub-{sub}_task-rest_space-{SPACE}_seg-Sim100_meas-PearsonCorrelation_relmat.tsv"
    return read_tsv(_func(root, sub) / stem).to_numpy()


@pytest.mark.parametrize("sub", ["01", "02"])
def test_simulated_connectivity_recovered(run, fmriprep, sub):
    """As the fMRI path's test: the planted FC is recovered, and nearly all of what the run can
    show: the correlation of the realised parcel signals (the planted ones over this run's finite
    length) with the planted FC is the ceiling (0.90 and 0.91 here)."""
    root, result = run
    assert "2 of 2 runs kept (2 participants)" in result.stdout
    folder = fmriprep / "sourcedata" / "simulation" / f"sub-{sub}"
    truth = read_tsv(folder / f"sub-{sub}_task-rest_desc-truth_relmat.tsv").to_numpy()
    realised = read_tsv(folder / f"sub-{sub}_task-rest_desc-realised_relmat.tsv").to_numpy()
    recovered = _pearson(root, sub)
    upper = np.triu_indices(len(truth), 1)
    assert np.isfinite(recovered[upper]).mean() > 0.95
    ok = np.isfinite(recovered[upper])
    r = np.corrcoef(recovered[upper][ok], truth[upper][ok])[0, 1]
    ceiling = np.corrcoef(realised[upper][ok], truth[upper][ok])[0, 1]
    assert r >= 0.8 and r >= 0.9 * ceiling, (r, ceiling)


def test_non_steady_state_volumes_left_out(run, fmriprep):
    root, _ = run
    truth = json.loads((fmriprep / "sourcedata" / "simulation" / "sub-01" / "sub-01_task-rest_desc-truth.json")
                       .read_text())
    qc = json.loads((_func(root, "01") / "sub-01_task-rest_desc-denoise_qc.json").read_text())
    n_dummy = truth["NonSteadyStateVolumes"]
    assert n_dummy > 0 and qc["NonSteadyStateVolumes"] == n_dummy
    assert set(range(n_dummy)) <= set(qc["CensoredVolumes"]) and not qc["Excluded"]


def test_tail_equals_nilearn_on_the_same_cleaned_image(run, fmriprep):
    root, _ = run
    func = _func(root, "01")
    denoised = func / f"sub-01_task-rest_space-{SPACE}_desc-denoised_bold.nii.gz"
    sidecar = json.loads(denoised.with_name(denoised.name.replace(".nii.gz", ".json")).read_text())
    assert nib.load(denoised).get_data_dtype() == np.float32
    assert nib.load(denoised).shape[-1] == len(sidecar["VolumesOfInput"])
    mask = fmriprep / "sub-01" / "func" / f"sub-01_task-rest_space-{SPACE}_desc-brain_mask.nii.gz"
    atlas = next((fmriprep / "sourcedata" / "simulation").glob("atlas-Sim100_*_dseg.nii.gz"))
    coverage = read_tsv(func / f"sub-01_task-rest_space-{SPACE}_seg-Sim100_stat-coverage_bold.tsv")
    masker = NiftiLabelsMasker(labels_img=str(atlas), mask_img=str(mask), resampling_target="data", standardize=None)
    series = masker.fit_transform(str(denoised))
    columns = {int(i): c for c, i in enumerate(masker.region_ids_[k] for k in sorted(
        k for k in masker.region_ids_ if k != "background"))}
    nodes = [n for n, included in enumerate(coverage.included) if included]
    selected = series[:, [columns[int(coverage["index"][n])] for n in nodes]]
    expected = ConnectivityMeasure(cov_estimator=EmpiricalCovariance(), kind="correlation",
                                   standardize=False).fit_transform([selected])[0]
    assert np.abs(_pearson(root, "01")[np.ix_(nodes, nodes)] - expected).max() < 1e-6


def test_group_level_stacks_the_cohort(run, fmriprep):
    root, _ = run
    result = conntool(*_args(fmriprep, root / "out", root / "work"), "group")
    stacked = np.load(root / "out" / "group" / "atlas-Sim100_meas-PearsonCorrelation_connectomes.npz")
    assert "2 runs (0 excluded" in result.stdout
    assert stacked["matrices"].shape == (2, 100, 100) and list(stacked["subject"]) == ["sub-01", "sub-02"]
    assert np.allclose(stacked["matrices"][1], _pearson(root, "02"), equal_nan=True)


def test_example_makefile_builds_the_cohort_and_then_does_nothing(fmriprep, tmp_path):
    make = ["make", "-f", str(ROOT / "examples" / "Makefile"), "-j", "2", f"BIDS={fmriprep}", f"OUT={tmp_path / 'out'}",
            f"WORK={tmp_path / 'work'}", "COMMAND=connectome", "PIPELINE=fmri-36p-scrub", "ATLAS=Sim100",
            f"ATLAS_DIR={fmriprep / 'sourcedata' / 'simulation'}", f"CONNTOOL={Path(sys.executable).parent / 'conntool'}"]
    first = subprocess.run(make, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    export = tmp_path / "out" / "group" / "atlas-Sim100_meas-PearsonCorrelation.npz"
    assert export.is_file() and (tmp_path / "out" / "sub-02" / "func").is_dir()
    again = subprocess.run([*make, "--question"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0  # everything is up to date: a second make does nothing
    shutil.rmtree(tmp_path / "work")
