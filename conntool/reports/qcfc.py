"""QC-FC: how much of a cohort's functional connectivity follows head motion (Ciric 2017).

For every edge, the correlation across participants between its connectivity and the
participants' mean framewise displacement. After good denoising few edges remain
significantly related to motion. Written here because no maintained library computes it;
the per-edge Pearson test is vectorised over edges.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class QcFc:
    """QC-FC of a cohort.

    ``r`` and ``p`` have one value per edge (upper triangle of the matrices, numpy row
    order) with data in every participant; ``fraction_significant`` counts edges with
    p < 0.05 uncorrected, ``fraction_significant_fdr`` after Benjamini-Hochberg (q < 0.05).
    """

    r: np.ndarray
    p: np.ndarray
    n_participants: int
    n_edges_left_out: int
    fraction_significant: float
    fraction_significant_fdr: float
    median_abs_r: float


def qc_fc(matrices: np.ndarray, mean_fd: np.ndarray, alpha: float = 0.05) -> QcFc:
    """QC-FC of ``matrices`` (N participants × k × k, symmetric) against ``mean_fd`` (N, mm).

    Edges with a NaN in any participant are left out (and counted). Needs at least 4
    participants (the test has N − 2 degrees of freedom).
    """
    matrices = np.asarray(matrices, float)
    mean_fd = np.asarray(mean_fd, float)
    n = len(mean_fd)
    if n < 4 or matrices.shape[0] != n:
        raise ValueError(f"QC-FC needs at least 4 participants with one mean FD each (got {matrices.shape[0]}, {n})")
    upper = np.triu_indices(matrices.shape[1], 1)
    edges = matrices[:, upper[0], upper[1]]
    complete = np.isfinite(edges).all(axis=0)
    edges = edges[:, complete]
    fc = edges - edges.mean(axis=0)
    fd = mean_fd - mean_fd.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = fc.T @ fd / (np.linalg.norm(fc, axis=0) * np.linalg.norm(fd))
        r = np.clip(np.nan_to_num(r), -1.0, 1.0)
        t = r * np.sqrt((n - 2) / np.maximum(1 - r ** 2, 1e-12))
    p = 2 * stats.t.sf(np.abs(t), n - 2)
    fdr = stats.false_discovery_control(p) if p.size else p
    return QcFc(r=r, p=p, n_participants=n, n_edges_left_out=int((~complete).sum()),
                fraction_significant=float((p < alpha).mean()) if p.size else float("nan"),
                fraction_significant_fdr=float((fdr < alpha).mean()) if p.size else float("nan"),
                median_abs_r=float(np.median(np.abs(r))) if r.size else float("nan"))
