"""The fMRI path on simulated data: truth recovered, outputs complete, runs reproducible."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import nibabel as nib
import numpy as np
import pytest
from nilearn.connectome import ConnectivityMeasure
from nilearn.maskers import NiftiLabelsMasker
from sklearn.covariance import EmpiricalCovariance

from conntool.outputs import read_tsv
from tests.browser import keep_screenshot, page_problems
from tests.integration.conftest import CONNTOOL, conntool

pytestmark = pytest.mark.slow
FUNC = "sub-01/func"
STEM = "sub-01_task-rest_space-MNI152NLin2009aSym_seg-Sim100"


def _args(bids, out, work, *extra):
    return ["fmri", bids, out, "--participant-label", "01", "--atlas", "Sim100", "--atlas-dir",
            bids / "derivatives" / "simulation", "--atlas", "Power264", "--work-dir", work, "--nprocs", "2", *extra]


def _run(bids, out, work, *extra, check=True):
    return conntool(*_args(bids, out, work, *extra), check=check)


def _killed_mid_way(bids, out, work, wait_for: str):
    """Start the command, SIGKILL it (and its workers) once ``wait_for`` exists in ``work``;
    return what OUTPUT_DIR held at that moment."""
    proc = subprocess.Popen([*CONNTOOL, *map(str, _args(bids, out, work))], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 900
    while not list(work.glob(wait_for)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return sorted(p.relative_to(out) for p in out.rglob("*")) if out.exists() else []


@pytest.fixture(scope="module")
def first(simulated, tmp_path_factory):
    """The run the tests below read was killed with SIGKILL after motion correction and resumed
    with the same command (a separate, uninterrupted run must give the same bytes)."""
    root = tmp_path_factory.mktemp("fmri1")
    motion = "conntool_fmri/fmri_sub_01/bold_*/motion_correction/result_*.pklz"
    root.joinpath("at_kill.json").write_text(json.dumps(
        [str(p) for p in _killed_mid_way(simulated, root / "out", root / "work", motion)]))
    stamp = next((root / "work").glob(motion)).stat().st_mtime_ns
    result = _run(simulated, root / "out", root / "work")
    assert next((root / "work").glob(motion)).stat().st_mtime_ns == stamp  # finished nodes are not recomputed
    return root, result


def test_killed_run_left_no_partial_file(first):
    root, _ = first
    at_kill = json.loads((root / "at_kill.json").read_text())
    assert at_kill and not [p for p in at_kill if p.endswith(".part")]
    assert not list((root / "out").rglob("*.part"))


@pytest.fixture(scope="module")
def truth(simulated):
    folder = simulated / "derivatives" / "simulation" / "sub-01"
    return {"fc": read_tsv(folder / "sub-01_task-rest_desc-truth_relmat.tsv").to_numpy(),
            "motion": read_tsv(folder / "sub-01_task-rest_desc-truth_motion.tsv").to_numpy(),
            "meta": json.loads((folder / "sub-01_task-rest_desc-truth.json").read_text())}


def _matrix(root, stem=STEM, meas="PearsonCorrelation"):
    return read_tsv(root / "out" / FUNC / f"{stem}_meas-{meas}_relmat.tsv")


def test_functional_connectivity_recovered(first, truth):
    root, _ = first
    recovered = _matrix(root).to_numpy()
    upper = np.triu_indices(len(recovered), 1)
    ok = np.isfinite(recovered[upper])
    assert ok.mean() > 0.95
    r = np.corrcoef(recovered[upper][ok], truth["fc"][upper][ok])[0, 1]
    assert r >= 0.85, r


def test_nonsteady_volumes_and_motion_recovered(first, truth):
    root, _ = first
    table = read_tsv(root / "out" / FUNC / "sub-01_task-rest_desc-confounds_timeseries.tsv")
    n_dummy = truth["meta"]["NonSteadyStateVolumes"]
    assert len(table) == len(truth["motion"]) - n_dummy
    simulated_motion = truth["motion"][n_dummy:]
    for k, axis in enumerate(("trans_x", "trans_y", "trans_z")):
        r = np.corrcoef(table[axis], simulated_motion[:, k])[0, 1]
        assert r >= 0.9, (axis, r)


def test_outputs_complete_and_consistent(first):
    root, result = first
    out = root / "out"
    description = json.loads((out / "dataset_description.json").read_text())
    generated = description["GeneratedBy"][0]
    assert generated["Name"] == "conntool" and generated["Version"] and generated["ConfigHash"]
    assert generated["Modality"] == "fmri" and generated["PipelineConfig"]["name"] == "fmri-default"
    assert "registration" in generated["RandomSeeds"]
    for stem, n_nodes in ((STEM, 100), ("sub-01_task-rest_space-MNI152NLin2009aSym_seg-Power264", 264)):
        for meas in ("PearsonCorrelation", "PartialCorrelation", "Covariance", "Precision"):
            matrix = _matrix(root, stem, meas)
            assert matrix.shape == (n_nodes, n_nodes)
            values = matrix.to_numpy()
            assert np.allclose(values, values.T, equal_nan=True)
            sidecar = json.loads((out / FUNC / f"{stem}_meas-{meas}_relmat.json").read_text())
            assert sidecar["Measure"] == meas and sidecar["NodeCount"] == n_nodes
        z = read_tsv(out / FUNC / f"{stem}_meas-PearsonCorrelation_desc-fisherz_relmat.tsv").to_numpy()
        r = _matrix(root, stem).to_numpy()
        off = ~np.eye(n_nodes, dtype=bool) & np.isfinite(r)
        assert np.allclose(z[off], np.arctanh(r[off]), atol=1e-6)
        coverage = read_tsv(out / FUNC / f"{stem}_stat-coverage_bold.tsv")
        assert len(coverage) == n_nodes
        dropped = ~coverage.included.to_numpy(bool)
        assert np.isnan(r[dropped]).all()
    assert "volumes kept" in result.stdout


def test_tail_equals_nilearn_on_the_denoised_image(first, simulated):
    root, _ = first
    work = root / "work" / "conntool_fmri" / "fmri_sub_01"
    denoised = next(work.glob("bold_*/denoise_wf/denoise/bold_denoised.nii"))
    mask = next(work.glob("bold_*/tissue_masks/brain_mask.nii.gz"))
    atlas = next((simulated / "derivatives" / "simulation").glob("atlas-Sim100_*_dseg.nii.gz"))
    coverage = read_tsv(root / "out" / FUNC / f"{STEM}_stat-coverage_bold.tsv")
    masker = NiftiLabelsMasker(labels_img=str(atlas), mask_img=str(mask), resampling_target="data")
    series = masker.fit_transform(str(denoised))
    ids = [masker.region_ids_[k] for k in sorted(k for k in masker.region_ids_ if k != "background")]
    columns = {int(i): c for c, i in enumerate(ids)}
    nodes = [n for n, included in enumerate(coverage.included) if included]
    selected = series[:, [columns[int(coverage["index"][n])] for n in nodes]]
    expected = ConnectivityMeasure(cov_estimator=EmpiricalCovariance(), kind="correlation",
                                   standardize=False).fit_transform([selected])[0]
    ours = _matrix(root).to_numpy()[np.ix_(nodes, nodes)]
    assert np.abs(ours - expected).max() < 1e-6


def test_second_run_is_bitwise_identical(first, simulated, tmp_path):
    root, _ = first
    _run(simulated, tmp_path / "out", tmp_path / "work")
    figures = sorted((root / "out" / "sub-01" / "figures").iterdir())
    for path in sorted((root / "out" / FUNC).glob("*relmat.tsv")) + figures:
        again = tmp_path / "out" / path.relative_to(root / "out")
        assert again.read_bytes() == path.read_bytes(), path.name


def test_report_shows_every_figure_and_loads_in_a_browser(first, browser):
    root, _ = first
    out = root / "out"
    expected = ["sub-01_desc-normalization_T1w.png", "sub-01_desc-segmentation_T1w.png"] + [
        f"sub-01_task-rest_desc-{d}_bold.{e}" for d, e in
        (("carpet", "png"), ("coregistration", "png"), ("motion", "svg"), ("sdc", "png"), ("tissues", "png"))] + [
        f"sub-01_task-rest_seg-{a}_desc-{d}_bold.png" for a in ("Power264", "Sim100")
        for d in ("connectivity", "coverage")]
    assert sorted(p.name for p in (out / "sub-01" / "figures").iterdir()) == expected
    problems = page_problems(browser, out / "sub-01.html")
    assert problems == {"broken_images": [], "console_errors": [], "n_images": len(expected)}
    keep_screenshot(browser, out / "sub-01.html", "fmri_simulated_sub-01")
    page = (out / "sub-01.html").read_text()
    assert "Mean / max FD (mm)" in page and "preset fmri-default" in page
    assert "Susceptibility distortion correction" in page


def test_rerun_resumes_rewrites_deleted_outputs_and_guards_other_configs(first, simulated):
    root, _ = first
    motion_result = next((root / "work").glob("conntool_fmri/fmri_sub_01/bold_*/motion_correction/result_*.pklz"))
    stamp = motion_result.stat().st_mtime_ns
    before = _matrix(root).to_numpy()
    deleted = root / "out" / FUNC / f"{STEM}_meas-PearsonCorrelation_relmat.tsv"
    deleted.unlink()
    result = _run(simulated, root / "out", root / "work")  # same command, no --overwrite: it resumes
    assert "Traceback" not in result.stderr and "fmri_sub_01" not in result.stdout  # nipype's log is in the file
    assert "cached" in result.stderr and (root / "work" / "conntool-nipype.log").stat().st_size > 0
    assert motion_result.stat().st_mtime_ns == stamp  # cached node reused, not recomputed
    assert np.array_equal(_matrix(root).to_numpy(), before, equal_nan=True)  # the sink wrote it again
    other = conntool("fmri", simulated, root / "out", "--atlas", "Sim100", "--atlas-dir",
                     simulated / "derivatives" / "simulation", "--atlas", "Power264", "--work-dir", root / "work",
                     "--pipeline", "fmri-24p", check=False)
    assert other.returncode == 2 and "--overwrite" in other.stderr


def test_brain_mask_written(first):
    root, _ = first
    mask = nib.load(root / "out" / FUNC / "sub-01_task-rest_space-MNI152NLin2009aSym_desc-brain_mask.nii.gz")
    assert np.asarray(mask.dataobj).sum() > 10000


def test_own_tissues_recovered(first, simulated):
    """The T1w's segmentation (Atropos, the default) against the simulation's tissues, which
    are the template's priors carried through the subject's known warp."""
    from conntool.steps.segmentation import DSEG_LABELS, dice, hard_labels

    root, _ = first
    anat = root / "out" / "sub-01" / "anat"
    found = {t: np.asarray(nib.load(anat / f"sub-01_label-{t.upper()}_probseg.nii.gz").dataobj) for t in DSEG_LABELS}
    truth = np.asarray(nib.load(simulated / "derivatives" / "simulation" / "sub-01" /
                                "sub-01_desc-truth_dseg.nii.gz").dataobj)
    labels = hard_labels(found, sum(found.values()) > 0)
    assert dice(labels == DSEG_LABELS["wm"], truth == DSEG_LABELS["wm"]) >= 0.85
    assert dice(labels == DSEG_LABELS["gm"], truth == DSEG_LABELS["gm"]) >= 0.8
    sidecar = json.loads((anat / "sub-01_label-WM_probseg.json").read_text())
    assert sidecar["Segmentation"]["method"] == "atropos" and sidecar["Space"] == "T1w"


@pytest.fixture(scope="module")
def without_sdc(first, simulated):
    """The same participant through the default preset with its distortion correction switched
    off (an edited preset, to measure what the default's correction gains; the default itself is
    the ``first`` run). Same work folder: only the steps after motion correction run again."""
    import yaml

    from conntool.config import preset_text

    root, _ = first
    preset = yaml.safe_load(preset_text("fmri-default")[1])
    preset["name"] = "fmri-default-no-sdc"
    preset["fmri"]["distortion_correction"]["fieldmap"] = False
    (root / "no_sdc.yaml").write_text(yaml.safe_dump(preset))
    conntool(*_args(simulated, root / "out_no_sdc", root / "work", "--pipeline", root / "no_sdc.yaml"))
    return root / "out_no_sdc"


def test_susceptibility_distortion_corrected(first, simulated, truth, without_sdc):
    """Against the simulation's B0 field: the estimated field leaves under 0.5 voxel of
    displacement in the brain, the BOLD reference matches the T1w better, and the connectivity
    of the parcels the field displaces is recovered better than without the correction."""
    from conntool.simulate import b0_field
    from conntool.steps.resample import grid_world_coords

    root, _ = first
    readout = truth["meta"]["Settings"]["readout_s"]
    field = nib.load(simulated / "derivatives" / "simulation" / "sub-01" / "sub-01_desc-truth_fieldmap.nii.gz")
    estimate = nib.load(root / "out" / "sub-01" / "fmap" / "sub-01_fmapid-phasediff_desc-preproc_fieldmap.nii.gz")
    assert json.loads((root / "out" / "sub-01" / "fmap" /
                       "sub-01_fmapid-phasediff_desc-preproc_fieldmap.json").read_text())["Units"] == "Hz"
    brain = np.asarray(nib.load(simulated / "sub-01" / "fmap" / "sub-01_magnitude1.nii.gz").dataobj) > 50
    before = np.abs(np.asarray(field.dataobj)[brain]) * readout
    after = np.abs(np.asarray(field.dataobj)[brain] - np.asarray(estimate.dataobj)[brain]) * readout
    assert np.percentile(before, 95) > 0.9 and before.max() > 5  # the field displaces the BOLD by voxels
    assert np.percentile(after, 95) < 0.5 and after.mean() < before.mean() / 5

    qc = {name: json.loads((out / FUNC / "sub-01_task-rest_desc-denoise_qc.json").read_text())
          for name, out in (("sdc", root / "out"), ("none", without_sdc))}
    assert qc["sdc"]["DistortionCorrection"] == "fieldmap (phasediff)"
    assert qc["none"]["DistortionCorrection"] == "none: switched off in the preset"
    assert qc["sdc"]["CoregistrationNMI"] > qc["none"]["CoregistrationNMI"] + 0.03

    atlas = nib.load(simulated / "derivatives" / "simulation" / "atlas-Sim100_space-MNI152NLin2009aSym_res-02_dseg.nii.gz")
    labels = np.asarray(atlas.dataobj, int)
    shift = np.abs(b0_field(grid_world_coords(atlas), truth["meta"]["Settings"]["b0_peak_hz"])) * readout
    displaced = np.array([shift[labels == k].mean() >= 0.5 for k in range(1, 101)])
    upper = np.triu_indices(100, 1)
    edges = displaced[upper[0]] | displaced[upper[1]]
    recovery = {}
    for name, out in (("sdc", root / "out"), ("none", without_sdc)):
        matrix = read_tsv(out / FUNC / f"{STEM}_meas-PearsonCorrelation_relmat.tsv").to_numpy()[upper]
        ok = edges & np.isfinite(matrix)
        recovery[name] = np.corrcoef(matrix[ok], truth["fc"][upper][ok])[0, 1]
    assert displaced.sum() >= 5 and recovery["sdc"] > recovery["none"], recovery


def test_pepolar_pair_corrects_the_bold(simulated, truth, without_sdc, tmp_path):
    """The same participant with two spin-echo EPI references of opposite phase encoding
    (fmap/*_dir-{AP,PA}_epi) instead of the phasediff: the BOLD is the same bytes, the default
    preset estimates the field from the pair, and the BOLD reference matches the T1w better
    than without correction."""
    bids = tmp_path / "bids"
    conntool("simulate", bids, "--subjects", "1", "--seed", "0", "--modalities", "fmri", "--b0-field-hz", "120",
             "--bold-fieldmap", "epi")
    bold = "sub-01/func/sub-01_task-rest_bold.nii.gz"
    assert (bids / bold).read_bytes() == (simulated / bold).read_bytes()
    assert not (bids / "sub-01" / "fmap" / "sub-01_phasediff.nii.gz").exists()
    conntool("fmri", bids, tmp_path / "out", "--participant-label", "01", "--atlas", "Sim100", "--atlas-dir",
             bids / "derivatives" / "simulation", "--work-dir", tmp_path / "work", "--nprocs", "2", "--no-report")
    field_file = tmp_path / "out" / "sub-01" / "fmap" / "sub-01_fmapid-dirAPepi_desc-preproc_fieldmap.nii.gz"
    estimate = np.asarray(nib.load(field_file).dataobj, float)
    field = np.asarray(nib.load(simulated / "derivatives" / "simulation" / "sub-01" /
                                "sub-01_desc-truth_fieldmap.nii.gz").dataobj, float)  # the same grid as the pair's
    brain = np.asarray(nib.load(simulated / "sub-01" / "fmap" / "sub-01_magnitude1.nii.gz").dataobj) > 50
    readout = truth["meta"]["Settings"]["readout_s"]
    before, after = np.abs(field[brain]) * readout, np.abs(field[brain] - estimate[brain]) * readout
    assert np.percentile(after, 95) < 0.25 and after.mean() < before.mean() / 5, (after.mean(), before.mean())
    pair = json.loads(field_file.with_name(field_file.name.replace(".nii.gz", ".json")).read_text())
    assert pair["ReversedPairCorrelation"]["Corrected"] > pair["ReversedPairCorrelation"]["Acquired"] + 0.1
    qc = json.loads((tmp_path / "out" / FUNC / "sub-01_task-rest_desc-denoise_qc.json").read_text())
    assert qc["DistortionCorrection"] == "pepolar (sub-01_dir-AP_epi.nii.gz and sub-01_dir-PA_epi.nii.gz)"
    none = json.loads((without_sdc / FUNC / "sub-01_task-rest_desc-denoise_qc.json").read_text())
    assert qc["CoregistrationNMI"] > none["CoregistrationNMI"] + 0.03
