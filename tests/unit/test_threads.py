"""BLAS and OpenMP threads inside a node are what the node was given (its n_procs), not the
library default, in conntool's own process and in MultiProc's workers; and a BLAS-heavy step
gives the same numbers whatever the machine's default."""
import json
import os

import numpy as np
import pytest
from nipype.interfaces.base import TraitedSpec, traits
from nipype.pipeline import engine as pe
from threadpoolctl import threadpool_info, threadpool_limits

from conntool.execution import run_workflow
from conntool.interfaces.base import ConntoolInputSpec, ConntoolInterface
from conntool.steps.connectivity import connectivity_matrix


class _ProbeInput(ConntoolInputSpec):
    late_import = traits.Bool(False, usedefault=True, desc="import torch inside the node, as brain extraction does")


class _ProbeOutput(TraitedSpec):
    pools = traits.Str(desc="JSON: threadpoolctl's view from inside the node, plus torch's")


class ThreadProbe(ConntoolInterface):
    """Records the thread pools it sees while it runs."""

    input_spec = _ProbeInput
    output_spec = _ProbeOutput

    def _run_interface(self, runtime):
        import scipy.linalg  # noqa: F401  (scipy's own OpenBLAS)

        seen = {"torch": None}
        if self.inputs.late_import:
            import torch

            seen["torch"] = torch.get_num_threads()
        seen["pools"] = [{"api": p["user_api"], "file": os.path.basename(p["filepath"]), "threads": p["num_threads"]}
                         for p in threadpool_info()]
        self._results["pools"] = json.dumps(seen)
        return runtime


def _blas(seen):
    return [p for p in seen["pools"] if p["api"] == "blas"]


def test_node_n_procs_reaches_the_interface_and_is_not_hashed():
    node = pe.Node(ThreadProbe(), name="probe", n_procs=3)
    assert node.inputs.num_threads == 3 and node.n_procs == 3
    assert pe.Node(ThreadProbe(), name="probe").n_procs == 1  # the default budget is one thread
    assert node.interface.inputs.get_hashval()[1] == ThreadProbe().inputs.get_hashval()[1]


@pytest.mark.parametrize("n_procs", [1, 2])
def test_blas_uses_the_node_budget_whatever_the_default(tmp_path, n_procs):
    environment = dict(os.environ)
    with threadpool_limits(limits=4):  # a machine whose libraries default to four threads
        result = pe.Node(ThreadProbe(), name="probe", n_procs=n_procs, base_dir=str(tmp_path)).run()
        after = threadpool_info()
    seen = json.loads(result.outputs.pools)
    assert len(_blas(seen)) >= 1 and all(p["threads"] == n_procs for p in seen["pools"]), seen
    assert all(p["num_threads"] == 4 for p in after)  # restored afterwards, environment too
    assert dict(os.environ) == environment


def test_multiproc_workers_keep_to_one_thread(tmp_path):
    """In a MultiProc worker (started from a fork server, as conntool runs them) every BLAS and
    OpenMP pool, torch's imported inside the node included, has the node's one thread."""
    wf = pe.Workflow(name="threads")
    wf.add_nodes([pe.Node(ThreadProbe(late_import=True), name="probe", n_procs=1)])
    assert run_workflow(wf, tmp_path / "work", "MultiProc", {"n_procs": 2}) == []
    from nipype.utils.filemanip import loadpkl

    result = loadpkl(next((tmp_path / "work" / "threads" / "probe").glob("result_*.pklz")))
    seen = json.loads(result.outputs.pools)
    assert seen["torch"] == 1
    assert len(_blas(seen)) >= 1 and all(p["threads"] == 1 for p in seen["pools"]), seen


class _PartialInput(ConntoolInputSpec):
    seed = traits.Int(mandatory=True)


class _PartialOutput(TraitedSpec):
    out_file = traits.Str()


class PartialCorrelation(ConntoolInterface):
    """conntool's partial correlation (Ledoit-Wolf, then an inverse: LAPACK) of a 200 x 264
    series, saved at full precision (the relmat TSVs round to 10 digits)."""

    input_spec = _PartialInput
    output_spec = _PartialOutput

    def _run_interface(self, runtime):
        rng = np.random.default_rng(self.inputs.seed)
        series = rng.standard_normal((200, 264)) @ rng.standard_normal((264, 264)) * 0.1
        series += rng.standard_normal(series.shape)
        self._results["out_file"] = os.path.join(runtime.cwd, "partial.npy")
        np.save(self._results["out_file"], connectivity_matrix(series, "partial"))
        return runtime


def test_blas_heavy_step_gives_the_same_numbers_whatever_the_default_thread_count(tmp_path):
    """Unlimited, this step differs in the last bits between one and two threads on the
    development machine (1e-16); in a node with n_procs=1 it is the same to the bit."""
    results = {}
    for default in (1, 2, 4):
        with threadpool_limits(limits=default):
            node = pe.Node(PartialCorrelation(seed=0), name=f"partial_{default}", n_procs=1, base_dir=str(tmp_path))
            results[default] = np.load(node.run().outputs.out_file)
    assert np.array_equal(results[1], results[2]) and np.array_equal(results[1], results[4])
