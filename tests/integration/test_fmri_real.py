"""The fMRI path on the real XA30 volunteer with Schaefer 400 (../shared/data): every shipped
preset as it is, then a short-run preset to look at the matrix itself."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conntool.config import preset_names
from conntool.outputs import read_tsv
from tests.integration.conftest import conntool, short_run_preset

pytestmark = pytest.mark.slow
FMRI_PRESETS = [name for name in preset_names() if name.startswith("fmri-")]
STEM = "sub-01_task-fa_run-1"
SPACE_SEG = "space-MNI152NLin2009aSym_seg-Schaefer400"


def _run(shared_data, root, out, pipeline):
    # one work folder: anatomy and the steps the presets share are computed once
    return conntool("fmri", shared_data / "bids-xa30", root / out, "--participant-label", "01", "--atlas",
                    "Schaefer400", "--atlas-dir", shared_data / "atlases", "--pipeline", pipeline,
                    "--work-dir", root / "work", "--nprocs", "2")


@pytest.fixture(scope="module")
def preset_runs(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    return root, {name: _run(shared_data, root, f"out-{name}", name) for name in FMRI_PRESETS}


@pytest.mark.parametrize("preset", FMRI_PRESETS)
def test_shipped_preset_excludes_the_short_run_and_says_why(preset_runs, preset):
    """20 volumes at TR 1 s are shorter than every shipped preset's minimum: the run is excluded,
    named with its reason, its other outputs are written, and the command succeeds."""
    root, results = preset_runs
    result = results[preset]
    assert result.returncode == 0
    assert f"{STEM}_bold.nii.gz: excluded:" in result.stdout and "0 of 1 runs kept" in result.stdout
    assert "Traceback" not in result.stderr
    func = root / f"out-{preset}" / "sub-01" / "func"
    qc = json.loads((func / f"{STEM}_desc-denoise_qc.json").read_text())
    assert qc["Excluded"] is True and "s minimum" in qc["Reason"]
    assert qc["Reason"] in result.stdout
    for name in (f"{STEM}_desc-confounds_timeseries.tsv", f"{STEM}_space-MNI152NLin2009aSym_desc-brain_mask.nii.gz",
                 f"{STEM}_{SPACE_SEG}_stat-coverage_bold.tsv", f"{STEM}_{SPACE_SEG}_stat-mean_timeseries.tsv"):
        assert (func / name).is_file(), name
    assert not list(func.glob("*_relmat.tsv"))


@pytest.fixture(scope="module")
def short_run(preset_runs, shared_data):
    """The matrix itself, from a user's copy of the default preset for short runs
    (:func:`short_run_preset`)."""
    root, _ = preset_runs
    _run(shared_data, root, "out-short", short_run_preset(root / "short.yaml"))
    return root / "out-short" / "sub-01" / "func"


def test_schaefer400_matrix_and_coverage(short_run):
    matrix = read_tsv(short_run / f"{STEM}_{SPACE_SEG}_meas-PearsonCorrelation_relmat.tsv")
    assert matrix.shape == (400, 400)
    assert matrix.columns[0] == "7Networks_LH_Vis_1"
    values = matrix.to_numpy()
    assert np.allclose(values, values.T, equal_nan=True)
    coverage = read_tsv(short_run / f"{STEM}_{SPACE_SEG}_stat-coverage_bold.tsv")
    outside = ~coverage.included.to_numpy(bool)
    # 33 slices of 3.4 mm do not cover the whole brain: some parcels are flagged, most are kept
    assert (coverage.coverage < 1).sum() > 20
    assert np.array_equal(outside, coverage.coverage.to_numpy() < 0.9)
    assert 0 < outside.sum() < 40
    assert coverage.node[outside].str.contains("SomMot|TempPole").mean() > 0.5  # top and bottom of the brain
    assert np.isnan(values[outside]).all() and np.isfinite(values[np.ix_(~outside, ~outside)]).all()


def _agreement(boldref, t1w, t1w_mask, shift, pe_dir):
    """(NMI, brain-mask Dice) of the BOLD reference unwarped by ``shift`` and the T1w, each
    after its own rigid registration; the EPI's mask is DIPY's median Otsu."""
    import nibabel as nib
    from dipy.segment.mask import median_otsu

    from conntool.steps import fieldmap, motion, quality
    from conntool.steps.resample import apply_affine_to_coords, grid_world_coords, sample_volume
    from conntool.steps.segmentation import dice

    points = grid_world_coords(boldref)
    unwarped = nib.Nifti1Image(fieldmap.unwarp(np.asarray(boldref.dataobj, float), boldref.affine, shift,
                                               fieldmap.pe_axis_and_sign(pe_dir)[0]).astype(np.float32), boldref.affine)
    t1w_to_bold = motion.estimate_linear(t1w, unwarped)
    in_bold = sample_volume(np.asarray(t1w_mask.dataobj, float), t1w_mask.affine,
                            apply_affine_to_coords(np.linalg.inv(t1w_to_bold), points), order=1) > 0.5
    _, epi_mask = median_otsu(np.asarray(unwarped.dataobj), median_radius=2, numpass=2)
    return quality.coregistration_nmi(unwarped, t1w, t1w_to_bold), dice(epi_mask, in_bold)


def test_fieldmap_correction_on_the_real_run(preset_runs, shared_data):
    """The XA30 phase-difference fieldmap is found by its IntendedFor and applied by default.
    Its field is small here (95 % of the BOLD brain moves under ~1.1 voxel), so the BOLD
    reference agrees with the T1w about as well corrected as not (measured: brain-mask Dice
    0.9011 vs 0.9009, NMI 1.0589 vs 1.0592; opposite sign 0.8927, 1.0548); the test holds the part that can fail
    clearly: the correction as applied beats the same field with the opposite sign on both
    measures, and is no worse than none on the masks."""
    import nibabel as nib

    root, _ = preset_runs
    qc = json.loads((root / "out-fmri-default" / "sub-01" / "func" / f"{STEM}_desc-denoise_qc.json").read_text())
    assert qc["DistortionCorrection"] == "fieldmap (phasediff)"
    assert (root / "out-fmri-default" / "sub-01" / "fmap" / "sub-01_fmapid-phasediff_desc-preproc_fieldmap.nii.gz"
            ).is_file()
    work = root / "work" / "conntool_fmri" / "fmri_sub_01"
    bold = next(work.glob("bold_0_*"))
    shift = np.asarray(nib.load(bold / "fieldmap_to_boldref" / "shift.nii.gz").dataobj, float)
    assert np.percentile(np.abs(shift[shift != 0]), 95) > 0.5
    inputs = (nib.load(bold / "motion_correction" / "boldref.nii"), nib.load(work / "anat_wf" / "skullstrip" /
              "t1w_brain.nii.gz"), nib.load(work / "anat_wf" / "skullstrip" / "brain_mask.nii.gz"))
    pe_dir = json.loads((shared_data / "bids-xa30" / "sub-01" / "func" / f"{STEM}_bold.json").read_text())[
        "PhaseEncodingDirection"]
    scores = {name: _agreement(*inputs, s, pe_dir) for name, s in
              (("corrected", shift), ("none", 0 * shift), ("opposite", -shift))}
    assert scores["corrected"][0] > scores["opposite"][0] and scores["corrected"][1] > scores["opposite"][1], scores
    assert scores["corrected"][1] >= scores["none"][1], scores
