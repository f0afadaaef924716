"""Run a workflow with nipype's resource monitor and print wall time and peak memory per node."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from nipype.utils.filemanip import loadpkl

from conntool.execution import run_workflow


def run_and_report(wf, work_dir: Path, label: str) -> dict[str, float]:
    """Run ``wf`` (MultiProc, 2 processes); print a per-node table; return node → seconds.

    Workers are forked here, not started from a fork server, so that they inherit the
    resource monitor switched on in this process.
    """
    start = time.time()
    run_workflow(wf, work_dir, "MultiProc", {"n_procs": 2, "mp_context": "fork"}, monitor=True)
    wall = time.time() - start
    rows = []
    for result_file in sorted(Path(work_dir).rglob("result_*.pklz")):
        runtime = loadpkl(result_file).runtime
        if getattr(runtime, "duration", None) is not None:
            rows.append((result_file.parent.name, runtime.duration, getattr(runtime, "mem_peak_gb", float("nan"))))
    print(f"\n{'stage':<28}{'wall s':>8}{'peak GiB':>10}")
    for name, duration, mem in sorted(rows, key=lambda r: -r[1]):
        print(f"{name:<28}{duration:>8.1f}{mem:>10.2f}")
    peak = np.nanmax([mem for _, _, mem in rows])
    print(f"\n{label}: {wall:.0f} s wall on 2 processes; peak memory {peak:.2f} GiB (largest node)")
    return {name: duration for name, duration, _ in rows}
