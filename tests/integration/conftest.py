"""End-to-end fixtures: one simulated dataset (BOLD and DWI) shared by every end-to-end test."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONNTOOL = [sys.executable, "-m", "conntool.cli"]


def conntool(*args, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess (as a user would); a run that hangs fails."""
    result = subprocess.run([*CONNTOOL, *map(str, args)], capture_output=True, text=True, timeout=1200)
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
