"""Simulated fMRIPrep derivatives: layout, fMRIPrep's confound columns, nilearn's load_confounds,
recovery of the planted connectivity, determinism, the CLI flag."""
import json
import re
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from conntool.cli import main
from conntool.simulate_fmriprep import (TRUTH_SUBDIR, confounds_header, noise_components,
                                        simulate_fmriprep_dataset)
from conntool.steps.dvars import dvars
from conntool.templates import NILEARN

N_VOLUMES, TR, RES, SPACE = 200, 2.0, 4.0, "MNI152NLin2009cAsym"
FUNC = "sub-01/func/sub-01_task-rest"
BOLD = f"{FUNC}_space-{SPACE}_desc-preproc_bold.nii.gz"
CONFOUNDS = f"{FUNC}_desc-confounds_timeseries.tsv"
FAMILY = re.compile(r"^(t_comp_cor_|c_comp_cor_|w_comp_cor_|a_comp_cor_|cosine|non_steady_state_outlier|motion_outlier)"
                    r"\d+$")
FIRST_ROW_NA = re.compile(r"(_derivative1(_power2)?|^std_dvars|^dvars|^framewise_displacement|^rmsd)$")


def _generate(root):
    simulate_fmriprep_dataset(root, 1, 0, n_volumes=N_VOLUMES, tr=TR, resolution_mm=RES)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("fmriprep") / "derivatives")


@pytest.fixture(scope="module")
def confounds(dataset):
    return pd.read_csv(dataset / CONFOUNDS, sep="\t", na_values="n/a")


def _collapse(columns):
    """Column names with each data-sized family (CompCor, cosines, outliers) reduced to one entry."""
    out = []
    for name in columns:
        key = FAMILY.sub(lambda m: m.group(1) + "XX", name)
        if key not in out:
            out.append(key)
    return out


def test_layout(dataset):
    files = sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*") if p.is_file())
    truth = f"{TRUTH_SUBDIR}/sub-01/sub-01_task-rest_desc-"
    assert files == sorted([
        "dataset_description.json", BOLD, BOLD.replace(".nii.gz", ".json"),
        f"{FUNC}_space-{SPACE}_desc-brain_mask.nii.gz", f"{FUNC}_space-{SPACE}_desc-brain_mask.json",
        CONFOUNDS, CONFOUNDS.replace(".tsv", ".json"),
        f"{TRUTH_SUBDIR}/atlas-Sim100_space-MNI152NLin2009aSym_res-02_dseg.nii.gz",
        f"{TRUTH_SUBDIR}/atlas-Sim100_dseg.tsv",
        f"{truth}truth_relmat.tsv", f"{truth}realised_relmat.tsv", f"{truth}truth_motion.tsv",
        f"{truth}truth_nuisance.tsv", f"{truth}truth.json"])
    description = json.loads((dataset / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "fMRIPrep"
    bold = nib.load(dataset / BOLD)
    grid = NILEARN.grid(RES)
    assert bold.shape == grid.shape + (N_VOLUMES,) and np.allclose(bold.affine, grid.affine)
    assert bold.get_data_dtype() == np.float32 and bold.header.get_zooms()[3] == TR
    assert json.loads((dataset / BOLD.replace(".nii.gz", ".json")).read_text()) == {
        "RepetitionTime": TR, "SkullStripped": False, "TaskName": "rest"}
    mask = np.asarray(nib.load(dataset / f"{FUNC}_space-{SPACE}_desc-brain_mask.nii.gz").dataobj)
    data = np.asarray(bold.dataobj[..., 10])
    assert set(np.unique(mask)) == {0, 1} and (data[mask > 0] > 0).all()
    assert (data[mask == 0] != 0).any()  # not skull-stripped: a shell of head signal outside the mask
    truth = pd.read_csv(dataset / f"{truth}truth_relmat.tsv", sep="\t")
    assert truth.shape == (100, 100) and list(truth.columns)[0] == "sim_parcel_001"


def test_confound_columns_are_fmriprep21(confounds):
    header = confounds_header()
    assert len(header) == 84 and header[0] == "global_signal"  # nilearn's shipped fMRIPrep 21 file
    assert _collapse(confounds.columns) == _collapse(header)
    fixed = [c for c in header if not FAMILY.match(c)]
    assert [c for c in confounds.columns if not FAMILY.match(c)] == fixed
    for family in ("t_comp_cor_", "c_comp_cor_", "w_comp_cor_", "a_comp_cor_", "cosine", "motion_outlier"):
        members = [c for c in confounds.columns if c.startswith(family)]
        assert members and members == [f"{family}{i:02d}" for i in range(len(members))], family
    assert [c for c in confounds.columns if c.startswith("non_steady")] == [
        f"non_steady_state_outlier{i:02d}" for i in range(3)]
    # n/a exactly where fMRIPrep writes it: the first row of differences, FD, DVARS and RMSD
    missing = confounds.isna()
    for column in confounds.columns:
        expected = [True] + [False] * (N_VOLUMES - 1) if FIRST_ROW_NA.search(column) else [False] * N_VOLUMES
        assert missing[column].tolist() == expected, column


def test_confound_values(dataset, confounds):
    c = confounds
    motion = pd.read_csv(dataset / TRUTH_SUBDIR / "sub-01/sub-01_task-rest_desc-truth_motion.tsv", sep="\t")
    for base in ("global_signal", "csf", "white_matter", "trans_x", "rot_z"):
        written = 1e-9 * np.abs(c[base]).max()  # the TSV holds 10 significant digits
        np.testing.assert_allclose(c[f"{base}_derivative1"][1:], np.diff(c[base]), rtol=0, atol=written)
        np.testing.assert_allclose(c[f"{base}_power2"], c[base] ** 2, rtol=1e-8)
        np.testing.assert_allclose(c[f"{base}_derivative1_power2"], c[f"{base}_derivative1"] ** 2, rtol=1e-8)
    np.testing.assert_allclose(c[motion.columns], motion, rtol=1e-8, atol=1e-12)
    d = np.abs(np.diff(motion.to_numpy(), axis=0))
    np.testing.assert_allclose(c["framewise_displacement"][1:], d[:, :3].sum(1) + 50 * d[:, 3:].sum(1), rtol=1e-6)
    # global signal: mean of the brain mask of the written data
    bold = np.asarray(nib.load(dataset / BOLD).dataobj)
    mask = np.asarray(nib.load(dataset / f"{FUNC}_space-{SPACE}_desc-brain_mask.nii.gz").dataobj) > 0
    np.testing.assert_allclose(c["global_signal"], bold[mask].mean(axis=0, dtype=np.float64), rtol=1e-6)
    std_dvars, plain = dvars(lambda: [bold[mask]], remove_zerovariance=True, variance_tol=1e-7)
    np.testing.assert_allclose(c["std_dvars"][1:], std_dvars[1:], rtol=1e-6)
    # non-steady-state: the 3 saturated volumes, one-hot; CompCor and cosines are 0 there, as nipype pads
    nss = c[[f"non_steady_state_outlier{i:02d}" for i in range(3)]].to_numpy()
    assert (nss[:3] == np.eye(3)).all() and (nss[3:] == 0).all()
    padded = [col for col in c.columns if "comp_cor" in col or col.startswith("cosine")]
    assert (c.loc[:2, padded] == 0).all().all() and (c.loc[3:, padded].std() > 0).all()
    # cosines: nipype's DCT basis at 128 s over the steady-state volumes
    from nipype.algorithms.confounds import _cosine_drift
    cosines = _cosine_drift(128.0, TR * np.arange(N_VOLUMES - 3))[:, :-1]
    np.testing.assert_allclose(c.filter(regex=r"^cosine").to_numpy()[3:], cosines, atol=1e-9)
    # motion outliers: one column per volume with FD > 0.5 mm or standardised DVARS > 1.5
    flagged = np.flatnonzero((c["framewise_displacement"] > 0.5) | (c["std_dvars"] > 1.5))
    outliers = c.filter(regex=r"^motion_outlier").to_numpy()
    assert outliers.shape[1] == len(flagged) and (outliers.argmax(axis=0) == flagged).all()
    assert (outliers.sum(axis=0) == 1).all()
    assert 3 <= (c["framewise_displacement"] > 0.5).sum() <= 8  # the planted spikes (onset and return)


def test_confounds_json(dataset, confounds):
    sidecar = json.loads((dataset / CONFOUNDS.replace(".tsv", ".json")).read_text())
    for name in ("global_signal", "csf", "white_matter", "csf_wm", "tcompcor"):
        assert sidecar[name] == {"Method": "Mean"}
    masks = {"c": "CSF", "w": "WM", "a": "combined"}
    compcor = [col for col in confounds.columns if "comp_cor" in col]
    assert sorted(k for k in sidecar if "comp_cor" in k) == sorted(compcor)
    for col in compcor:
        entry = sidecar[col]
        assert entry["Method"] == ("tCompCor" if col.startswith("t_") else "aCompCor") and entry["Retained"]
        assert entry.get("Mask") == masks.get(col[0])
    for prefix in "cwat":  # fMRIPrep keeps components up to 50 % of the variance
        cumulative = [sidecar[c]["CumulativeVarianceExplained"] for c in compcor if c.startswith(prefix)]
        assert cumulative[-1] >= 0.5 and all(x < 0.5 for x in cumulative[:-1])
    assert sum(c.startswith("w_") for c in compcor) >= 2  # deep-WM sources: more than one component


def test_load_confounds_with_every_strategy(dataset, confounds):
    from nilearn.interfaces.fmriprep import load_confounds

    selected, sample_mask = load_confounds(
        str(dataset / BOLD), strategy=("motion", "wm_csf", "global_signal", "scrub", "compcor", "high_pass"),
        motion="full", wm_csf="full", global_signal="full", compcor="anat_separated", n_compcor=5, scrub=5,
        fd_threshold=0.5, std_dvars_threshold=1.5)
    assert len(selected) == N_VOLUMES and not selected.isna().any().any()
    assert {"trans_x_derivative1_power2", "csf_power2", "global_signal_derivative1", "cosine00",
            "w_comp_cor_00", "c_comp_cor_00"} <= set(selected.columns)
    assert not any(c.startswith("a_comp_cor") for c in selected.columns)  # separated masks only
    dropped = set(range(N_VOLUMES)) - set(sample_mask)
    assert {0, 1, 2} <= dropped and 3 < len(dropped) < 40
    assert set(np.flatnonzero(confounds["framewise_displacement"] > 0.5)) <= dropped


def test_36p_recovers_the_planted_connectivity(dataset):
    from nilearn import signal
    from nilearn.connectome import ConnectivityMeasure
    from nilearn.interfaces.fmriprep import load_confounds
    from nilearn.maskers import NiftiLabelsMasker

    truth_dir = dataset / TRUTH_SUBDIR
    truth = pd.read_csv(truth_dir / "sub-01/sub-01_task-rest_desc-truth_relmat.tsv", sep="\t").to_numpy()
    atlas = truth_dir / "atlas-Sim100_space-MNI152NLin2009aSym_res-02_dseg.nii.gz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series = NiftiLabelsMasker(str(atlas), standardize=None).fit_transform(str(dataset / BOLD))
        selected, sample_mask = load_confounds(str(dataset / BOLD), strategy=("motion", "wm_csf", "global_signal"),
                                               motion="full", wm_csf="full", global_signal="full")
    assert selected.shape[1] == 36 and series.shape == (N_VOLUMES, 100)
    upper = np.triu_indices(100, 1)

    def recovery(confounds):
        clean = signal.clean(series, confounds=confounds, sample_mask=sample_mask, detrend=True,
                             standardize="zscore_sample", t_r=TR)
        fc = ConnectivityMeasure(kind="correlation").fit_transform([clean])[0]
        return np.corrcoef(fc[upper], truth[upper])[0, 1]

    denoised, raw = recovery(selected), recovery(None)
    assert denoised >= 0.8, denoised
    assert raw <= denoised - 0.1, (raw, denoised)


def test_dvars_and_compcor_match_nipype(tmp_path):
    from nipype.algorithms.confounds import compute_dvars, compute_noise_components

    rng = np.random.default_rng(3)
    slow = np.cumsum(rng.standard_normal((4, 60)), axis=1)
    data = (1000 + rng.uniform(0.5, 2, (6, 6, 5, 4)) @ slow + 5 * rng.standard_normal((6, 6, 5, 60)))
    data = data.astype(np.float32)
    mask = np.ones((6, 6, 5), np.uint8)
    mask[0] = 0
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "bold.nii.gz")
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "mask.nii.gz")
    std, plain, _ = compute_dvars(str(tmp_path / "bold.nii.gz"), str(tmp_path / "mask.nii.gz"),
                                  remove_zerovariance=True, variance_tol=1e-7)
    ours_std, ours_plain = dvars(lambda: [data[mask > 0]], remove_zerovariance=True, variance_tol=1e-7)
    np.testing.assert_allclose(ours_std[1:], std, rtol=1e-5)
    np.testing.assert_allclose(ours_plain[1:], plain, rtol=1e-5)
    components, basis, meta = compute_noise_components(data, [nib.Nifti1Image(mask, np.eye(4))], 0.5, "cosine",
                                                       0, 128.0, 2.0)
    ours, info, our_basis = noise_components(data[mask > 0], 2.0)
    assert ours.shape == components.shape
    np.testing.assert_allclose(np.abs((ours * components).sum(axis=0)), 1, atol=1e-6)  # same up to sign
    np.testing.assert_allclose(info["singular_value"], meta["singular_value"], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(our_basis, basis, atol=1e-12)


def test_same_seed_same_files(dataset, tmp_path):
    again = _generate(tmp_path / "again")
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (dataset / name).read_bytes() == (again / name).read_bytes(), name


def test_truth_folder_is_an_atlas_dir(dataset):
    runner = CliRunner()
    shown = runner.invoke(main, ["atlas", "show", "Sim100", "--atlas-dir", str(dataset / TRUTH_SUBDIR)])
    assert shown.exit_code == 0, shown.output
    assert "100 nodes, space MNI152NLin2009aSym" in shown.output and "sim_parcel_100" in shown.output


def test_cli_flag(tmp_path, monkeypatch):
    import conntool.simulate_fmriprep as module

    calls = []
    monkeypatch.setattr(module, "simulate_fmriprep_dataset", lambda *args, **kwargs: calls.append(args))
    runner = CliRunner()
    result = runner.invoke(main, ["simulate", str(tmp_path / "out"), "--fmriprep", "--subjects", "2", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert calls == [(tmp_path / "out", 2, 4)] and "sourcedata/simulation" in result.output
    refused = runner.invoke(main, ["simulate", str(tmp_path / "x"), "--fmriprep", "--modalities", "fmri,dmri"])
    assert refused.exit_code == 2 and "--fmriprep" in refused.output
