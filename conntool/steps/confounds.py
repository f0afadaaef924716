"""Nuisance regressors (fMRIPrep column names) and the named strategies that pick them."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.algorithms.confounds import compute_noise_components

MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


def expand(frame: pd.DataFrame) -> pd.DataFrame:
    """Add backward-difference derivatives, squares and squared derivatives (Friston 24)."""
    deriv = frame.diff().fillna(0.0).add_suffix("_derivative1")
    return pd.concat([frame, deriv, (frame ** 2).add_suffix("_power2"), (deriv ** 2).add_suffix("_power2")],
                     axis=1)


def acompcor(data: np.ndarray, masks: dict[str, np.ndarray], n_components: int) -> pd.DataFrame:
    """Anatomical CompCor components of (X, Y, Z, T) ``data`` in the WM and CSF masks, separately (nipype)."""
    columns = {}
    for tissue in ("wm", "csf"):
        mask_img = nib.Nifti1Image(masks[tissue].astype(np.uint8), np.eye(4))
        components, _, _ = compute_noise_components(
            data, [mask_img], components_criterion=n_components, filter_type="polynomial", degree=1,
            failure_mode="nan",
        )
        for k in range(components.shape[1]):
            columns[f"{'w' if tissue == 'wm' else 'c'}_comp_cor_{k:02d}"] = components[:, k]
    return pd.DataFrame(columns)


def confounds_table(motion: np.ndarray, fd: np.ndarray, dvars: tuple[np.ndarray, np.ndarray],
                    bold: nib.Nifti1Image, masks: dict[str, np.ndarray], n_components: int) -> pd.DataFrame:
    """Every candidate regressor for one run, one row per volume."""
    data = np.asarray(bold.dataobj, np.float32)
    tissue = pd.DataFrame({
        "global_signal": data[masks["brain"]].mean(axis=0),
        "white_matter": data[masks["wm"]].mean(axis=0),
        "csf": data[masks["csf"]].mean(axis=0),
    })
    table = pd.concat([expand(pd.DataFrame(motion, columns=MOTION)), expand(tissue),
                       acompcor(data, masks, n_components)], axis=1)
    table["framewise_displacement"] = fd
    table["std_dvars"], table["dvars"] = dvars
    return table


def _motion_columns(n: int) -> list[str]:
    if n == 6:
        return MOTION
    return MOTION + [f"{c}_derivative1" for c in MOTION] + [f"{c}_power2" for c in MOTION] + [
        f"{c}_derivative1_power2" for c in MOTION]


def select(table: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """The regressors of a named strategy (Satterthwaite 2013; Ciric 2017; Behzadi 2007)."""
    tissue = ["white_matter", "csf", "global_signal"]
    if strategy == "6P":
        columns = _motion_columns(6)
    elif strategy == "9P":
        columns = _motion_columns(6) + tissue
    elif strategy == "24P":
        columns = _motion_columns(24)
    elif strategy == "36P":
        columns = _motion_columns(24) + tissue + [f"{c}_derivative1" for c in tissue] + [
            f"{c}_power2" for c in tissue] + [f"{c}_derivative1_power2" for c in tissue]
    elif strategy == "aCompCor":
        columns = _motion_columns(24) + [c for c in table.columns if "_comp_cor_" in c]
    else:
        raise ValueError(f"unknown confound strategy {strategy}")
    return table[columns].fillna(0.0)
