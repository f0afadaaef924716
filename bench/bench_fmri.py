"""Benchmark of the fMRI path on one simulated subject: wall time and peak memory per stage.

Usage: python bench/bench_fmri.py OUT_DIR   (make bench)
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from monitor import run_and_report

from conntool.atlases import resolve_atlas
from conntool.bids import find_participant
from conntool.config import load_pipeline
from conntool.simulate import simulate_dataset
from conntool.workflows.fmri import init_fmri_wf


def main(out: Path) -> None:
    bids = out / "bids"
    if not (bids / "dataset_description.json").exists():
        start = time.time()
        simulate_dataset(bids, 1, seed=0)
        print(f"simulate: {time.time() - start:.1f} s")
    for stale in ("work-fmri", "derivatives-fmri"):
        shutil.rmtree(out / stale, ignore_errors=True)
    atlas_dir = (bids / "derivatives" / "simulation").absolute()
    atlases = [(name, resolve_atlas(name, atlas_dir)) for name in ("Sim100", "Power264")]
    wf = init_fmri_wf(find_participant(bids, "01", "fmri"), atlases, str(atlas_dir), load_pipeline("fmri-default"),
                      (out / "derivatives-fmri").absolute())
    run_and_report(wf, out / "work-fmri", "whole fMRI path, one simulated subject (243 volumes)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out"))
