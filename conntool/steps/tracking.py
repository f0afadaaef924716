"""Tractography (DIPY LocalTracking) and structural connectivity matrices."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dipy.tracking.streamline import Streamlines


def stopping_criterion(kind: str, fa: np.ndarray, fa_threshold: float, tissue: dict[str, np.ndarray] | None,
                       step_size_mm: float, voxel_size_mm: float):
    """FA threshold, or continuous map criterion (Girard 2014) from WM/GM/CSF maps."""
    from dipy.tracking.stopping_criterion import CmcStoppingCriterion, ThresholdStoppingCriterion

    if kind == "fa":
        return ThresholdStoppingCriterion(fa, fa_threshold)
    return CmcStoppingCriterion.from_pve(tissue["wm"], tissue["gm"], tissue["csf"], step_size=step_size_mm,
                                         average_voxel_size=voxel_size_mm)


@dataclass(frozen=True)
class TrackerRecipe:
    """What a tracking process builds its direction getter and stopping criterion from:
    arrays and numbers only, so that it can be sent to worker processes (DIPY's getters and
    criteria cannot be pickled). ``source``: :func:`conntool.steps.dwi_model.pmf_source`;
    ``stopping``: the arguments of :func:`stopping_criterion`."""

    source: tuple[str, np.ndarray]
    tracking: str
    max_angle_deg: float
    stopping: tuple

    def build(self):
        from conntool.steps.dwi_model import direction_getter

        return (direction_getter(self.source, self.tracking, self.max_angle_deg),
                stopping_criterion(*self.stopping))


_WORKER: dict = {}  #: the tracker of this (worker) process, set by _start_tracker


def _start_tracker(recipe: TrackerRecipe, affine: np.ndarray, step_size_mm: float, max_steps: int, seed: int) -> None:
    """Initialiser of a tracking process: one BLAS thread, its own getter and criterion."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    getter, criterion = recipe.build()
    _WORKER.update(getter=getter, criterion=criterion, affine=affine, step=step_size_mm, steps=max_steps, seed=seed)


def _track_seeds(seeds: np.ndarray) -> list[np.ndarray]:
    from dipy.tracking.local_tracking import LocalTracking

    w = _WORKER
    return list(LocalTracking(w["getter"], w["criterion"], seeds, w["affine"], step_size=w["step"],
                              maxlen=w["steps"], random_seed=w["seed"], return_all=False))


def track(recipe: TrackerRecipe, seed_mask: np.ndarray, affine: np.ndarray, seeds_per_voxel: int,
          step_size_mm: float, min_length_mm: float, max_length_mm: float, seed: int,
          n_processes: int = 1) -> Streamlines:
    """Streamlines from random seeds in ``seed_mask`` (recorded ``seed``), length-filtered.

    DIPY's LocalTracking reseeds its random generators from each seed point and ``seed``, so
    every streamline depends on its seed alone: the seeds are tracked in ``n_processes``
    processes, a contiguous share each, and the result is the same for any number.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from dipy.tracking.streamline import length
    from dipy.tracking.utils import random_seeds_from_mask

    seeds = random_seeds_from_mask(seed_mask, affine, seeds_count=seeds_per_voxel, seed_count_per_voxel=True,
                                   random_seed=seed)
    start = (recipe, affine, step_size_mm, int(max_length_mm / step_size_mm), seed)
    if n_processes > 1 and len(seeds) > 1:
        with ProcessPoolExecutor(n_processes, mp_context=multiprocessing.get_context("forkserver"),
                                 initializer=_start_tracker, initargs=start) as pool:
            parts = list(pool.map(_track_seeds, np.array_split(seeds, n_processes)))
    else:
        _start_tracker(*start)
        parts = [_track_seeds(seeds)]
    streamlines = Streamlines([s for part in parts for s in part])
    lengths = np.asarray(length(streamlines)) if len(streamlines) else np.zeros(0)
    keep = (lengths >= min_length_mm) & (lengths <= max_length_mm)
    return Streamlines([s for s, k in zip(streamlines, keep) if k])


def assign_by_radial_search(labels: np.ndarray, radius_voxels: float) -> np.ndarray:
    """Unlabelled voxels take the nearest label within ``radius_voxels`` (as MRtrix3's
    tck2connectome radial search), so streamlines ending just short of grey matter count."""
    from scipy import ndimage

    if radius_voxels <= 0 or not labels.any():
        return labels
    distance, nearest = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    grown = labels[tuple(nearest)]
    return np.where((labels == 0) & (distance <= radius_voxels), grown, labels)


def structural_matrices(streamlines: Streamlines, affine: np.ndarray, labels: np.ndarray,
                        label_ids: tuple[int, ...], fa: np.ndarray,
                        search_radius_voxels: float = 0.0) -> dict[str, np.ndarray]:
    """Streamline count, count normalised by node volumes, mean length (mm) and mean FA per edge.

    Nodes follow ``label_ids`` order; an edge no streamline reaches has count 0 and n/a
    length and FA. Endpoints are assigned with a radial search of ``search_radius_voxels``.
    Normalised count is ``2 count / (V_i + V_j)`` (Hagmann 2008), volumes in voxels of the
    atlas itself (before the search).
    """
    from dipy.tracking.streamline import length, values_from_volume
    from dipy.tracking.utils import connectivity_matrix

    ids = np.asarray(label_ids)
    index = np.zeros(max(int(labels.max()), int(ids.max())) + 1, np.int64)
    index[ids] = np.arange(1, len(ids) + 1)  # 0 stays background
    node_labels = index[labels.astype(np.int64)]
    volumes = np.bincount(node_labels.ravel(), minlength=len(ids) + 1)[1:].astype(float)
    node_labels = assign_by_radial_search(node_labels, search_radius_voxels)
    n = len(ids)
    count = np.zeros((n, n))
    mean_length = np.full((n, n), np.nan)
    mean_fa = np.full((n, n), np.nan)
    if len(streamlines):
        full, grouping = connectivity_matrix(streamlines, affine, node_labels, return_mapping=True,
                                             mapping_as_streamlines=True, symmetric=True)
        count = full[1:, 1:].astype(float)
        for (a, b), members in grouping.items():
            if a == 0 or b == 0:
                continue
            fa_values = values_from_volume(fa, members, affine)
            for i, j in ((a - 1, b - 1), (b - 1, a - 1)):
                mean_length[i, j] = float(np.mean(length(members)))
                mean_fa[i, j] = float(np.mean([np.mean(v) for v in fa_values]))
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(volumes[:, None] + volumes[None, :] > 0,
                              2 * count / (volumes[:, None] + volumes[None, :]), np.nan)
    return {"StreamlineCount": count, "StreamlineCountVolumeNormalized": normalised,
            "MeanLength": mean_length, "MeanFA": mean_fa}
