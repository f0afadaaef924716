"""Memory (``mem_gb``) and threads (``n_procs``) every node declares, worked out when the
workflow is built from the image headers (no data is read), so that MultiProc does not start
two nodes that together need more memory than the machine has (nipype's SLURM, SGE and PBS
plugins do not read them: a job's memory is what ``--plugin-args`` asks for).

A node's estimate is a fixed part (the Python worker with its libraries, the 3D images the
step holds and, for the fMRI series steps, the chunks they stream: :mod:`conntool.series`,
256 MB by default) plus so many float32 copies of the series it works on: the native series
(BOLD or DWI as acquired, every volume) or the template-space series (the template grid at the
preset's resolution, every volume). The fMRI steps stream their series, so they hold no copy
and their memory does not grow with the run length. For the fMRI and anatomical nodes the
figures are the peaks nipype's resource monitor measured on the hcp simulation profile, rounded
up (``bench/bench_scale.py``; the peak in the last column). The DWI ones are read from the code
(MP-PCA: the series as read, a C-ordered copy, one accumulator and the result; Gibbs removal: the
series as read and the result), then checked against the same measurement (the hcp DWI series
is 0.31 GiB; motion_eddy's and dwi_to_t1w's fixed parts were raised to cover it):

=====================  ===============  ======================  ========  =======  ===========
node                   native copies    template-space copies   fixed GB  threads  hcp, GiB
=====================  ===============  ======================  ========  =======  ===========
nonsteady              .                .                       0.6       1        0.5
prepare_series         .                .                       1.2       1        1.0
motion_correction      .                .                       1.3       1        1.1
boldref_to_t1w         .                .                       1.0       1        0.9
fieldmap               .                .                       0.6       1        . (b)
fieldmap_to_boldref    .                .                       0.8       1        . (b)
pepolar_field          .                .                       1.0       1        . (c)
resample               .                .                       1.0       1        0.9
tissue_masks           .                .                       0.5       1        0.4
confounds              .                .                       1.0       1        0.9
smooth                 .                .                       1.0       1        .
denoise                .                .                       2.8       1        2.6
parcellate             .                .                       0.6       1        0.4
connectivity           .                .                       0.5       1        0.4
run_figures            .                .                       0.7       1        0.6
anat_figures           .                .                       1.0       1        0.6
skullstrip             .                .                       1.5       1        1.0
t1w_to_template        .                .                       1.5       1        1.2
segmentation           .                .                       2.0       1        1.8 (a)
dwi denoise (MP-PCA)   4                .                       0.5       1        1.2
gibbs                  2                .                       0.5       2        1.1
pepolar_field          .                .                       1.0       1        . (c)
unwarp                 3                .                       0.6       1        .
motion_eddy            3                .                       1.0       2        1.8
tensor_maps            3                .                       0.5       1        0.9
dwi_to_t1w             1.5              .                       1.1       1        1.5
tractography           5                .                       1.0       2        2.2
dwi_figures            1.5              .                       0.5       1        0.5
=====================  ===============  ======================  ========  =======  ===========

(b) 3D images of the fieldmap's and the BOLD reference's size only; not yet measured.

(c) two mean b=0 images and ANTs' displacement fields only; not yet measured.

(a) N4 and Atropos on nilearn's 1 mm template (197×233×189), peak resident memory of the
process by ``/usr/bin/time -v``.

DWI copies count the series of the node (a MapNode's one series; motion_eddy's all series of
the session, concatenated). Nodes not listed (atlas and tissue maps to DWI space, structural
connectivity, sinks) hold 3D images or tables only and keep nipype's default (0.2 GB, 1
thread). Threads: every step is single-threaded (BLAS included, see
:mod:`conntool.interfaces.base`) except Gibbs removal, which corrects two volumes at a time in threads,
DWI motion correction, which registers volumes in two processes, and tractography, which tracks
the seeds in two processes. The resampling of the BOLD series could interpolate volumes side by
side in threads, but it runs on one: MultiProc starts a two-thread node only when both cores are
free, and the T1w segmentation holds one of them until well after the BOLD branch is done, so
on one core it started 50 s sooner and finished 25 s sooner (hcp profile).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# node → (copies of the native series, copies of the template-space series, fixed GB, threads)
FMRI = {
    "nonsteady": (0, 0, 0.6, 1),
    "prepare_series": (0, 0, 1.2, 1),
    "motion_correction": (0, 0, 1.3, 1),
    "boldref_to_t1w": (0, 0, 1.0, 1),
    "fieldmap": (0, 0, 0.6, 1),
    "fieldmap_to_boldref": (0, 0, 0.8, 1),
    "pepolar_field": (0, 0, 1.0, 1),
    "resample": (0, 0, 1.0, 1),
    "tissue_masks": (0, 0, 0.5, 1),
    "confounds": (0, 0, 1.0, 1),
    "smooth": (0, 0, 1.0, 1),
    "denoise": (0, 0, 2.8, 1),
    "parcellate": (0, 0, 0.6, 1),
    "connectivity": (0, 0, 0.5, 1),
    "run_figures": (0, 0, 0.7, 1),
}
ANAT = {"skullstrip": (0, 0, 1.5, 1), "t1w_to_template": (0, 0, 1.5, 1), "segmentation": (0, 0, 2.0, 1),
        "anat_figures": (0, 0, 1.0, 1)}
DWI = {
    "denoise": (4, 0, 0.5, 1),
    "gibbs": (2, 0, 0.5, 2),
    "pepolar_field": (0, 0, 1.0, 1),
    "unwarp": (3, 0, 0.6, 1),
    "motion_eddy": (3, 0, 1.0, 2),
    "tensor_maps": (3, 0, 0.5, 1),
    "dwi_to_t1w": (1.5, 0, 1.1, 1),
    "tractography": (5, 0, 1.0, 2),
    "dwi_figures": (1.5, 0, 0.5, 1),
}
GIB = 2.0 ** 30
TYPICAL_BOLD_GRID = (64, 64, 40)  # when a header cannot be read (the made-up paths of graph tests)


def image_shape(path) -> tuple[int, ...] | None:
    """Shape from a NIfTI header (nothing else is read); None when there is no readable file."""
    import nibabel as nib

    try:
        return tuple(int(n) for n in nib.load(str(path)).shape)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError):
        return None


def series_gb(source, copies: float = 1.0) -> float:
    """GB (GiB) of ``copies`` float32 copies of a series: ``source`` is an image path (its header
    gives the shape) or a shape."""
    shape = source if isinstance(source, tuple) else image_shape(Path(source))
    if shape is None:
        raise ValueError(f"{source}: no image header to size the series by")
    return copies * float(np.prod(shape, dtype=float)) * 4 / GIB


def resources(table: dict, node: str, native: tuple[int, ...] | None = None,
              template: tuple[int, ...] | None = None) -> dict:
    """``mem_gb`` and ``n_procs`` of ``node`` (keyword arguments of ``pe.Node``) for series of
    shape ``native`` and ``template`` (4D; None for a series the node does not hold)."""
    native_copies, template_copies, fixed, threads = table[node]
    mem = fixed
    if native_copies and native is not None:
        mem += series_gb(native, native_copies)
    if template_copies and template is not None:
        mem += series_gb(template, template_copies)
    return {"mem_gb": round(mem, 2), "n_procs": threads}


def bold_shapes(path, n_volumes: int, template_grid) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(native, template-space) 4D shapes of a BOLD run: the native grid from the header (a
    typical 3 mm grid when it cannot be read), the ``template_grid`` (image) the series is
    resampled to; every volume (the non-steady-state ones are not known before the run)."""
    native = image_shape(path) or TYPICAL_BOLD_GRID + (n_volumes,)
    native = native[:3] + (native[3] if len(native) > 3 else n_volumes,)
    return native, tuple(template_grid.shape[:3]) + (native[3],)


def dwi_shape(paths) -> tuple[int, ...]:
    """4D shape of the series of ``paths`` concatenated (first series' grid, all volumes); a
    typical 3 mm grid of 64 volumes per unreadable file."""
    shapes = [image_shape(p) or TYPICAL_BOLD_GRID + (64,) for p in paths]
    return shapes[0][:3] + (sum(s[3] if len(s) > 3 else 1 for s in shapes),)
