"""Run a nipype workflow with the chosen plugin, a resumable work folder and progress lines."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from nipype.pipeline import engine as pe


class Progress:
    """nipype status callback: one line per finished node, with a count and elapsed time."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.start, self.stream = total, 0, time.time(), stream

    def __call__(self, node, status: str) -> None:
        if status == "end":
            self.done += 1
            print(f"[conntool] {self.done}/{self.total} {node.fullname} ({time.time() - self.start:.0f} s)",
                  file=self.stream, flush=True)
        elif status == "exception":
            print(f"[conntool] FAILED {node.fullname}", file=self.stream, flush=True)


def run_workflow(wf: pe.Workflow, work_dir: Path, plugin: str, plugin_args: dict, monitor: bool = False) -> None:
    """Execute ``wf`` under ``work_dir`` (nodes already finished there are reused).

    ``monitor`` turns on nipype's resource monitor (time and peak memory per node).
    ANTs (when selected) runs single-threaded: its multi-threaded metrics are less reproducible,
    and nipype's processes already use the cores.
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    work_dir = Path(work_dir).absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    wf.base_dir = str(work_dir)
    wf.config["execution"] = {"crashdump_dir": str(work_dir / "crash"), "crashfile_format": "txt",
                              "stop_on_first_crash": True}
    wf.config["monitoring"] = {"enabled": monitor, "sample_frequency": 0.5}
    if monitor:
        from nipype import config

        config.enable_resource_monitor()
    steps = [n for n in wf.list_node_names() if not n.endswith(("inputnode", "outputnode"))]
    args = {"status_callback": Progress(len(steps)), **plugin_args}
    if plugin == "MultiProc":  # workers from a clean server process: forking a threaded one can deadlock
        args.setdefault("mp_context", "forkserver")
    wf.run(plugin=plugin, plugin_args=args)
