"""Nuisance regressors (fMRIPrep column names) and the named strategies that pick them."""
from __future__ import annotations

import re
from collections.abc import Iterable

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.algorithms.confounds import compute_noise_components

from conntool.config import load_confound_strategy

MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


def expand(frame: pd.DataFrame) -> pd.DataFrame:
    """Add backward-difference derivatives, squares and squared derivatives (Friston 24)."""
    deriv = frame.diff().fillna(0.0).add_suffix("_derivative1")
    return pd.concat([frame, deriv, (frame ** 2).add_suffix("_power2"), (deriv ** 2).add_suffix("_power2")],
                     axis=1)


def acompcor(series: dict[str, np.ndarray], n_components: int) -> pd.DataFrame:
    """Anatomical CompCor components of the WM and CSF voxels' (V, T) ``series``, separately (nipype)."""
    columns = {}
    for tissue in ("wm", "csf"):
        voxels = series[tissue]
        # nipype takes a 4D array and a mask on its grid: the voxels as one row of a (1, 1, V) grid
        mask_img = nib.Nifti1Image(np.ones((1, 1, voxels.shape[0]), np.uint8), np.eye(4))
        components, _, _ = compute_noise_components(
            voxels[None, None], [mask_img], components_criterion=n_components, filter_type="polynomial", degree=1,
            failure_mode="nan",
        )
        for k in range(components.shape[1]):
            columns[f"{'w' if tissue == 'wm' else 'c'}_comp_cor_{k:02d}"] = components[:, k]
    return pd.DataFrame(columns)


def tissue_signals(volumes: Iterable[np.ndarray], masks: dict[str, np.ndarray]) -> tuple[pd.DataFrame, dict]:
    """Mean brain, WM and CSF signals and the WM and CSF voxels' series of a streamed series.

    Parameters
    ----------
    volumes : iterable of (X, Y, Z, n) consecutive chunks of the series
    masks : ``brain``, ``wm``, ``csf`` → (X, Y, Z) bool

    Returns
    -------
    means : (T, 3) ``global_signal``, ``white_matter``, ``csf``
    series : ``wm``, ``csf`` → (V, T) float32, the voxels in C order
    """
    names = {"brain": "global_signal", "wm": "white_matter", "csf": "csf"}
    means = {name: [] for name in names.values()}
    series = {"wm": [], "csf": []}
    for chunk in volumes:
        for tissue, name in names.items():
            voxels = chunk[masks[tissue]]
            means[name].append(voxels.mean(axis=0))
            if tissue in series:
                series[tissue].append(voxels)
    return (pd.DataFrame({name: np.concatenate(parts) for name, parts in means.items()}),
            {tissue: np.concatenate(parts, axis=1) for tissue, parts in series.items()})


def confounds_table(motion: np.ndarray, fd: np.ndarray, dvars: tuple[np.ndarray, np.ndarray],
                    tissue_means: pd.DataFrame, tissue_series: dict[str, np.ndarray],
                    n_components: int) -> pd.DataFrame:
    """Every candidate regressor for one run, one row per volume (inputs: see :func:`tissue_signals`)."""
    table = pd.concat([expand(pd.DataFrame(motion, columns=MOTION)), expand(tissue_means),
                       acompcor(tissue_series, n_components)], axis=1)
    table["framewise_displacement"] = fd
    table["std_dvars"], table["dvars"] = dvars
    return table


def select(table: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """The regressors of a named strategy, as listed in ``pipelines/confounds/<strategy>.yaml``.

    Parameters
    ----------
    table : (T, n_candidates) every candidate regressor of a run (:func:`confounds_table`)
    strategy : a name from :func:`conntool.config.confound_strategy_names`

    Returns
    -------
    (T, n_selected) the strategy's columns in its order (a pattern's matches in table
    order), missing values (a failed CompCor) as 0.
    """
    spec = load_confound_strategy(strategy)
    columns: list[str] = []
    for entry in spec.columns:
        if entry.startswith("^"):
            columns += [c for c in table.columns if re.fullmatch(entry, c)]
        elif entry in table.columns:
            columns.append(entry)
        else:
            raise ValueError(f"confound strategy {strategy}: column {entry} is not in the confound table")
    return table[columns].fillna(0.0)
