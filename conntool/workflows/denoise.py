"""Smoothing and denoising of a template-space series: the step ``conntool fmri`` and
``conntool connectome`` (fMRIPrep derivatives) share before parcellation."""
from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from conntool.config import FmriConfig
from conntool.interfaces.fmri import Denoise, Smooth
from conntool.workflows.resources import FMRI, resources


def init_denoise_wf(cfg: FmriConfig, *, name: str = "denoise_wf", series_shape: tuple | None = None,
                    qc_extra: dict | None = None) -> pe.Workflow:
    """inputnode ``bold`` (template space), ``confounds`` (fMRIPrep-named TSV), ``brain_mask``,
    ``n_dummy`` (leading non-steady-state volumes still in ``bold``), ``coreg_similarity`` and
    ``t1w_similarity`` (optional, for the QC JSON) → outputnode ``denoised`` (kept volumes),
    ``denoised_sidecar`` (its JSON), ``qc``.

    Smoothing (within the brain mask) is a node only when the preset asks for it, so an
    unsmoothed series is not copied. ``series_shape`` (4D, of ``bold``) sizes the nodes' memory;
    ``qc_extra`` adds entries to the QC JSON.
    """
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(["bold", "confounds", "brain_mask", "n_dummy", "coreg_similarity",
                                           "t1w_similarity"]), name="inputnode")
    inputnode.inputs.n_dummy = 0
    outputnode = pe.Node(IdentityInterface(["denoised", "denoised_sidecar", "qc"]), name="outputnode")
    clean = pe.Node(Denoise(strategy=cfg.confounds.strategy, fd_mm=cfg.censoring.fd_mm,
                            dvars_std=cfg.censoring.dvars_std, min_segment_volumes=cfg.censoring.min_segment_volumes,
                            min_time_s=cfg.censoring.min_time_s, detrend=cfg.filter.detrend,
                            high_pass_hz=cfg.filter.high_pass_hz, low_pass_hz=cfg.filter.low_pass_hz,
                            filter_order=cfg.filter.order, qc_extra=qc_extra or {}), name="denoise",
                    **resources(FMRI, "denoise", template=series_shape))
    if cfg.smoothing.fwhm_mm > 0:
        smooth = pe.Node(Smooth(fwhm_mm=cfg.smoothing.fwhm_mm), name="smooth",
                         **resources(FMRI, "smooth", template=series_shape))
        wf.connect([(inputnode, smooth, [("bold", "in_file"), ("brain_mask", "brain_mask")]),
                    (smooth, clean, [("out_file", "in_file")])])
    else:
        wf.connect(inputnode, "bold", clean, "in_file")
    wf.connect([
        (inputnode, clean, [("confounds", "confounds"), ("brain_mask", "brain_mask"), ("n_dummy", "n_dummy"),
                            ("coreg_similarity", "coreg_similarity"), ("t1w_similarity", "t1w_similarity")]),
        (clean, outputnode, [("out_file", "denoised"), ("sidecar", "denoised_sidecar"), ("qc", "qc")]),
    ])
    return wf
