"""conntool's execution through nipype's SLURM plugin on a real (one-node) SLURM cluster: every
node runs as a batch job, with the project's Python, and gives bit for bit what MultiProc gives."""
from __future__ import annotations

import getpass
import os
import shlex
import sys
import time
from pathlib import Path

import pytest
from nipype.interfaces.utility import Function
from nipype.pipeline import engine as pe
from nipype.pipeline.engine.utils import load_resultfile

from conntool.execution import run_workflow

pytestmark = pytest.mark.slow

NODES = ("simulate_a", "simulate_b", "combine")


@pytest.fixture(autouse=True)
def logname(monkeypatch):
    """nipype's SLURM plugin names each job after $LOGNAME (a KeyError without it), which a CI
    or container shell may not set."""
    monkeypatch.setenv("LOGNAME", os.environ.get("LOGNAME") or getpass.getuser())


def _simulate(seed):
    """A deterministic (n_time, n_regions) series, saved as .npy in the node's folder."""
    import os

    import numpy as np

    rng = np.random.default_rng(seed)
    series = rng.standard_normal((120, 16)).cumsum(axis=0)
    path = os.path.abspath(f"series_{seed}.npy")
    np.save(path, series)
    return path


def _combine(series_a, series_b):
    """Correlation matrix of both series side by side, its eigenvalues (as text) and the Python
    that ran the node."""
    import os
    import sys

    import numpy as np

    joined = np.hstack([np.load(series_a), np.load(series_b)])
    matrix = np.corrcoef(joined, rowvar=False)
    path = os.path.abspath("connectome.npy")
    np.save(path, matrix)
    eigen = os.path.abspath("eigenvalues.txt")
    with open(eigen, "w") as out:
        out.write("\n".join(repr(float(v)) for v in np.linalg.eigvalsh(matrix)) + "\n")
    return path, eigen, sys.executable


def _workflow() -> pe.Workflow:
    wf = pe.Workflow(name="toy")
    a = pe.Node(Function(["seed"], ["out"], _simulate), name="simulate_a")
    a.inputs.seed = 1
    b = pe.Node(Function(["seed"], ["out"], _simulate), name="simulate_b")
    b.inputs.seed = 2
    combine = pe.Node(Function(["series_a", "series_b"], ["connectome", "eigenvalues", "python"], _combine),
                      name="combine")
    wf.connect([(a, combine, [("out", "series_a")]), (b, combine, [("out", "series_b")])])
    return wf


def _outputs(work: Path) -> dict[str, bytes]:
    """What the nodes wrote (not nipype's bookkeeping), by path relative to the workflow folder."""
    wf_dir = work / "toy"
    files = {p.relative_to(wf_dir).as_posix(): p.read_bytes() for node in NODES
             for p in sorted((wf_dir / node).iterdir()) if p.suffix in (".npy", ".txt")}
    assert len(files) == 4, sorted(files)
    return files


def _jobs_of(cluster, workflow: str, expected: int, timeout: float = 15) -> dict[str, dict[str, str]]:
    """The finished jobs of ``workflow``'s nodes, by node name, from SLURM's job completion log
    (nipype names a job NODE.WORKFLOW.LOGNAME); waits a little for the last ones to be logged."""
    deadline = time.time() + timeout
    while True:
        jobs = {job["Name"].split(".")[0]: job for job in cluster.completed_jobs()
                if job.get("Name", "").endswith(f".{workflow}.{os.environ['LOGNAME']}")}
        if len(jobs) >= expected or time.time() > deadline:
            return jobs
        time.sleep(0.5)


def test_slurm_plugin_runs_every_node_as_a_job_and_matches_multiproc(slurm_cluster, tmp_path):
    assert run_workflow(_workflow(), tmp_path / "multiproc", "MultiProc", {"n_procs": 2}) == []
    work = tmp_path / "slurm"
    failures = run_workflow(_workflow(), work, "SLURM", {"sbatch_args": f"-p {slurm_cluster.partition}"})
    assert failures == [], [f.line() for f in failures]

    assert _outputs(work) == _outputs(tmp_path / "multiproc")  # bit for bit

    # every node was a batch job: nipype wrote a batch script for each, which runs this Python ...
    batch = work / "toy" / "batch"
    scripts = sorted(batch.glob("batchscript_*.sh"))
    assert len(scripts) == len(NODES), sorted(p.name for p in batch.iterdir())
    for script in scripts:
        assert shlex.split(script.read_text().splitlines()[-1])[0] == sys.executable
    ran = load_resultfile(str(work / "toy" / "combine" / "result_combine.pklz"))
    assert ran.outputs.python == sys.executable
    # ... and SLURM ran each on the node and recorded it as completed
    assert len(list(batch.glob("slurm-*.out"))) == len(NODES)
    jobs = _jobs_of(slurm_cluster, "toy", len(NODES))
    assert sorted(jobs) == sorted(NODES), slurm_cluster.completed_jobs()
    for job in jobs.values():
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["NodeList"] == slurm_cluster.node and job["Partition"] == slurm_cluster.partition
        assert "cpu=1,mem=205M" in job["Tres"], job  # what the node declares (nipype's default 0.2 GB)


def _explode(x):
    raise ValueError(f"cannot use {x}")


def test_a_failing_job_is_one_line_and_the_other_branch_still_runs(slurm_cluster, tmp_path):
    wf = pe.Workflow(name="failing")
    source = pe.Node(Function(["seed"], ["out"], _simulate), name="source")
    source.inputs.seed = 3
    bad = pe.Node(Function(["x"], ["out"], _explode), name="explodes")
    fine = pe.Node(Function(["series_a", "series_b"], ["connectome", "eigenvalues", "python"], _combine),
                   name="fine")
    wf.connect([(source, bad, [("out", "x")]), (source, fine, [("out", "series_a"), ("out", "series_b")])])

    failures = run_workflow(wf, tmp_path / "work", "SLURM", {"sbatch_args": f"-p {slurm_cluster.partition}"})

    assert [f.node for f in failures] == ["failing.explodes"]
    assert failures[0].error.startswith("ValueError: cannot use ") and failures[0].crash_file.is_file()
    assert (tmp_path / "work" / "failing" / "fine" / "connectome.npy").is_file()
    # each node was a job, the failing one included (nipype's job script records the exception
    # in the node's result and exits 0, so SLURM's state is no guide to a node's failure)
    assert sorted(_jobs_of(slurm_cluster, "failing", 3)) == ["explodes", "fine", "source"]
