"""The methods paragraph of a report: what was done, with which version and preset, with
references (as fMRIPrep's boilerplate). Built from the configuration recorded in
``dataset_description.json``, so it describes the run that made the outputs."""
from __future__ import annotations

REFERENCES = {
    "nipype": "Gorgolewski K. et al. (2011). Nipype. Front. Neuroinform. 5:13.",
    "nilearn": "Abraham A. et al. (2014). Machine learning for neuroimaging with scikit-learn. Front. "
               "Neuroinform. 8:14.",
    "dipy": "Garyfallidis E. et al. (2014). DIPY, a library for the analysis of diffusion MRI data. Front. "
            "Neuroinform. 8:8.",
    "syn": "Avants B.B. et al. (2008). Symmetric diffeomorphic image registration with cross-correlation. Med. "
           "Image Anal. 12:26-41.",
    "fd": "Power J.D. et al. (2012). Spurious but systematic correlations in functional connectivity MRI "
          "networks arise from subject motion. NeuroImage 59:2142-2154.",
    "scrubbing": "Power J.D. et al. (2014). Methods to detect, characterize, and remove motion artifact in "
                 "resting state fMRI. NeuroImage 84:320-341.",
    "36p": "Satterthwaite T.D. et al. (2013). An improved framework for confound regression and filtering for "
           "control of motion artifact. NeuroImage 64:240-256.",
    "compcor": "Behzadi Y. et al. (2007). A component based noise correction method (CompCor) for BOLD and "
               "perfusion based fMRI. NeuroImage 37:90-101.",
    "qcfc": "Ciric R. et al. (2017). Benchmarking of participant-level confound regression strategies for the "
            "control of motion artifact in studies of functional connectivity. NeuroImage 154:174-187.",
    "mppca": "Veraart J. et al. (2016). Denoising of diffusion MRI using random matrix theory. NeuroImage "
             "142:394-406.",
    "patch2self": "Fadnavis S. et al. (2020). Patch2Self: denoising diffusion MRI with self-supervised learning. "
                  "NeurIPS 33.",
    "gibbs": "Kellner E. et al. (2016). Gibbs-ringing artifact removal based on local subvoxel-shifts. Magn. "
             "Reson. Med. 76:1574-1581.",
    "dti": "Basser P.J. et al. (1994). MR diffusion tensor spectroscopy and imaging. Biophys. J. 66:259-267.",
    "csd": "Tournier J.-D. et al. (2007). Robust determination of the fibre orientation distribution in "
           "diffusion MRI. NeuroImage 35:1459-1472.",
    "n4": "Tustison N.J. et al. (2010). N4ITK: improved N3 bias correction. IEEE Trans. Med. Imaging "
          "29:1310-1320.",
    "atropos": "Avants B.B. et al. (2011). An open source multivariate framework for n-tissue segmentation with "
               "evaluation on public data. Neuroinformatics 9:381-400.",
    "sdc": "Jezzard P., Balaban R.S. (1995). Correction for geometric distortion in echo planar images from B0 "
           "field variations. Magn. Reson. Med. 34:65-73.",
    "unwrap": "Herráez M.A. et al. (2002). Fast two-dimensional phase-unwrapping algorithm based on sorting by "
              "reliability following a noncontinuous path. Appl. Opt. 41:7437-7444.",
    "topup": "Andersson J.L.R., Skare S., Ashburner J. (2003). How to correct susceptibility distortions in "
             "spin-echo echo-planar images: application to diffusion tensor imaging. NeuroImage 20:870-888.",
    "cmc": "Girard G. et al. (2014). Towards quantitative connectivity analysis: reducing tractography biases. "
           "NeuroImage 98:266-278.",
}


def _filter(f: dict) -> str:
    t = f["filter"]
    if t["high_pass_hz"] is None and t["low_pass_hz"] is None:
        band = "no temporal filter"
    else:
        low = f"{t['high_pass_hz']:g} Hz" if t["high_pass_hz"] is not None else "0"
        high = f"{t['low_pass_hz']:g} Hz" if t["low_pass_hz"] is not None else "Nyquist"
        band = f"a zero-phase Butterworth band-pass (order {t['order']}) from {low} to {high}"
    trend = "linear detrending and " if t["detrend"] else ""
    return f"{trend}{band}"


def _censoring(c: dict) -> str:
    limits = [f"framewise displacement (FD) [fd] above {c['fd_mm']:g} mm" if c["fd_mm"] is not None else "",
              f"standardised DVARS above {c['dvars_std']:g}" if c["dvars_std"] is not None else ""]
    limits = [x for x in limits if x]
    if not limits:
        return "No volumes were censored for motion. "
    segments = (f", then stretches of fewer than {c['min_segment_volumes']} kept volumes"
                if c["min_segment_volumes"] else "")
    return (f"Volumes with {' or '.join(limits)} were censored{segments} [scrubbing], and left out of the "
            "regression and of the connectivity estimates. ")


def _segmentation(section: dict) -> str:
    s = section.get("segmentation") or {"method": "template"}  # outputs of conntool before segmentation
    if s["method"] == "template":
        return "Tissue probabilities are the template's priors brought to the T1w through the inverse warp. "
    return ("The T1w was segmented into grey matter, white matter and CSF after N4 bias correction [n4] by "
            f"Atropos [atropos] (three classes, initialised by the template's priors through the inverse warp, "
            f"prior weight {s['prior_weight']:g}, MRF smoothing {s['mrf_smoothing']:g}). ")


def _distortion(f: dict) -> str:
    d = f.get("distortion_correction") or {"fieldmap": False}  # outputs of conntool before SDC
    text = ""
    if d["fieldmap"]:
        text += ("Runs with a B0 fieldmap (phase difference, two phases or a field in Hz) were corrected for "
                 "susceptibility distortion [sdc]: the phase was unwrapped [unwrap] and converted to Hz, smoothed "
                 f"({d['smoothing_fwhm_mm']:g} mm FWHM) within the fieldmap's head mask, registered rigidly to the "
                 "BOLD reference, turned into a voxel shift along the phase-encoding axis by the total readout "
                 "time, and applied with its Jacobian in the same resampling. ")
    if d.get("pepolar"):
        text += (f"{'Other runs' if d['fieldmap'] else 'Runs'} with two spin-echo EPI references of opposite "
                 f"phase encoding were corrected with the field estimated from them ({_pepolar(d)}), applied the "
                 "same way. ")
    if not text:
        return "Susceptibility distortion was not corrected. "
    return text + "Each run's QC JSON says whether and how it was corrected. "


def _pepolar(d: dict) -> str:
    return ("a B-spline field for which both unwarped images agree, with the Jacobian intensity term, as in "
            f"topup [topup]; regularisation {d['regularization']:g}")


def _template(spaces: list[str] | None) -> str:
    """The template named as the outputs' ``Spaces`` record it (outputs of conntool before they
    did were all in nilearn's copy of MNI152 2009a)."""
    if not spaces or spaces == ["MNI152NLin2009aSym"]:
        return "nilearn's MNI152 2009a template (MNI152NLin2009aSym)"
    return f"the {' / '.join(spaces)} template (TemplateFlow)"


def _share(sampling: float) -> str:
    """How much of the reference the mutual information sampled, or nothing when all of it."""
    return f" on {sampling:.0%} of the reference's voxels" if sampling < 1 else ""


def fmri_methods(cfg: dict, version: str, from_fmriprep: bool, spaces: list[str] | None = None) -> str:
    """Paragraph for the fMRI path, outputs in ``spaces``; ``[key]`` marks a citation of
    :data:`REFERENCES`."""
    f = cfg["fmri"]
    n = f["normalization"]
    if from_fmriprep:
        text = ("BOLD series preprocessed by fMRIPrep were read in template space with fMRIPrep's brain mask and "
                "confounds file; fMRIPrep's non-steady-state volumes were left out. ")
    else:
        slice_timing = "corrected for slice timing, then " if f["slice_timing"] else ""
        detected = "detected and " if f["dummy_scans"] == "auto" else ""
        separation = f.get("motion_separation_mm") or 0
        sampled = f", on reference voxels a whole number of voxels apart, nearest {separation:g} mm" if separation else ""
        text = (f"Non-steady-state volumes at the start of each run were {detected}removed; each run was "
                f"{slice_timing}realigned rigidly to its median volume (least squares, as SPM's realign{sampled}). "
                "The BOLD reference was registered to "
                f"the skull-stripped T1w (rigid, mutual information{_share(f.get('coregistration_sampling', 1))}), "
                f"and the T1w to {_template(spaces)} "
                f"({n['backend'].upper()} affine then SyN [syn], at {n['template_resolution_mm']:g} mm); "
                "motion, coregistration and normalisation were applied in one resampling to a "
                f"{n['resolution_mm']:g} mm template grid. {_distortion(f)}{_segmentation(f)}White-matter and "
                f"CSF masks are its probabilities above {f['tissue_masks']['threshold']:g}, eroded by "
                f"{f['tissue_masks']['erode_voxels']} voxel(s). ")
    strategy = f["confounds"]["strategy"]
    source = "[compcor]" if "compcor" in strategy.lower() else "[36p]"
    censoring = _censoring(f["censoring"])
    smoothing = (f"Series were smoothed within the brain mask ({f['smoothing']['fwhm_mm']:g} mm FWHM). "
                 if f["smoothing"]["fwhm_mm"] > 0 else "")
    measures = ", ".join(f["connectivity"]["measures"])
    fisher = ", with Fisher z versions" if f["connectivity"]["fisher_z"] else ""
    text += (f"{smoothing}{censoring}Nuisance regression used the {strategy} confound set {source} together with "
             f"{_filter(f)} (nilearn's signal.clean); runs with less than {f['censoring']['min_time_s']:g} s left "
             f"were excluded. Mean signals of each atlas parcel (parcels less than "
             f"{f['parcellation']['min_coverage']:.0%} inside the brain mask are n/a) gave the {measures} "
             f"matrices (nilearn's ConnectivityMeasure{fisher}). ")
    return _wrap(text, cfg, version)


def dmri_methods(cfg: dict, version: str, spaces: list[str] | None = None) -> str:
    """Paragraph for the dMRI path; ``[key]`` marks a citation of :data:`REFERENCES`."""
    d = cfg["dmri"]
    steps = []
    if d["denoise"] != "none":
        steps.append(f"denoised ({'MP-PCA' if d['denoise'] == 'mppca' else 'Patch2Self'} [{d['denoise']}])")
    if d["gibbs_removal"]:
        steps.append("corrected for Gibbs ringing [gibbs]")
    if d.get("distortion_correction", {}).get("pepolar"):  # outputs of conntool before PEPOLAR have none
        steps.append("corrected for susceptibility distortion where the session had b=0 images of opposite "
                     f"phase-encoding directions ({_pepolar(d['distortion_correction'])})")
    if d["motion_correction"]:
        steps.append("corrected for motion and eddy currents (affine registration of every volume to the b=0 "
                     "reference, with b-vectors rotated)")
    model = "constrained spherical deconvolution [csd]" if d["model"] == "csd" else "the diffusion tensor [dti]"
    stopping = ("anatomical (tissue) stopping [cmc]" if d["stopping"] == "tissue"
                else f"stopping below FA {d['fa_threshold']:g}")
    text = (f"Diffusion series were {', '.join(steps) or 'not preprocessed'}. Tensors [dti] gave FA and diffusivity "
            f"maps; fibre orientations came from {model}. {d['tracking'].capitalize()} tractography started from "
            f"{d['seeds_per_voxel']} seeds per voxel with FA above {d['seed_fa_threshold']:g}{_wm_seeds(d)} (step "
            f"{d['step_size_mm']:g} mm, at most {d['max_angle_deg']:g}°, {stopping}), keeping streamlines of "
            f"{d['min_length_mm']:g} to {d['max_length_mm']:g} mm. Atlases were brought from template space "
            f"through the inverse of the T1w normalisation; each streamline counted towards the nodes nearest its "
            f"end points (within {d['search_radius_mm']:g} mm). The T1w was normalised to {_template(spaces)} with "
            f"{d['normalization']['backend'].upper()} affine then SyN [syn]. {_segmentation(d)}"
            "Tissue stopping (and white-matter seeding) maps are these probabilities brought to the DWI grid "
            "through the rigid DWI-to-T1w registration. ")
    return _wrap(text, cfg, version)


def _wm_seeds(d: dict) -> str:
    threshold = d.get("seed_wm_threshold", 0)
    return f" and white-matter probability above {threshold:g}" if threshold > 0 else ""


def _wrap(text: str, cfg: dict, version: str) -> str:
    return (f"Results were produced with conntool {version} (preset {cfg['name']}, version {cfg['version']}, "
            f"random seed {cfg['seed']}) using nipype [nipype], nilearn [nilearn] and DIPY [dipy]. {text}")
