"""The fMRI path on the real XA30 volunteer with Schaefer 400 (../shared/data): every shipped
preset as it is, then a short-run preset to look at the matrix itself."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conntool.config import preset_names, preset_text
from conntool.outputs import read_tsv
from tests.integration.conftest import conntool

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
    """The matrix itself, from a user's copy of the default preset for short runs: keep 10 s,
    no band-pass (20 s cannot hold a 0.01 Hz cycle), 6P (36 regressors would leave no degrees of
    freedom), strict coverage so that parcels the 33-slice field of view cuts are flagged. No
    shipped preset accepts this run (tested above)."""
    root, _ = preset_runs
    preset = yaml.safe_load(preset_text("fmri-default")[1])
    preset["name"] = "fmri-short-run"
    preset["fmri"]["censoring"]["min_time_s"] = 10
    preset["fmri"]["filter"].update(high_pass_hz=None, low_pass_hz=None)
    preset["fmri"]["confounds"]["strategy"] = "6P"
    preset["fmri"]["parcellation"]["min_coverage"] = 0.9
    (root / "short.yaml").write_text(yaml.safe_dump(preset))
    _run(shared_data, root, "out-short", root / "short.yaml")
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
