"""Run a workflow with nipype's resource monitor and print wall time, CPU time and peak memory
per node, and the whole run's wall time and peak memory."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import psutil
from nipype.utils.filemanip import loadpkl

from conntool.execution import run_workflow


def _anonymous_mib(pid: int) -> float:
    """Anonymous resident memory (RssAnon) of one process, MiB: what it allocated itself, not
    the shared libraries and file pages every worker maps."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class TreeMemory(threading.Thread):
    """Samples the anonymous memory of this process and all its descendants (the workers and
    what they start) every ``interval`` seconds; ``peak_gib`` is the largest sum seen."""

    def __init__(self, interval: float = 0.25):
        super().__init__(daemon=True)
        self.interval, self.peak_gib = interval, 0.0
        self._done = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self._done.wait(self.interval):
            try:
                pids = [me.pid] + [child.pid for child in me.children(recursive=True)]
            except psutil.Error:
                continue
            self.peak_gib = max(self.peak_gib, sum(_anonymous_mib(pid) for pid in pids) / 1024)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak_gib


def cpu_seconds(runtime) -> float:
    """CPU time of a node from the resource monitor's samples: each sample is the CPU % of the
    node's process and its children since the previous one, so CPU time is their sum weighted
    by the time between samples."""
    profile = getattr(runtime, "prof_dict", None)
    if not profile or len(profile.get("time", [])) < 2:
        return float("nan")
    times, cpus = np.asarray(profile["time"], float), np.asarray(profile["cpus"], float)
    return float(np.sum(cpus[1:] / 100 * np.diff(times)))


def run_and_report(wf, work_dir: Path, label: str, n_procs: int = 2) -> dict[str, float]:
    """Run ``wf`` (MultiProc, ``n_procs`` processes); print a per-node table; return node → seconds.

    Workers are forked here, not started from a fork server, so that they inherit the
    resource monitor switched on in this process.
    """
    tree = TreeMemory()
    tree.start()
    start = time.time()
    failures = run_workflow(wf, work_dir, "MultiProc", {"n_procs": n_procs, "mp_context": "fork"}, monitor=True)
    wall = time.time() - start
    tree_peak = tree.stop()
    for failure in failures:
        print(failure.line())
    rows = []
    for result_file in sorted(Path(work_dir).rglob("result_*.pklz")):
        runtime = loadpkl(result_file).runtime
        if getattr(runtime, "duration", None) is not None:
            rows.append((result_file.parent.name, runtime.duration, cpu_seconds(runtime),
                         getattr(runtime, "mem_peak_gb", None) or float("nan")))
    print(f"\n{'stage':<28}{'wall s':>8}{'CPU s':>8}{'peak GiB':>10}")
    for name, duration, cpu, mem in sorted(rows, key=lambda r: -r[1]):
        print(f"{name:<28}{duration:>8.1f}{cpu:>8.1f}{mem:>10.2f}")
    peak = np.nanmax([mem for *_, mem in rows]) if rows else float("nan")
    cpu_total = np.nansum([cpu for _, _, cpu, _ in rows])
    print(f"\n{label}: {wall:.0f} s wall on {n_procs} processes, {cpu_total:.0f} s CPU in the nodes; "
          f"peak memory {peak:.2f} GiB in the largest node (resident), {tree_peak:.2f} GiB for the whole "
          f"process tree (anonymous, sampled every {tree.interval} s)")
    print_report_cost([(name, duration) for name, duration, *_ in rows])
    return {name: duration for name, duration, *_ in rows}


def print_report_cost(rows: list[tuple[str, float]]) -> None:
    """Seconds the QC report added (node time, summed): figure nodes, their sinks, the page."""
    nodes = [(n, t) for n, t in rows if "figures" in n or n in ("participant_report", "report_inputs")]
    largest = ", ".join(f"{n} {t:.1f} s" for n, t in sorted(nodes, key=lambda x: -x[1])[:4])
    print(f"report generation: {sum(t for _, t in nodes):.1f} s in {len(nodes)} nodes (largest: {largest})")
