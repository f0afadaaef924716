"""Tractography (DIPY LocalTracking) and structural connectivity matrices."""
from __future__ import annotations

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


def track(direction_getter, criterion, seed_mask: np.ndarray, affine: np.ndarray, seeds_per_voxel: int,
          step_size_mm: float, min_length_mm: float, max_length_mm: float, seed: int) -> Streamlines:
    """Streamlines from random seeds in ``seed_mask`` (recorded ``seed``), length-filtered."""
    from dipy.tracking.local_tracking import LocalTracking
    from dipy.tracking.streamline import length
    from dipy.tracking.utils import random_seeds_from_mask

    seeds = random_seeds_from_mask(seed_mask, affine, seeds_count=seeds_per_voxel, seed_count_per_voxel=True,
                                   random_seed=seed)
    generator = LocalTracking(direction_getter, criterion, seeds, affine, step_size=step_size_mm,
                              maxlen=int(max_length_mm / step_size_mm), random_seed=seed, return_all=False)
    streamlines = Streamlines(generator)
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
