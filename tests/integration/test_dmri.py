"""The dMRI path end to end: planted bundles recovered (simulated), real AP/PA data with Desikan."""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import yaml
from scipy.stats import spearmanr

from conntool.config import preset_text
from conntool.outputs import read_tsv
from tests.browser import keep_screenshot, page_problems
from tests.integration.conftest import conntool

pytestmark = pytest.mark.slow


def _run_dmri(bids, out, work, *extra):
    return conntool("dmri", bids, out, "--participant-label", "01", "--work-dir", work, "--nprocs", "2", *extra)


@pytest.fixture(scope="module")
def phantom_preset(tmp_path_factory):
    """dmri-dti-det without Gibbs removal: the phantom's signal is made in image space, with no
    k-space truncation to ring (Gibbs removal runs on the real data below). Endpoints are assigned
    to the parcel they lie in, without the 4 mm radial search: the planted bundles run into their
    parcels, and at 3 mm voxels the search reaches the small neighbouring parcels (Spearman 0.63
    with it, 0.82 without, on this phantom)."""
    preset = yaml.safe_load(preset_text("dmri-dti-det")[1])
    preset["name"] = "dmri-dti-det-phantom"
    preset["dmri"]["gibbs_removal"] = False
    preset["dmri"]["search_radius_mm"] = 0
    path = tmp_path_factory.mktemp("preset") / "phantom.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


@pytest.fixture(scope="module")
def sim_run(simulated, phantom_preset, tmp_path_factory):
    root = tmp_path_factory.mktemp("dmri_sim")
    _run_dmri(simulated, root / "out", root / "work", "--atlas", "Sim100", "--atlas-dir",
              simulated / "derivatives" / "simulation", "--pipeline", phantom_preset)
    return root


def _count(out, seg):
    return read_tsv(out / "sub-01" / "dwi" / f"sub-01_space-dwi_seg-{seg}_meas-StreamlineCount_relmat.tsv")


def test_planted_bundles_recovered(sim_run, simulated):
    truth_dir = simulated / "derivatives" / "simulation"
    planted = read_tsv(truth_dir / "seg-Sim100_meas-StreamlineCount_desc-truth_relmat.tsv").to_numpy()
    recovered = _count(sim_run / "out", "Sim100").to_numpy()
    upper = np.triu_indices(len(planted), 1)
    n_bundles = int(planted[upper].sum())
    strongest = np.argsort(recovered[upper])[::-1][: 2 * n_bundles]
    assert set(np.flatnonzero(planted[upper])) <= set(strongest)  # every bundle among the strongest edges
    along_bundles = recovered[upper][planted[upper] > 0].sum() / recovered[upper].sum()
    assert along_bundles >= 0.8, along_bundles  # most connecting streamlines follow a planted bundle
    assert spearmanr(recovered[upper], planted[upper]).statistic >= 0.7


@pytest.fixture(scope="module")
def default_run(simulated, tmp_path_factory):
    """The shipped default, dmri-csd-prob, as it is, on the same phantom as ``sim_run``."""
    root = tmp_path_factory.mktemp("dmri_default")
    result = _run_dmri(simulated, root / "out", root / "work", "--atlas", "Sim100", "--atlas-dir",
                       simulated / "derivatives" / "simulation", "--pipeline", "dmri-csd-prob", "--no-report")
    assert result.returncode == 0
    return root


def test_shipped_default_on_the_phantom(default_run, simulated):
    """The shipped default (dmri-csd-prob: PEPOLAR, Gibbs removal, CSD, probabilistic tracking
    seeded in WM, 4 mm radial search) on the same phantom as the edited preset above. It finds the
    planted bundles less cleanly: on this phantom 5 of the 6 bundles are among the 12 strongest
    edges, 38 % of the connecting streamlines follow a bundle (0.1 % of edges are bundles),
    Spearman 0.26, against 6 of 6, >= 80 % and >= 0.7 for the edited preset. The bounds below
    hold that level."""
    planted = read_tsv(simulated / "derivatives" / "simulation" /
                       "seg-Sim100_meas-StreamlineCount_desc-truth_relmat.tsv").to_numpy()
    recovered = _count(default_run / "out", "Sim100").to_numpy()
    upper = np.triu_indices(len(planted), 1)
    bundles = np.flatnonzero(planted[upper])
    strongest = np.argsort(recovered[upper])[::-1][: 2 * len(bundles)]
    assert len(set(bundles) & set(strongest)) >= len(bundles) - 1
    along_bundles = recovered[upper][planted[upper] > 0].sum() / recovered[upper].sum()
    assert along_bundles >= 0.35, along_bundles
    assert spearmanr(recovered[upper], planted[upper]).statistic >= 0.2


BOTH_PRESETS = pytest.mark.parametrize("run", ["sim_run", "default_run"])  # edited preset, shipped default


@BOTH_PRESETS
def test_tractogram_and_maps_written(run, request):
    dwi = request.getfixturevalue(run) / "out" / "sub-01" / "dwi"
    sidecar = json.loads(next(dwi.glob("*_tractography.json")).read_text())
    assert sidecar["StreamlineCount"] > 100 and sidecar["RandomSeed"] == 0
    assert next(dwi.glob("*_tractography.trx")).stat().st_size > 0
    for param in ("FA", "MD", "AD", "RD"):
        assert (dwi / f"sub-01_space-dwi_model-tensor_desc-{param}_dwimap.nii.gz").exists()
    for ext in (".nii.gz", ".bval", ".bvec"):  # where any tractography tool can start
        assert (dwi / f"sub-01_space-dwi_desc-preproc_dwi{ext}").stat().st_size > 0


@BOTH_PRESETS
def test_susceptibility_distortion_corrected(run, simulated, request):
    """The simulated DWI is distorted along j- by the 120 Hz field (up to 6 voxels) and comes
    with b=0 images along j (fmap/*_dir-PA_epi): the field estimated from the pair matches the
    truth to a fraction of a voxel in the brain, and the pair agrees after unwarping."""
    out = request.getfixturevalue(run) / "out" / "sub-01"
    field_file = out / "fmap" / "sub-01_fmapid-dirPAepi_desc-preproc_fieldmap.nii.gz"
    estimated = np.asarray(nib.load(field_file).dataobj, float)
    truth = np.asarray(nib.load(simulated / "derivatives" / "simulation" / "sub-01" /
                                "sub-01_space-dwi_desc-truth_fieldmap.nii.gz").dataobj, float)
    brain = np.asarray(nib.load(out / "dwi" / "sub-01_space-dwi_desc-brain_mask.nii.gz").dataobj) > 0
    readout = json.loads((simulated / "sub-01" / "dwi" / "sub-01_dwi.json").read_text())["TotalReadoutTime"]
    before, after = (np.abs(f)[brain] * readout for f in (truth, estimated - truth))  # voxels of displacement
    assert np.percentile(before, 95) > 0.5  # there was something to correct
    assert np.percentile(after, 95) < 0.25 and after.mean() < 0.3 * before.mean(), (
        before.mean(), np.percentile(before, 95), after.mean(), np.percentile(after, 95))
    sidecar = json.loads(field_file.with_name(field_file.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["Units"] == "Hz" and sidecar["Regularization"] == 1e-8
    agreement = sidecar["ReversedPairCorrelation"]
    assert agreement["Corrected"] > agreement["Acquired"] + 0.1, agreement
    tractography = json.loads(next((out / "dwi").glob("*_tractography.json")).read_text())
    assert tractography["DistortionCorrection"] == "pepolar (sub-01_dwi.nii.gz and sub-01_dir-PA_epi.nii.gz)"


@BOTH_PRESETS
def test_same_seed_same_matrices(run, simulated, phantom_preset, tmp_path, request):
    # preprocessing is deterministic arithmetic (the fMRI tests rerun everything); here the seeded
    # steps, tractography and what follows it, run again from a copy of the work folder
    first = request.getfixturevalue(run)
    shutil.copytree(first / "work", tmp_path / "work")
    for node in ("tractography", "structural_Sim100"):  # the sinks always run
        shutil.rmtree(tmp_path / "work" / "conntool_dmri" / "dmri_sub_01" / "dwi_wf" / node)
    _run_dmri(simulated, tmp_path / "out", tmp_path / "work", "--atlas", "Sim100", "--atlas-dir",
              simulated / "derivatives" / "simulation", "--pipeline",
              phantom_preset if run == "sim_run" else "dmri-csd-prob", "--no-report")
    assert (tmp_path / "work" / "conntool_dmri" / "dmri_sub_01" / "dwi_wf" / "tractography" / "tractogram.trx").exists()
    for path in sorted((first / "out" / "sub-01" / "dwi").glob("*relmat.tsv")):
        assert (tmp_path / "out" / "sub-01" / "dwi" / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.fixture(scope="module")
def real_work(tmp_path_factory):
    """One work folder for both shipped presets on the real data: they share every step before
    tractography, so the second run takes those from the cache."""
    return tmp_path_factory.mktemp("dmri_real") / "work"


def test_real_ap_pa_with_desikan(shared_data, real_work, tmp_path, browser):
    out = tmp_path / "out"
    _run_dmri(shared_data / "bids-xa30", out, real_work, "--atlas", "Desikan", "--atlas-dir",
              shared_data / "atlases", "--pipeline", "dmri-csd-prob")
    count = _count(out, "Desikan").to_numpy()
    assert count.shape == (70, 70) and np.allclose(count, count.T) and count.sum() > 0
    dwi = out / "sub-01" / "dwi"
    fa = np.asarray(nib.load(dwi / "sub-01_space-dwi_model-tensor_desc-FA_dwimap.nii.gz").dataobj)
    work = real_work / "conntool_dmri" / "dmri_sub_01" / "dwi_wf" / "tissue_to_dwi"
    wm = np.asarray(nib.load(work / "wm.nii.gz").dataobj)
    gm = np.asarray(nib.load(work / "gm.nii.gz").dataobj)
    assert fa[wm > 0.7].mean() > fa[gm > 0.7].mean() + 0.1
    _check_real_pepolar(shared_data / "bids-xa30" / "sub-01", out / "sub-01")
    expected = ["sub-01_desc-normalization_T1w.png", "sub-01_desc-segmentation_T1w.png", "sub-01_desc-b0_dwi.png",
                "sub-01_desc-fa_dwi.png", "sub-01_desc-gradients_dwi.svg", "sub-01_desc-lengths_dwi.svg",
                "sub-01_desc-tractogram_dwi.png", "sub-01_desc-sdc_dwi.png",
                "sub-01_seg-Desikan_desc-connectivity_dwi.png"]
    assert sorted(p.name for p in (out / "sub-01" / "figures").iterdir()) == sorted(expected)
    problems = page_problems(browser, out / "sub-01.html")
    assert problems == {"broken_images": [], "console_errors": [], "n_images": len(expected)}
    keep_screenshot(browser, out / "sub-01.html", "dmri_real_sub-01")


def _check_real_pepolar(raw, out):
    """The AP/PA b=0 pair agrees better unwarped than as acquired (the issue's criterion), and
    the field estimated from it agrees with the session's independent GRE fieldmap (phasediff,
    acquired for the BOLD run), brought to the DWI grid through the scanner coordinates."""
    from conntool.steps import fieldmap
    from conntool.steps.dwi_space import values_at_points
    from conntool.steps.resample import grid_world_coords

    field_file = out / "fmap" / "sub-01_fmapid-dirPAdwi_desc-preproc_fieldmap.nii.gz"
    sidecar = json.loads(field_file.with_name(field_file.name.replace(".nii.gz", ".json")).read_text())
    agreement = sidecar["ReversedPairCorrelation"]
    assert agreement["Corrected"] > agreement["Acquired"] + 0.1, agreement  # 0.61 → 0.92 on this pair
    pepolar = nib.load(field_file)
    magnitude = nib.load(raw / "fmap" / "sub-01_magnitude1.nii.gz")
    meta = json.loads((raw / "fmap" / "sub-01_phasediff.json").read_text())
    head = fieldmap.magnitude_mask(np.asarray(magnitude.dataobj, float))
    gre = fieldmap.field_hz("phasediff", [np.asarray(nib.load(raw / "fmap" / "sub-01_phasediff.nii.gz").dataobj)],
                            head, (meta["EchoTime1"], meta["EchoTime2"]), "rad")
    gre = fieldmap.smooth_within(gre, head, np.asarray(magnitude.header.get_zooms()[:3]), 6.0)
    points = grid_world_coords(pepolar)
    brain = np.asarray(nib.load(out / "dwi" / "sub-01_space-dwi_desc-brain_mask.nii.gz").dataobj) > 0
    both = brain & (values_at_points(head.astype(float), magnitude.affine, points) > 0.5)
    r = np.corrcoef(np.asarray(pepolar.dataobj)[both], values_at_points(gre, magnitude.affine, points)[both])[0, 1]
    assert r > 0.8, r  # 0.95 when measured


def test_real_ap_pa_with_the_other_shipped_preset(shared_data, real_work, tmp_path):
    """dmri-dti-det as shipped, on the same real data (tensor, deterministic, FA stopping)."""
    out = tmp_path / "out"
    _run_dmri(shared_data / "bids-xa30", out, real_work, "--atlas", "Desikan", "--atlas-dir",
              shared_data / "atlases", "--pipeline", "dmri-dti-det", "--no-report")
    count = _count(out, "Desikan").to_numpy()
    assert count.shape == (70, 70) and np.allclose(count, count.T) and count.sum() > 0
    sidecar = json.loads(next((out / "sub-01" / "dwi").glob("*_tractography.json")).read_text())
    assert sidecar["Model"] == "dti" and sidecar["Tracking"] == "deterministic" and sidecar["StreamlineCount"] > 1000
    assert not (out / "sub-01.html").exists() and not (out / "sub-01" / "figures").exists()
