"""End-to-end fixtures: one simulated dataset (BOLD and DWI) shared by every end-to-end test."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONNTOOL = [sys.executable, "-m", "conntool.cli"]


def conntool(*args, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess (as a user would), with ``env`` added to the
    environment; a run that hangs fails."""
    result = subprocess.run([*CONNTOOL, *map(str, args)], capture_output=True, text=True, timeout=1200,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"conntool {' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def simulated(tmp_path_factory) -> Path:
    """The simulated participant every end-to-end test reads: fMRI with a susceptibility field
    (120 Hz peak: up to 6 voxels of displacement near the frontal sinus) and its fieldmap, dMRI."""
    root = tmp_path_factory.mktemp("sim") / "bids"
    conntool("simulate", root, "--subjects", "1", "--seed", "0", "--modalities", "fmri,dmri", "--b0-field-hz", "120")
    return root


def short_run_preset(path: Path) -> Path:
    """A user's copy of the default preset for the real 20-volume run, written to ``path``: keep
    10 s, no band-pass (20 s cannot hold a 0.01 Hz cycle), 6P (36 regressors would leave no
    degrees of freedom), strict coverage so that parcels the 33-slice field of view cuts are
    flagged. No shipped preset accepts this run (``test_fmri_real``)."""
    import yaml

    from conntool.config import preset_text

    preset = yaml.safe_load(preset_text("fmri-default")[1])
    preset["name"] = "fmri-short-run"
    preset["fmri"]["censoring"]["min_time_s"] = 10
    preset["fmri"]["filter"].update(high_pass_hz=None, low_pass_hz=None)
    preset["fmri"]["confounds"]["strategy"] = "6P"
    preset["fmri"]["parcellation"]["min_coverage"] = 0.9
    path.write_text(yaml.safe_dump(preset))
    return path
