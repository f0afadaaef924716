"""Run a nipype workflow: chosen plugin, resumable work folder, conntool's own progress lines,
nipype's log in a file, and one line per failed node."""
from __future__ import annotations

import gc
import getpass
import math
import os
import re
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nipype.pipeline import engine as pe

LOG_NAME = "conntool-nipype.log"


@dataclass(frozen=True)
class NodeFailure:
    """A node that raised: its full name, the exception line and the crash file."""

    node: str
    error: str
    crash_file: Path

    def line(self) -> str:
        return f"conntool: failed: {self.node}: {self.error} (crash file {self.crash_file})"


class Progress:
    """nipype status callback: one line per finished node with how many are left and the time
    spent; nodes whose results came from the work folder's cache are marked ``cached``."""

    def __init__(self, total: int, stream: TextIO):
        self.total, self.done, self.start, self.stream = total, 0, time.time(), stream
        self.started: dict[str, float] = {}
        self.failed: list[str] = []

    def __getstate__(self) -> dict:
        # nipype copies the plugin's settings (this callback among them) into the map nodes it
        # sends to workers; there the callback is never called, but it must pickle
        return {**self.__dict__, "stream": None}

    def __call__(self, node, status: str) -> None:
        if node.name.startswith("_"):  # one item of a map node: the map node itself is counted
            return
        if not self.started and not self.done:  # the first node: nipype's graph is built (see _settled_heap)
            gc.collect()
            gc.freeze()
        name = node.fullname
        if status == "start":
            self.started[name] = time.time()
            return
        self.done += 1
        began = self.started.pop(name, None)
        if status == "exception":
            self.failed.append(name)
            what = "FAILED"
        else:  # MultiProc collects cached results without a "start"; Linear reruns them in no time
            what = "cached" if began is None or time.time() - began < 0.05 else f"{time.time() - began:.1f} s"
        print(f"[conntool] {self.done}/{self.total} ({self.total - self.done} left, "
              f"{time.time() - self.start:.0f} s) {name}: {what}", file=self.stream, flush=True)


def plugin_names() -> list[str]:
    """nipype execution plugins a user may pass to ``--plugin``."""
    from nipype.pipeline import plugins

    return sorted(name[:-len("Plugin")] for name in dir(plugins)
                  if name.endswith("Plugin") and name not in ("PluginBase", "DistributedPluginBase"))


def crash_failures(crash_dir: Path, since: float) -> list[NodeFailure]:
    """Failures recorded in nipype's text crash files written after ``since`` (epoch s)."""
    failures = []
    for path in sorted(Path(crash_dir).glob("crash-*.txt")):
        if path.stat().st_mtime < since:
            continue
        text = path.read_text(errors="replace")
        node = re.search(r"^Node: (.+)$", text, re.M)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        error = next((ln for ln in reversed(lines) if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", ln)),
                     lines[-1] if lines else "unknown error")
        failures.append(NodeFailure(node[1] if node else path.name, error, path))
    return failures


@contextmanager
def _quiet_output(log_path: Path, verbose: bool):
    """Send what nipype and the libraries print (here and in worker processes, which inherit
    the file descriptors) to ``log_path``; yield the stream conntool's own lines go to."""
    if verbose:
        yield sys.stderr
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    real_stderr = _fileno(sys.stderr) == 2
    progress = os.fdopen(os.dup(saved[1]), "w", buffering=1) if real_stderr else sys.stderr
    with open(log_path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield progress
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        if progress is not sys.stderr:
            progress.close()


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


@contextmanager
def _settled_heap():
    """Keep the scheduler's garbage collections cheap.

    nipype's MultiProc runs a full ``gc.collect()`` on every poll (every 0.1 s here) while a
    slot is free; in a process holding nipype, scipy and the workflow one takes about 75 ms,
    so conntool's own process spent 40 % of a core scheduling while the nodes ran. The objects
    alive before the run are moved out of the collector's view (``gc.freeze``), and so are those
    alive when the first node starts (the flat graph nipype builds: :class:`Progress` does that
    second freeze); what is created later is collected as usual.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _fit_threads(wf: pe.Workflow, processors: int) -> None:
    """No node asks for more threads than the local pool has (MultiProc refuses to start
    such a workflow); the node's interface then runs with that many threads."""
    for name in wf.list_node_names():
        node = wf.get_node(name)
        if node.n_procs > processors:
            node.n_procs = processors


def set_chunk_size(wf: pe.Workflow, chunk_mb: float) -> None:
    """Every streaming step holds at most ``chunk_mb`` of its series at once (:mod:`conntool.series`);
    the setting is not part of a node's hash: results do not depend on it."""
    for name in wf.list_node_names():
        inputs = wf.get_node(name).interface.inputs
        if "chunk_mb" in inputs.copyable_trait_names():
            inputs.chunk_mb = chunk_mb


def request_slurm_resources(wf: pe.Workflow, sbatch_args: str = "") -> None:
    """Ask SLURM for what every node declares (nipype's SLURM plugin reads neither ``mem_gb``
    nor ``n_procs``): ``--mem`` and ``--cpus-per-task`` added to each node's own sbatch
    arguments, unless the user's ``sbatch_args`` already set them for every job."""
    given = shlex.split(sbatch_args or "")
    memory_given = any(a.startswith("--mem") for a in given)
    cpus_given = any(re.fullmatch(r"-c\d*|--cpus-per-task(=.*)?", a) for a in given)
    for name in wf.list_node_names():
        node = wf.get_node(name)
        extra = ([] if memory_given else [f"--mem={max(1, math.ceil(node.mem_gb * 1024))}M"]) + (
            [] if cpus_given else [f"--cpus-per-task={node.n_procs}"])
        own = node.plugin_args.get("sbatch_args", "")
        node.plugin_args = {**node.plugin_args, "sbatch_args": " ".join([own, *extra]).strip()}


def run_workflow(wf: pe.Workflow, work_dir: Path, plugin: str, plugin_args: dict, monitor: bool = False,
                 verbose: bool = False, chunk_mb: float | None = None) -> list[NodeFailure]:
    """Execute ``wf`` under ``work_dir`` (nodes already finished there are reused).

    Every node that can run does: a failure stops only what depends on it. Returns the
    failed nodes (empty when all succeeded), read from the crash files, for any plugin.
    ``monitor`` turns on nipype's resource monitor (time and peak memory per node).
    ANTs (when selected) runs single-threaded: its multi-threaded metrics are less
    reproducible, and nipype's processes already use the cores. MultiProc schedules nodes by
    the memory and threads they declare (:mod:`conntool.workflows.resources`); a node asking
    for more threads than the pool has gets the pool's, and one whose memory estimate exceeds
    the machine's runs on its own instead of stopping the run. Under SLURM every job asks for
    its node's memory and threads (:func:`request_slurm_resources`). ``chunk_mb`` sets how much
    of a series the streaming steps hold (:func:`set_chunk_size`; default theirs).
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    os.environ.setdefault("LOGNAME", getpass.getuser())  # nipype's SLURM plugin names jobs after it
    work_dir = Path(work_dir).absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    wf.base_dir = str(work_dir)
    crash_dir = work_dir / "crash"
    plugin_args = dict(plugin_args)
    wf.config["execution"] = {"crashdump_dir": str(crash_dir), "crashfile_format": "txt",
                              "stop_on_first_crash": False}
    # nipype reads the polling interval from the execution config, not the plugin's arguments;
    # a local pool is polled often (its default, 2 s, adds up to 2 s to every node), a scheduler not
    wf.config["execution"]["poll_sleep_duration"] = plugin_args.pop(
        "poll_sleep_duration", 0.1 if plugin in ("MultiProc", "Linear") else 2)
    wf.config["monitoring"] = {"enabled": monitor, "sample_frequency": 0.5}
    if monitor:
        from nipype import config

        config.enable_resource_monitor()
    steps = [n for n in wf.list_node_names() if not n.endswith(("inputnode", "outputnode"))]
    if chunk_mb is not None:
        set_chunk_size(wf, chunk_mb)
    if plugin == "SLURM":
        request_slurm_resources(wf, plugin_args.get("sbatch_args", ""))
    if plugin == "MultiProc":
        _fit_threads(wf, plugin_args.get("n_procs") or os.cpu_count() or 1)
        # a node whose memory estimate exceeds the machine's runs alone rather than stopping the run
        plugin_args.setdefault("raise_insufficient", False)
    started = time.time() - 1  # crash files carry whole-second times on some file systems
    with _quiet_output(work_dir / LOG_NAME, verbose) as stream, _settled_heap():
        args = {"status_callback": Progress(len(steps), stream), **plugin_args}
        if plugin == "MultiProc":  # workers from a clean server process: forking a threaded one can deadlock
            args.setdefault("mp_context", "forkserver")
        try:
            wf.run(plugin=plugin, plugin_args=args)
        except Exception as err:  # nipype re-raises the first node error after running what it could
            failures = crash_failures(crash_dir, started)
            if not failures:
                raise RuntimeError(f"{plugin} plugin: {err.__class__.__name__}: {err}") from err
            return failures
    return crash_failures(crash_dir, started)
