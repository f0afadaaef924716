"""Cohort benchmark of the connectome tail: ``conntool connectome`` against a plain nilearn script.

Usage: python bench/bench_cohort.py OUT_DIR [N=100]   (make bench-cohort)

N small simulated fMRIPrep-style participants (150 volumes at TR 2 s on the 4 mm template grid,
~29k brain voxels; simulated once into OUT_DIR/cohort/fmriprep-N and reused) go through

a. ``conntool connectome ... --pipeline fmri-36p-scrub --nprocs 2 --no-report`` (default
   MultiProc plugin, fresh work folder): wall time of the whole command, start-up and input
   validation included; no QC figures, which the nilearn script does not draw either (the
   report's own cost is measured by bench_fmri.py and bench_dmri.py);
b. ``bench/nilearn_tail.py``: the same denoising, parcellation and connectivity written as a
   plain nilearn script, participants one after the other in one process (wall time of the
   whole script, imports included).

Both read the same (cache-warmed) inputs and compute the same numbers: the Pearson matrices of
every participant are compared node by node. Throughput is participants per minute; the last
line is ``tail throughput ratio conntool/nilearn: X.XX`` (above 1: conntool is faster).
Where conntool's time goes is read from its progress lines and nipype's result files, and its
start-up steps are timed alone. The machine's load average is printed with every timing, and the
CPU time of every process of each command (a figure less sensitive to other users' load than
wall time): on a shared machine the ratio moves with what else is running.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
PIPELINE, ATLAS = "fmri-36p-scrub", "Sim100"
SIM = {"seed": 0, "n_volumes": 150, "resolution_mm": 4.0}
TOLERANCE = 1e-6


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def simulate(out: Path, n: int) -> Path:
    """The cohort, simulated once (into a temporary folder renamed when complete)."""
    from conntool.simulate_fmriprep import simulate_fmriprep_dataset

    data = out / "cohort" / f"fmriprep-{n}"
    if (data / "dataset_description.json").is_file() and len(list(data.glob("sub-*/func/*_bold.nii.gz"))) == n:
        print(f"cohort: reusing {n} simulated participants in {data}")
        return data
    partial = data.with_name(data.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    start = time.time()
    simulate_fmriprep_dataset(partial, n, **SIM)
    partial.rename(data)
    print(f"cohort: simulated {n} participants in {time.time() - start:.0f} s ({data})")
    return data


def check_settings() -> None:
    """nilearn_tail.py's constants are the preset's."""
    sys.path.insert(0, str(HERE))
    import nilearn_tail as nt

    from conntool.config import load_pipeline

    f = load_pipeline(PIPELINE).fmri
    ours = (nt.STRATEGY, nt.FD_MM, nt.DVARS_STD, nt.MIN_SEGMENT, nt.MIN_TIME_S, nt.DETREND, nt.HIGH_PASS,
            nt.LOW_PASS, nt.ORDER, 0.0)
    preset = (f.confounds.strategy, f.censoring.fd_mm, f.censoring.dvars_std, f.censoring.min_segment_volumes,
              f.censoring.min_time_s, f.filter.detrend, f.filter.high_pass_hz, f.filter.low_pass_hz, f.filter.order,
              f.smoothing.fwhm_mm)
    if ours != preset:
        sys.exit(f"bench/nilearn_tail.py settings {ours} differ from {PIPELINE} {preset}")


def warm(data: Path) -> None:
    """Read every input once so that neither run pays for a cold page cache."""
    for path in data.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass


def cpu_seconds(proc: subprocess.Popen, every: float = 0.5) -> tuple[float, float]:
    """User + system CPU time of ``proc`` with all its descendants, and of ``proc`` alone, sampled
    every ``every`` s until it exits (a process living less than that may be missed). nipype's
    workers are grandchildren, under the forkserver: the OS's children accounting misses them."""
    import psutil

    seen: dict[tuple[int, float], float] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in family:
            try:
                with p.oneshot():
                    times = p.cpu_times()
                    seen[(p.pid, p.create_time())] = times.user + times.system
            except psutil.NoSuchProcess:
                pass
        time.sleep(every)
    return sum(seen.values()), seen.get((root.pid, root.create_time()), 0.0)


def timed(cmd: list[str], log: Path) -> tuple[float, float]:
    """Wall time and CPU time (all processes of the command) of ``cmd``, in s."""
    print(f"\n$ {' '.join(map(str, cmd))}\n  ({load()})", flush=True)
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT)
        cpu, main_cpu = cpu_seconds(proc)
        proc.wait()
    wall = time.time() - start
    if proc.returncode != 0:
        print(log.read_text()[-3000:])
        sys.exit(f"failed with exit code {proc.returncode} (log {log})")
    print(f"  {wall:.1f} s wall, {cpu:.0f} s CPU in all its processes ({main_cpu:.0f} s in the main one) = "
          f"{cpu / wall:.2f} cores busy on average (load after: {load()})")
    return wall, cpu


def node_kind(fullname: str) -> str:
    """``conntool_connectome.connectome_sub_07.connectome_0_Sim100.parcellate`` → ``parcellate``;
    the run's sink and the atlas's sink are told apart."""
    parts = fullname.split(".")
    return "sink_run" if parts[-1].startswith("sink_run") else parts[-1]


def profile(log: Path, work: Path, launched: float, wall: float, n: int) -> None:
    """Where conntool's wall time went: before the first node, per node kind (nipype's own
    interface time vs the node's time seen by the progress callback), after the last node."""
    callback = defaultdict(list)
    for match in re.finditer(r"^\[conntool\] \d+/\d+ .*? (\S+): ([\d.]+) s$", log.read_text(), re.M):
        callback[node_kind(match[1])].append(float(match[2]))
    interface, starts, ends = defaultdict(list), [], []
    from nipype.utils.filemanip import loadpkl

    for result in work.rglob("result_*.pklz"):
        runtime = loadpkl(result).runtime
        if getattr(runtime, "duration", None) is None:
            continue
        interface[result.parent.name if not result.parent.name.startswith("sink_run") else "sink_run"].append(
            runtime.duration)
        starts.append(datetime.fromisoformat(runtime.startTime).timestamp())
        ends.append(datetime.fromisoformat(runtime.endTime).timestamp())
    first, last = min(starts) - launched, max(ends) - launched
    busy = sum(sum(v) for v in interface.values())
    print(f"\nwhere conntool's {wall:.0f} s went ({n} participants, 2 worker processes):")
    print(f"  before the first node starts (Python + imports, validation of {n} runs, workflow build, "
          f"nipype graph set-up): {first:.1f} s")
    print(f"  nodes running: {last - first:.1f} s; after the last node (summary, exit): {wall - last:.1f} s")
    print(f"  {'node':<14}{'count':>6}{'interface s':>13}{'callback s':>12}{'mean interface':>16}{'mean callback':>15}")
    for kind in sorted(interface, key=lambda k: -sum(interface[k])):
        i, c = interface[kind], callback.get(kind, [])
        print(f"  {kind:<14}{len(i):>6}{sum(i):>13.1f}{sum(c):>12.1f}{np.mean(i):>16.2f}"
              f"{(np.mean(c) if c else float('nan')):>15.2f}")
    total_cb = sum(sum(v) for v in callback.values())
    print(f"  interface time (the science and its file I/O) {busy:.0f} s of {2 * (last - first):.0f} worker-s "
          f"available while nodes ran ({busy / (2 * (last - first)):.0%}); node time seen by the progress "
          f"callback {total_cb:.0f} s (the difference is nipype's per-node work: hashing, pickling, "
          f"reports, worker start-up, polling)")


def startup(data: Path) -> None:
    """(Run in a fresh process.) The steps ``conntool connectome`` takes before its first node
    can start, timed one by one: imports, validation of every run, the atlas checks, the
    workflow build, nipype's graph expansion."""
    steps, t = {}, time.perf_counter()
    from nipype.pipeline import engine as pe
    from nipype.pipeline.engine.utils import generate_expanded_graph

    from conntool.atlases import check_overlap, resolve_atlas
    from conntool.config import load_pipeline
    from conntool.fmriprep import find_preprocessed
    from conntool.workflows.fmriprep import init_preproc_connectome_wf

    steps["imports"], t = time.perf_counter() - t, time.perf_counter()
    participants = find_preprocessed(data, [], None)
    steps[f"validation of {len(participants)} runs (every voxel read)"] = time.perf_counter() - t
    t = time.perf_counter()
    atlas_dir = data / "sourcedata" / "simulation"
    atlas = resolve_atlas(ATLAS, atlas_dir)
    check_overlap(atlas)
    steps["atlas resolution and overlap check"], t = time.perf_counter() - t, time.perf_counter()
    wf = pe.Workflow(name="startup")
    wf.add_nodes([init_preproc_connectome_wf(p, [(ATLAS, atlas)], str(atlas_dir), load_pipeline(PIPELINE),
                                             Path("/nonexistent"), report=False) for p in participants])
    steps["workflow build"], t = time.perf_counter() - t, time.perf_counter()
    generate_expanded_graph(wf._create_flat_graph())
    steps["nipype graph flattening and expansion"] = time.perf_counter() - t
    print("  " + "; ".join(f"{k} {v:.1f} s" for k, v in steps.items()))


def compare(out_conntool: Path, out_nilearn: Path, data: Path) -> float:
    """Max |conntool - nilearn| over the Pearson matrices of every participant (nodes both have)."""
    names = pd.read_csv(data / "sourcedata" / "simulation" / f"atlas-{ATLAS}_dseg.tsv", sep="\t")
    index = dict(zip(names["name"], names["index"]))
    worst, nodes, excluded = 0.0, [], 0
    for sub in sorted(p.name for p in data.glob("sub-*")):
        func = out_conntool / sub / "func"
        qc = json.loads(next(func.glob("*_desc-denoise_qc.json")).read_text())
        theirs = out_nilearn / f"{sub}_pearson.tsv"
        if qc["Excluded"] or not theirs.is_file():
            if qc["Excluded"] != (not theirs.is_file()):
                sys.exit(f"{sub}: conntool excluded={qc['Excluded']}, nilearn wrote matrices={theirs.is_file()}")
            excluded += 1
            continue
        ours = pd.read_csv(next(func.glob(f"*_seg-{ATLAS}_meas-PearsonCorrelation_relmat.tsv")), sep="\t",
                           na_values="n/a")
        theirs = pd.read_csv(theirs, sep="\t")
        ours_ids = [index[c] for c in ours.columns]
        theirs_ids = [int(c) for c in theirs.columns]
        a = ours.to_numpy(float)
        common = [x for k, x in enumerate(ours_ids) if np.isfinite(a[k, k]) and x in theirs_ids]
        i = [ours_ids.index(x) for x in common]
        j = [theirs_ids.index(x) for x in common]
        worst = max(worst, float(np.abs(a[np.ix_(i, i)] - theirs.to_numpy(float)[np.ix_(j, j)]).max()))
        nodes.append((len(common), len(ours_ids), len(theirs_ids)))
    common, ours_n, theirs_n = np.min(nodes, axis=0)
    print(f"\nequality: {len(nodes)} participants compared ({excluded} excluded by both); nodes compared >= {common} "
          f"(conntool {ours_n}, nilearn {theirs_n}); Pearson max |conntool - nilearn| = {worst:.2e} "
          f"({'OK' if worst < TOLERANCE else 'FAIL'}, tolerance {TOLERANCE:g})")
    return worst


def main(out: Path, n: int) -> None:
    out = out.absolute()
    check_settings()
    data = simulate(out, n)
    atlas_dir = data / "sourcedata" / "simulation"
    atlas = next(atlas_dir.glob(f"atlas-{ATLAS}_*dseg.nii.gz"))
    runs = out / "cohort" / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    warm(data)
    conntool = Path(sys.executable).with_name("conntool")

    launched = time.time()
    wall_c, cpu_c = timed([conntool, "connectome", data, runs / "conntool", "--atlas", ATLAS, "--atlas-dir",
                           atlas_dir, "--pipeline", PIPELINE, "--work-dir", runs / "work", "--nprocs", "2",
                           "--no-report"],
                          runs / "conntool.log")
    wall_n, cpu_n = timed([sys.executable, HERE / "nilearn_tail.py", data, atlas, runs / "nilearn"],
                          runs / "nilearn.log")
    print("  " + [ln for ln in (runs / "nilearn.log").read_text().splitlines() if ln.startswith("nilearn tail:")][-1])

    profile(runs / "conntool.log", runs / "work", launched, wall_c, n)
    print(f"  start-up steps timed alone ({load()}):", flush=True)
    subprocess.run([sys.executable, __file__, "--startup", data], check=True)
    shutil.rmtree(runs / "work")  # mostly the uncompressed denoised series: ~70 MB per participant
    worst = compare(runs / "conntool", runs / "nilearn", data)
    rate_c, rate_n = n / wall_c * 60, n / wall_n * 60
    print(f"\nconntool connectome (MultiProc, 2 processes): {n} participants in {wall_c:.1f} s = "
          f"{rate_c:.2f} participants/min ({cpu_c / n:.2f} CPU s per participant)")
    print(f"plain nilearn script (sequential, 1 process): {n} participants in {wall_n:.1f} s = "
          f"{rate_n:.2f} participants/min ({cpu_n / n:.2f} CPU s per participant)")
    print(f"tail throughput ratio conntool/nilearn: {rate_c / rate_n:.2f}")
    if worst >= TOLERANCE:
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--startup"]:
        sys.exit(startup(Path(sys.argv[2])))
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out"), int(sys.argv[2]) if len(sys.argv) > 2 else 100)
