"""Diffusion models: tensor maps (FA, MD, AD, RD) and fibre orientations (DTI or CSD)."""
from __future__ import annotations

import numpy as np
from dipy.core.gradients import GradientTable
from dipy.data import default_sphere


def tensor_maps(data: np.ndarray, gtab: GradientTable, mask: np.ndarray) -> dict[str, np.ndarray]:
    """FA, MD, AD, RD (mm²/s) of a weighted least-squares tensor fit (DIPY)."""
    from dipy.reconst.dti import TensorModel

    fit = TensorModel(gtab).fit(data, mask=mask)
    maps = {"fa": fit.fa, "md": fit.md, "ad": fit.ad, "rd": fit.rd}
    return {k: np.nan_to_num(v).astype(np.float32) for k, v in maps.items()}


def sh_order_for(n_directions: int, max_order: int = 8) -> int:
    """Largest even spherical-harmonic order whose coefficient count fits the directions."""
    order = 2
    while order + 2 <= max_order and (order + 3) * (order + 4) // 2 <= n_directions:
        order += 2
    return order


def unique_directions(gtab: GradientTable, decimals: int = 2) -> int:
    """Distinct diffusion directions of the weighted volumes, antipodal pairs counted once.

    Each b-vector is rounded to ``decimals`` and folded onto one hemisphere by the sign of
    its own first non-zero component, so ``v`` and ``-v`` always coincide (a sign fold on one
    axis shared by all vectors leaves ``±x`` apart when that axis is ``z``). Shells are not
    told apart: the same direction at two b-values counts once.
    """
    vecs = np.round(gtab.bvecs[~gtab.b0s_mask], decimals)
    first = np.argmax(vecs != 0, axis=1)
    folded = vecs * np.where(vecs[np.arange(len(vecs)), first] < 0, -1.0, 1.0)[:, None] + 0.0  # + 0.0: no -0.0
    return len(np.unique(folded, axis=0))


def fit_fibre_model(data: np.ndarray, gtab: GradientTable, mask: np.ndarray, model: str):
    """Fit DTI or CSD (automatic single-fibre response); returns (fit, sh_order or None)."""
    if model == "dti":
        from dipy.reconst.dti import TensorModel

        return TensorModel(gtab).fit(data, mask=mask), None
    from dipy.reconst.csdeconv import ConstrainedSphericalDeconvModel, auto_response_ssst

    order = sh_order_for(unique_directions(gtab))
    response, _ = auto_response_ssst(gtab, data, roi_radii=10, fa_thr=0.7)
    csd = ConstrainedSphericalDeconvModel(gtab, response, sh_order_max=order)
    return csd.fit(data, mask=mask), order


def pmf_source(fit, model: str, dti_odf_power: float) -> tuple[str, np.ndarray]:
    """What a direction getter is made from, as an array (picklable, unlike DIPY's getters):
    ``("pmf", odf)`` for the tensor, ``("shcoeff", coefficients)`` for CSD.

    The tensor's ODF is broad (a single fibre spreads over tens of degrees); it is raised to
    ``dti_odf_power`` to sharpen it before it serves as a probability mass function. CSD's
    fODF is used as it is.
    """
    if model == "dti":
        return "pmf", np.clip(fit.odf(default_sphere), 0, None) ** dti_odf_power
    return "shcoeff", fit.shm_coeff


def direction_getter(source: tuple[str, np.ndarray], tracking: str, max_angle_deg: float):
    """DIPY direction getter from a :func:`pmf_source`: peaks for deterministic, the whole
    distribution for probabilistic tracking."""
    from dipy.direction import DeterministicMaximumDirectionGetter, ProbabilisticDirectionGetter

    getter = DeterministicMaximumDirectionGetter if tracking == "deterministic" else ProbabilisticDirectionGetter
    kind, values = source
    make = getter.from_pmf if kind == "pmf" else getter.from_shcoeff
    return make(values, max_angle=max_angle_deg, sphere=default_sphere)
