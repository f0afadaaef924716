"""Running workflows: one line per failed node for every plugin, progress with what is left and
cached nodes marked, and the derivatives sink that always runs."""
import io

import pytest
from click.testing import CliRunner
from nipype.interfaces.utility import Function, IdentityInterface
from nipype.pipeline import engine as pe

from conntool.cli import main
from conntool.execution import Progress, run_workflow
from conntool.interfaces.connectome import DerivativesSink
from tests.conftest import write_tiny_bids


def _double(x):
    return 2 * x


def _explode(x):
    raise ValueError(f"cannot use {x}")


def _toy_workflow(name="toy"):
    """ok → fails; ok → fine: one branch fails, the other must still run."""
    wf = pe.Workflow(name=name)
    ok = pe.Node(Function(["x"], ["out"], _double), name="ok")
    ok.inputs.x = 2
    bad = pe.Node(Function(["x"], ["out"], _explode), name="explodes")
    fine = pe.Node(Function(["x"], ["out"], _double), name="fine")
    wf.connect([(ok, bad, [("out", "x")]), (ok, fine, [("out", "x")])])
    return wf


@pytest.mark.parametrize("plugin, args", [("Linear", {}), ("MultiProc", {"n_procs": 2})])
def test_failures_are_reported_per_node_for_every_plugin(tmp_path, plugin, args):
    failures = run_workflow(_toy_workflow(), tmp_path / "work", plugin, args)
    assert len(failures) == 1
    failure = failures[0]
    assert failure.node.endswith("toy.explodes") and failure.error == "ValueError: cannot use 4"
    assert failure.crash_file.is_file() and failure.crash_file.parent == tmp_path / "work" / "crash"
    assert list((tmp_path / "work" / "toy" / "fine").glob("result_*.pklz"))  # the other branch ran
    line = failure.line()
    assert "\n" not in line and "toy.explodes" in line and str(failure.crash_file) in line


@pytest.mark.parametrize("plugin", ["Linear", "MultiProc"])
def test_cli_prints_one_line_per_failed_node_and_exits_1(tmp_path, monkeypatch, plugin):
    monkeypatch.setattr("conntool.workflows.fmri.init_fmri_wf", lambda *a, **k: _toy_workflow())
    bids = write_tiny_bids(tmp_path / "bids")
    result = CliRunner().invoke(main, ["fmri", str(bids), str(tmp_path / "out"), "--atlas", "Power264",
                                       "--work-dir", str(tmp_path / "work"), "--plugin", plugin])
    assert result.exit_code == 1, result.output
    failed = [ln for ln in result.output.splitlines() if ln.startswith("conntool: failed:")]
    assert len(failed) == 1 and "toy.explodes: ValueError: cannot use 4 (crash file " in failed[0]
    assert "Traceback" not in result.output
    assert "sub-01_task-rest_bold.nii.gz: failed" in result.output and "0 of 1 runs kept" in result.output


def test_progress_counts_what_is_left_and_marks_cached(tmp_path):
    run_workflow(_toy_workflow(), tmp_path / "work", "Linear", {})
    stream = io.StringIO()
    wf = _toy_workflow()
    wf.base_dir = str(tmp_path / "work")
    wf.config["execution"] = {"stop_on_first_crash": False, "crashdump_dir": str(tmp_path / "crash")}
    with pytest.raises(RuntimeError):
        wf.run(plugin="Linear", plugin_args={"status_callback": Progress(3, stream)})
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[conntool] 1/3 (2 left") and lines[0].endswith("toy.ok: cached")
    assert any(ln.endswith("toy.explodes: FAILED") for ln in lines)


def test_sink_routes_by_name_and_always_runs(tmp_path):
    source = tmp_path / "a.tsv"
    source.write_text("1\n")
    measures = {"pearson.tsv": tmp_path / "p.tsv"}
    measures["pearson.tsv"].write_text("2\n")
    out = tmp_path / "out"
    sink = pe.Node(DerivativesSink(out_paths={"table": str(out / "table.tsv"),
                                              "matrices": {"pearson.tsv": str(out / "pearson_relmat.tsv")}}),
                   name="sink", base_dir=str(tmp_path / "work"))
    sink.inputs.table = str(source)
    sink.inputs.matrices = {k: str(v) for k, v in measures.items()}
    sink.run()
    assert (out / "table.tsv").read_text() == "1\n" and (out / "pearson_relmat.tsv").read_text() == "2\n"
    (out / "table.tsv").unlink()
    sink.run()  # same inputs: a cached node would not write again
    assert (out / "table.tsv").read_text() == "1\n"
    empty = pe.Node(DerivativesSink(out_paths={"matrices": {"pearson.tsv": str(out / "x.tsv")}}), name="empty",
                    base_dir=str(tmp_path / "work"))
    empty.inputs.matrices = {}  # an excluded run: nothing to write
    empty.run()
    assert not (out / "x.tsv").exists()


def test_one_participants_failure_does_not_stop_the_others(tmp_path, monkeypatch):
    """Each participant is its own sub-workflow: sub-01's failing node leaves sub-02's run alone."""
    bids = write_tiny_bids(tmp_path / "bids")
    (bids / "sub-02").mkdir()
    for path in (bids / "sub-01").rglob("*.*"):
        target = bids / "sub-02" / path.relative_to(bids / "sub-01").as_posix().replace("sub-01", "sub-02")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())

    def build(participant, *args, **kwargs):
        wf = _toy_workflow(name=f"fmri_sub_{participant.label}")
        if participant.label == "02":  # the second participant's workflow has no failing node
            wf.remove_nodes([wf.get_node("explodes")])
        return wf

    monkeypatch.setattr("conntool.workflows.fmri.init_fmri_wf", build)
    result = CliRunner().invoke(main, ["fmri", str(bids), str(tmp_path / "out"), "participant", "--atlas", "Power264",
                                       "--work-dir", str(tmp_path / "work"), "--participant-label", "01", "02"])
    assert result.exit_code == 1, result.output
    failed = [ln for ln in result.output.splitlines() if ln.startswith("conntool: failed:")]
    assert len(failed) == 1 and "fmri_sub_01.explodes" in failed[0]
    assert list((tmp_path / "work" / "conntool_fmri" / "fmri_sub_02" / "fine").glob("result_*.pklz"))
    assert "(2 participants)" in result.output


def test_no_node_asks_multiproc_for_more_threads_than_the_pool_has():
    from conntool.execution import _fit_threads
    from tests.unit.test_threads import ThreadProbe

    wf = pe.Workflow(name="fit")
    inner = pe.Workflow(name="inner")
    inner.add_nodes([pe.Node(ThreadProbe(), name="wide", n_procs=4)])
    wf.add_nodes([inner, pe.Node(ThreadProbe(), name="narrow")])
    _fit_threads(wf, 2)
    assert wf.get_node("inner.wide").n_procs == 2 and wf.get_node("inner.wide").inputs.num_threads == 2
    assert wf.get_node("narrow").n_procs == 1


@pytest.mark.parametrize("n_items", [1, 2])
def test_map_nodes_run_under_multiproc(tmp_path, n_items):
    """A map node's result travels back from the worker with the plugin's settings (the
    progress callback among them): everything in it must pickle, or the run hangs."""
    wf = pe.Workflow(name="mapped")
    node = pe.MapNode(Function(["x"], ["out"], _double), iterfield=["x"], name="double")
    node.inputs.x = list(range(n_items))
    wf.add_nodes([node])
    assert run_workflow(wf, tmp_path / "work", "MultiProc", {"n_procs": 2}) == []
    assert list((tmp_path / "work" / "mapped" / "double").glob("result_*.pklz"))


def test_slurm_jobs_ask_for_the_memory_and_threads_their_node_declares():
    from conntool.execution import request_slurm_resources

    def workflow():
        wf = pe.Workflow(name="wf")
        big = pe.Node(IdentityInterface(["x"]), name="big", mem_gb=1.5, n_procs=2)
        big.plugin_args = {"sbatch_args": "--time=10"}
        wf.add_nodes([big, pe.Node(IdentityInterface(["x"]), name="small")])
        return wf

    wf = workflow()
    request_slurm_resources(wf, "-p short")
    assert wf.get_node("big").plugin_args["sbatch_args"] == "--time=10 --mem=1536M --cpus-per-task=2"
    assert wf.get_node("small").plugin_args["sbatch_args"] == "--mem=205M --cpus-per-task=1"
    wf = workflow()
    request_slurm_resources(wf, "-p short --mem=8G -c 4")  # the user's choice for every job stands
    assert wf.get_node("big").plugin_args["sbatch_args"] == "--time=10"
    assert wf.get_node("small").plugin_args["sbatch_args"] == ""
