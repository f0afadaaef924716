"""Reports of a simulated cohort, end to end: `conntool connectome` draws every participant's
figures and page, `conntool report` the group page; both load in Chromium without a broken
image or a console error, and QC-FC shows the motion that denoising removed."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from nilearn.image import index_img
from nilearn.maskers import NiftiLabelsMasker

from conntool.reports.collect import participants, read_participant
from conntool.reports.group import cohort_matrices
from conntool.reports.qcfc import qc_fc
from conntool.simulate_fmriprep import FmriprepSimulationSettings, simulate_fmriprep_dataset
from tests.browser import keep_screenshot, page_problems, screenshot
from tests.integration.conftest import conntool

pytestmark = pytest.mark.slow
N_SUBJECTS = 10
#: Stronger motion artefacts than the default simulation (spin history, realignment residue), and
#: head motion from 0.2 to 2 times the default across the cohort, so that the unprocessed
#: connectivity follows motion across participants as in real data.
SETTINGS = FmriprepSimulationSettings(spin_history_pct=4.0, residual_motion=0.5)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    deriv = root / "deriv"
    simulate_fmriprep_dataset(deriv, N_SUBJECTS, seed=1, n_volumes=150, settings=SETTINGS,
                              motion_scales=np.linspace(0.2, 2.0, N_SUBJECTS))
    out = root / "out"
    conntool("connectome", deriv, out, "--atlas", "Sim100", "--atlas-dir", deriv / "sourcedata" / "simulation",
             "--work-dir", root / "work", "--pipeline", "fmri-36p-scrub")
    result = conntool("report", out)
    return deriv, out, result


def test_pages_load_without_broken_images_or_console_errors(cohort, browser, tmp_path):
    _, out, result = cohort
    assert result.stdout.strip() == f"report: {out / 'group.html'}"
    for page in ("group.html", "sub-01.html", "sub-10.html"):
        problems = page_problems(browser, out / page)
        assert problems["broken_images"] == [] and problems["console_errors"] == [], (page, problems)
        assert problems["n_images"] >= 4, page
        assert screenshot(browser, out / page, tmp_path / f"{page}.png").stat().st_size > 10_000
        keep_screenshot(browser, out / page, f"connectome_{Path(page).stem}")


def test_every_participant_has_its_page_and_figures(cohort):
    _, out, _ = cohort
    assert participants(out) == [f"{k:02d}" for k in range(1, N_SUBJECTS + 1)]
    for label in participants(out):
        person = read_participant(out, label)
        assert (out / f"sub-{label}.html").is_file()
        assert set(person.runs[0].figures) == {"motion", "carpet"}  # registration and masks are fMRIPrep's
        assert set(person.runs[0].atlases[0].figures) == {"coverage", "connectivity"}
    group = (out / "group.html").read_text()
    assert group.count("<tr") == N_SUBJECTS + 1 and "mean FD" in group


def test_copied_output_folder_keeps_its_pictures(cohort, browser, tmp_path):
    _, out, _ = cohort
    copy = shutil.copytree(out, tmp_path / "moved")
    problems = page_problems(browser, copy / "group.html")
    assert problems["broken_images"] == [] and problems["n_images"] > N_SUBJECTS


def test_qc_fc_motion_related_edges_fall_after_denoising(cohort):
    """Ciric 2017's QC-FC: across participants, edges whose FC follows mean FD. Unprocessed:
    parcel means of fMRIPrep's series (non-steady-state volumes dropped); denoised: conntool's."""
    deriv, out, _ = cohort
    atlas = next((deriv / "sourcedata" / "simulation").glob("atlas-Sim100_*_dseg.nii.gz"))
    unprocessed, mean_fd = [], []
    for label in participants(out):
        func = deriv / f"sub-{label}" / "func"
        qc = json.loads(next((out / f"sub-{label}" / "func").glob("*_desc-denoise_qc.json")).read_text())
        bold = index_img(next(func.glob("*_desc-preproc_bold.nii.gz")), slice(qc["NonSteadyStateVolumes"], None))
        masker = NiftiLabelsMasker(atlas, mask_img=next(func.glob("*_desc-brain_mask.nii.gz")), standardize=None)
        unprocessed.append(np.corrcoef(masker.fit_transform(bold).T))
        mean_fd.append(qc["MeanFD"])
    before = qc_fc(np.array(unprocessed), np.array(mean_fd))
    denoised = cohort_matrices(out, [read_participant(out, label) for label in participants(out)])[0]
    after = qc_fc(denoised.matrices, denoised.mean_fd)
    assert after.n_participants == before.n_participants == N_SUBJECTS
    assert before.fraction_significant > 0.12  # motion shows in the unprocessed FC (chance: 0.05)
    assert after.fraction_significant < 0.5 * before.fraction_significant
    assert after.median_abs_r < before.median_abs_r
