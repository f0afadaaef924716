"""The fMRI path on the real XA30 volunteer with Schaefer 400 (../shared/data)."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from conntool.config import preset_text
from conntool.outputs import read_tsv
from tests.integration.conftest import conntool

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_run(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    # The run has 20 volumes at TR 1 s: a user's copy of the default preset that keeps short runs
    # and skips the band-pass (20 s cannot hold a 0.01 Hz cycle).
    preset = yaml.safe_load(preset_text("fmri-default")[1])
    preset["name"] = "fmri-short-run"
    preset["fmri"]["censoring"]["min_time_s"] = 10
    preset["fmri"]["filter"].update(high_pass_hz=None, low_pass_hz=None)
    preset["fmri"]["confounds"]["strategy"] = "6P"
    # strict coverage, so that parcels the 33-slice field of view cuts (vertex, temporal poles) are excluded
    preset["fmri"]["parcellation"]["min_coverage"] = 0.9
    (root / "short.yaml").write_text(yaml.safe_dump(preset))
    conntool("fmri", shared_data / "bids-xa30", root / "out", "--participant-label", "01", "--atlas",
             "Schaefer400", "--atlas-dir", shared_data / "atlases", "--pipeline", root / "short.yaml",
             "--work-dir", root / "work", "--nprocs", "2")
    return root / "out" / "sub-01" / "func"


def test_schaefer400_matrix_and_coverage(real_run):
    stem = "sub-01_task-fa_run-1_space-MNI152NLin2009aSym_seg-Schaefer400"
    matrix = read_tsv(real_run / f"{stem}_meas-PearsonCorrelation_relmat.tsv")
    assert matrix.shape == (400, 400)
    assert matrix.columns[0] == "7Networks_LH_Vis_1"
    values = matrix.to_numpy()
    assert np.allclose(values, values.T, equal_nan=True)
    coverage = read_tsv(real_run / f"{stem}_stat-coverage_bold.tsv")
    outside = ~coverage.included.to_numpy(bool)
    # 33 slices of 3.4 mm do not cover the whole brain: some parcels are flagged, most are kept
    assert (coverage.coverage < 1).sum() > 20
    assert np.array_equal(outside, coverage.coverage.to_numpy() < 0.9)
    assert 0 < outside.sum() < 40
    assert coverage.node[outside].str.contains("SomMot|TempPole").mean() > 0.5  # top and bottom of the brain
    assert np.isnan(values[outside]).all() and np.isfinite(values[np.ix_(~outside, ~outside)]).all()
