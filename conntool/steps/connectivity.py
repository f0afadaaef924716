"""Connectivity matrices from parcel time series (nilearn ``ConnectivityMeasure``)."""
from __future__ import annotations

import numpy as np
from nilearn.connectome import ConnectivityMeasure
from sklearn.covariance import EmpiricalCovariance, LedoitWolf

KINDS = {"pearson": "correlation", "partial": "partial correlation", "covariance": "covariance",
         "precision": "precision"}
BIDS_MEASURE = {"pearson": "PearsonCorrelation", "partial": "PartialCorrelation", "covariance": "Covariance",
                "precision": "Precision"}


def covariance_estimator(measure: str) -> str:
    """Estimator behind ``measure``: the plain sample covariance, except for the inverse
    measures, where Ledoit-Wolf shrinkage keeps the inverse stable when nodes are many
    against the degrees of freedom left after denoising (nilearn's default)."""
    return "LedoitWolf" if measure in ("partial", "precision") else "Empirical"


def connectivity_matrix(timeseries: np.ndarray, measure: str) -> np.ndarray:
    """(N, N) matrix over the nodes with data; NaN rows/columns where a node has none.

    The empirical (maximum-likelihood) covariance is used for ``pearson`` and
    ``covariance`` so that they are the plain sample statistics; see ``covariance_estimator``.
    """
    n_nodes = timeseries.shape[1]
    have = np.isfinite(timeseries).all(axis=0)
    out = np.full((n_nodes, n_nodes), np.nan)
    if have.sum() < 2:
        return out
    cov = LedoitWolf() if covariance_estimator(measure) == "LedoitWolf" else EmpiricalCovariance()
    estimator = ConnectivityMeasure(cov_estimator=cov, kind=KINDS[measure], standardize=False)
    out[np.ix_(have, have)] = estimator.fit_transform([timeseries[:, have]])[0]
    return out


def fisher_z(matrix: np.ndarray) -> np.ndarray:
    """arctanh of a correlation matrix; the diagonal (r = 1) is set to 0."""
    z = np.arctanh(np.clip(matrix, -1 + 1e-7, 1 - 1e-7))
    diag = np.isfinite(np.diag(matrix))
    z[np.diag_indices_from(z)] = np.where(diag, 0.0, np.nan)
    return z
