"""Benchmark at today's scan sizes: one simulated participant of a size profile (``hcp`` by
default: 1 mm T1w, 2 mm BOLD 96x114x96 x 600 volumes at TR 0.8 s, 2 mm DWI of 96 volumes on
b = 0/1000/2000/3000) through the fMRI and dMRI paths, with nipype's resource monitor: per node
wall time, CPU time and peak memory, and the whole path's wall time and peak memory.

The participant is simulated once and kept under OUT_DIR/scale-<profile>/bids (minutes, a
few GB). Each path's matrices are compared with those of the first run, kept as the reference
under OUT_DIR/scale-<profile>/reference-<path> (delete it to make a new one), and with the
simulation's truth.

Usage: python bench/bench_scale.py OUT_DIR [--profile hcp|abcd|small] [--paths fmri,dmri]
       [--volumes N] [--fmri-preset NAME|YAML] [--dmri-preset NAME|YAML] [--resume] (make bench-scale)

The shipped defaults (fmri-default, dmri-csd-prob) run unless a preset is named, e.g. an edited
copy that switches one speed-up off to check that the others leave the matrices unchanged.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from monitor import run_and_report

from conntool.atlases import resolve_atlas
from conntool.bids import find_participant
from conntool.config import load_pipeline
from conntool.outputs import read_tsv
from conntool.simulate import PROFILES, simulate_dataset
from conntool.steps.confounds import MOTION
from conntool.workflows.dmri import init_dmri_wf
from conntool.workflows.fmri import init_fmri_wf

TRANSLATIONS = MOTION[:3]  # trans_x, trans_y, trans_z


def simulated(root: Path, profile: str, n_volumes: int | None, modalities: tuple[str, ...]) -> Path:
    """The BIDS folder of the profile's participant, simulated on the first call (with the
    ``modalities`` of that call)."""
    bids = root / "bids"
    if not (bids / "participants.tsv").exists():  # written last: its absence means unfinished
        shutil.rmtree(bids, ignore_errors=True)
        settings = PROFILES[profile]
        if n_volumes:
            settings = dataclasses.replace(settings, n_volumes=n_volumes)
        start = time.time()
        simulate_dataset(bids, 1, seed=0, modalities=modalities, settings=settings)
        size = sum(f.stat().st_size for f in bids.rglob("*") if f.is_file()) / 2 ** 30
        print(f"simulate ({profile}): {time.time() - start:.0f} s, {size:.2f} GiB on disk", flush=True)
    return bids


def compare(label: str, outputs: list[Path], reference: Path) -> None:
    """Matrices against the first run's (kept in ``reference``): bit for bit, or the largest
    difference (the TSVs hold 10 significant digits)."""
    if not reference.exists():
        reference.mkdir(parents=True)
        for path in outputs:
            shutil.copy2(path, reference / path.name)
        print(f"{label}: {len(outputs)} matrices kept as the reference in {reference}")
        return
    worst, identical = 0.0, True
    for path in outputs:
        kept = reference / path.name
        if not kept.exists():
            print(f"{label}: {path.name} has no reference")
            continue
        identical &= kept.read_bytes() == path.read_bytes()
        a, b = read_tsv(path).to_numpy(float), read_tsv(kept).to_numpy(float)
        both = np.isfinite(a) & np.isfinite(b)
        worst = max(worst, float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0)
        if not np.array_equal(np.isfinite(a), np.isfinite(b)):
            print(f"{label}: {path.name}: missing values differ from the reference")
    print(f"{label}: matrices vs reference: {'identical bytes' if identical else f'max |difference| {worst:.3g}'}")


def fresh(root: Path, path: str, resume: bool) -> Path:
    """The output folder of ``path``; its work and output folders emptied unless ``resume``
    (then nodes finished by an earlier, interrupted run are reused and reported with the times
    they took then)."""
    if not resume:
        for folder in (f"work-{path}", f"derivatives-{path}"):
            shutil.rmtree(root / folder, ignore_errors=True)
    return (root / f"derivatives-{path}").absolute()


def bench_fmri(root: Path, bids: Path, preset: str, n_procs: int, resume: bool) -> None:
    atlas_dir = (bids / "derivatives" / "simulation").absolute()
    out = fresh(root, "fmri", resume)
    participant = find_participant(bids.absolute(), "01", "fmri")
    wf = init_fmri_wf(participant, [("Sim100", resolve_atlas("Sim100", atlas_dir))], str(atlas_dir),
                      load_pipeline(preset), out)
    run = participant.bold[0]
    label = f"whole fMRI path ({preset}; {run.n_volumes} volumes, TR {run.tr} s)"
    run_and_report(wf, root / "work-fmri", label + (" (resumed: the wall time is this run's)" if resume else ""),
                   n_procs)
    matrices = sorted(out.rglob("*_relmat.tsv"))
    compare("fMRI", matrices, root / "reference-fmri")
    pearson = next(p for p in matrices if "meas-PearsonCorrelation_relmat" in p.name)
    truth = read_tsv(atlas_dir / "sub-01" / "sub-01_task-rest_desc-realised_relmat.tsv").to_numpy(float)
    found = read_tsv(pearson).to_numpy(float)
    upper = np.triu_indices_from(found, 1)
    ok = np.isfinite(found[upper])
    print(f"fMRI: Pearson FC vs the realised truth: r = {np.corrcoef(found[upper][ok], truth[upper][ok])[0, 1]:.3f}")
    simulation = atlas_dir / "sub-01"
    n_dummy = json.loads((simulation / "sub-01_task-rest_desc-truth.json").read_text())["NonSteadyStateVolumes"]
    true_motion = read_tsv(simulation / "sub-01_task-rest_desc-truth_motion.tsv")[MOTION].to_numpy(float)[n_dummy:]
    moved = true_motion[:, :3]  # trans_x, trans_y, trans_z
    estimated = read_tsv(next(out.rglob("*_desc-confounds_timeseries.tsv")))[TRANSLATIONS].to_numpy(float)
    error = (estimated - estimated.mean(0)) - (moved - moved.mean(0))  # both relative to their own reference
    print("fMRI: translations vs the simulated motion: r = "
          + ", ".join(f"{np.corrcoef(estimated[:, k], moved[:, k])[0, 1]:.3f}" for k in range(3))
          + f"; RMS error {np.sqrt((error ** 2).mean()):.3f} mm")
    coregistration_error(root / "work-fmri", run.path, true_motion)


def coregistration_error(work: Path, bold: Path, true_motion: np.ndarray) -> None:
    """BOLD reference ↔ T1w against the simulation. The simulated T1w and the BOLD at rest share
    world coordinates, so the true T1w → reference matrix is E_t⁻¹ R_t for any volume t (R_t the
    simulated rest → volume t motion, E_t the estimated reference → volume t): its median over
    the volumes, spread a few hundredths of a mm. Printed: the distance between where the true
    and the estimated matrices put the T1w's brain voxels."""
    import nibabel as nib

    from conntool.steps.motion import rigid_matrix, volume_centre

    estimated = np.load(next(work.rglob("motion_correction/motion_transforms.npy")))
    centre = volume_centre(nib.load(bold))
    truth = np.median([np.linalg.inv(e) @ rigid_matrix(m, centre) for e, m in zip(estimated, true_motion)], axis=0)
    coreg = np.load(next(work.rglob("boldref_to_t1w/t1w_to_boldref.npy")))
    mask = nib.load(next(work.rglob("skullstrip/brain_mask.nii.gz")))
    points = nib.affines.apply_affine(mask.affine, np.argwhere(np.asarray(mask.dataobj) > 0))
    distance = np.linalg.norm(nib.affines.apply_affine(coreg, points) - nib.affines.apply_affine(truth, points), axis=1)
    print(f"fMRI: BOLD reference -> T1w vs the simulation: {distance.mean():.3f} mm mean, {distance.max():.3f} mm "
          "largest over the brain")


def bench_dmri(root: Path, bids: Path, preset: str, n_procs: int, resume: bool) -> None:
    atlas_dir = (bids / "derivatives" / "simulation").absolute()
    out = fresh(root, "dmri", resume)
    wf = init_dmri_wf(find_participant(bids.absolute(), "01", "dmri"),
                      [("Sim100", resolve_atlas("Sim100", atlas_dir))], str(atlas_dir),
                      load_pipeline(preset), out)
    run_and_report(wf, root / "work-dmri", f"whole dMRI path ({preset})" + (" (resumed)" if resume else ""),
                   n_procs)
    matrices = sorted(out.rglob("*_relmat.tsv"))
    compare("dMRI", matrices, root / "reference-dmri")
    from scipy.stats import spearmanr

    counts = next(p for p in matrices if "meas-StreamlineCount_relmat" in p.name)
    truth = read_tsv(atlas_dir / "seg-Sim100_meas-StreamlineCount_desc-truth_relmat.tsv").to_numpy(float)
    found = read_tsv(counts).to_numpy(float)
    upper = np.triu_indices_from(found, 1)
    print(f"dMRI: streamline counts vs the planted bundles: Spearman "
          f"{spearmanr(np.nan_to_num(found[upper]), truth[upper]).statistic:.3f}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("bench/out"))
    parser.add_argument("--profile", choices=sorted(PROFILES), default="hcp")
    parser.add_argument("--paths", default="fmri,dmri", help="comma-separated: fmri, dmri")
    parser.add_argument("--volumes", type=int, help="BOLD volumes instead of the profile's (e.g. 1200)")
    parser.add_argument("--fmri-preset", default="fmri-default", help="preset name or YAML file")
    parser.add_argument("--dmri-preset", default="dmri-csd-prob", help="preset name or YAML file")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--resume", action="store_true",
                        help="keep the work folders: reuse the nodes an interrupted run finished")
    args = parser.parse_args(argv)
    root = args.out / f"scale-{args.profile}{f'-{args.volumes}' if args.volumes else ''}"
    root.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
          flush=True)
    paths = {p.strip() for p in args.paths.split(",") if p.strip()}
    bids = simulated(root, args.profile, args.volumes, tuple(sorted(paths)))
    if "fmri" in paths:
        bench_fmri(root, bids, args.fmri_preset, args.nprocs, args.resume)
    if "dmri" in paths:
        bench_dmri(root, bids, args.dmri_preset, args.nprocs, args.resume)


if __name__ == "__main__":
    main(sys.argv[1:])
