"""A one-node SLURM cluster on this machine for the tests in this folder.

``slurm_cluster`` starts munged, slurmctld and slurmd once, with tests/slurm/start_cluster.sh
into a temporary folder, points SLURM's commands at it (``SLURM_CONF``) and stops every daemon
with stop_cluster.sh as soon as the last test of this folder is done (package scope: one cluster
per session, and no root daemon running through the rest of the suite). Without SLURM installed
(tests/slurm/install.sh) or without root the tests are skipped, except under CI (``CI`` set),
where CI's own install step should have provided both: there it is a failure.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sinfo", "sbatch", "squeue", "srun", "scontrol", "munge", "mungekey", *DAEMONS)


@dataclass(frozen=True)
class SlurmCluster:
    dir: Path        # every file of the cluster: config, state, spool, logs, pid files
    conf: Path       # slurm.conf (SLURM_CONF points to it while the cluster runs)
    node: str        # the one node's name (this host's short name)
    partition: str   # the one partition
    jobcomp: Path    # SLURM's job completion log: one line per finished job

    def completed_jobs(self) -> list[dict[str, str]]:
        """The finished jobs as ``jobcomp/filetxt`` records them (``Key=Value`` fields)."""
        if not self.jobcomp.is_file():
            return []
        return [dict(field.split("=", 1) for field in line.split() if "=" in field)
                for line in self.jobcomp.read_text().splitlines() if line.strip()]


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI installs SLURM (bash tests/slurm/install.sh from .ci/run), "
                    "so this is a broken install, not a reason to skip", pytrace=False)
    pytest.skip(f"{reason} (install with: sudo bash tests/slurm/install.sh)")


def _run(script: str, folder: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(HERE / script), str(folder)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


@pytest.fixture(scope="package")
def slurm_cluster(tmp_path_factory) -> SlurmCluster:
    missing = [cmd for cmd in COMMANDS if shutil.which(cmd) is None]
    if missing:
        _unavailable(f"SLURM is not installed (missing {', '.join(missing)})")
    if os.geteuid() != 0:
        _unavailable("the test SLURM cluster needs root (its daemons run as SlurmUser=root)")
    folder = tmp_path_factory.mktemp("slurm")
    try:
        started = _run("start_cluster.sh", folder, timeout=240)
    except subprocess.TimeoutExpired as err:
        _run("stop_cluster.sh", folder, timeout=120)
        pytest.fail(f"start_cluster.sh did not finish in {err.timeout:.0f} s", pytrace=False)
    if started.returncode != 0:
        pytest.fail(f"start_cluster.sh failed ({started.returncode}):\n{started.stdout}{started.stderr}",
                    pytrace=False)
    conf = folder / "slurm.conf"
    node = next(line.split()[0].split("=", 1)[1] for line in conf.read_text().splitlines()
                if line.startswith("NodeName="))
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)  # sbatch, squeue, sinfo (here and in nipype) use this cluster
    try:
        yield SlurmCluster(folder, conf, node, "debug", folder / "log" / "jobcomp.txt")
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        stopped = _run("stop_cluster.sh", folder, timeout=120)
        left = [name for name in DAEMONS if (folder / "run" / f"{name}.pid").exists()]
        assert stopped.returncode == 0 and not left, (
            f"stop_cluster.sh left {left or 'daemons'} running:\n{stopped.stdout}{stopped.stderr}")
