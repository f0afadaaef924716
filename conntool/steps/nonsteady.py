"""Detection of non-steady-state (dummy) volumes at the start of a BOLD run."""
from __future__ import annotations

import numpy as np
from nipype.algorithms.confounds import is_outlier
from scipy.stats import theilslopes

#: only the first volumes are examined (nipype's default); a caller reads no more than these
MAX_VOLUMES = 50


def count_nonsteady_volumes(bold: np.ndarray, max_volumes: int = MAX_VOLUMES) -> int:
    """Number of leading volumes whose global mean is an outlier.

    The rule of nipype's ``NonSteadyStateDetector`` (modified z-score > 3.5 over the
    first ``max_volumes``), applied after removing a robust (Theil-Sen) linear trend:
    the global mean varies so little that scanner drift alone otherwise flags the
    first steady volumes.

    Parameters
    ----------
    bold : (X, Y, Z, T) array
    """
    global_signal = bold[..., :max_volumes].mean(axis=(0, 1, 2))
    times = np.arange(len(global_signal))
    slope, intercept, _, _ = theilslopes(global_signal, times)
    return int(is_outlier(global_signal - (intercept + slope * times)))
