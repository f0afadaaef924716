"""dMRI path: raw DWI (+ reverse phase-encoding pair) + T1w → tractogram → structural connectomes."""
from __future__ import annotations

from pathlib import Path

from nipype.interfaces.utility import IdentityInterface, Merge
from nipype.pipeline import engine as pe

from conntool.atlases import Atlas
from conntool.bids import Participant
from conntool.config import PipelineConfig
from conntool.interfaces.connectome import DerivativesSink
from conntool.interfaces.dmri import (SC_MEASURES, DwiCoregistration, DwiDenoise, DwiMotionCorrection, GibbsRemoval,
                                      StructuralConnectivity, TemplateToDwi, TensorMaps, Tractography)
from conntool.outputs import bids_name
from conntool.workflows.fmri import init_anat_wf, node_safe


def dwi_paths(out_dir: Path, participant: Participant, cfg: PipelineConfig, atlas_names: list[str]) -> dict:
    """Destination of every file the dMRI path writes for one participant."""
    ents = {"sub": participant.label, "space": "dwi"}
    first = participant.dwi[0].entities
    if "session" in first:
        ents["ses"] = str(first["session"])
    folder = Path(out_dir) / f"sub-{participant.label}" / "dwi"
    model = "csd" if cfg.dmri.model == "csd" else "tensor"
    paths = {
        "maps": [folder / bids_name({**ents, "model": "tensor", "desc": p}, "dwimap", ".nii.gz")
                 for p in ("FA", "MD", "AD", "RD")],
        "mask": folder / bids_name({**ents, "desc": "brain"}, "mask", ".nii.gz"),
        "tractogram": [folder / bids_name({**ents, "model": model, "desc": cfg.dmri.tracking}, "tractography", ext)
                       for ext in (".trx", ".json")],
        "atlases": {},
    }
    for name in atlas_names:
        seg = {**ents, "seg": name}
        paths["atlases"][name] = {
            "labels": folder / bids_name(seg, "dseg", ".nii.gz"),
            "matrices": [folder / bids_name({**seg, "meas": m}, "relmat", ext) for m in SC_MEASURES
                         for ext in (".tsv", ".json")],
        }
    return paths


def expected_outputs(participant: Participant, atlases: list[Atlas], cfg: PipelineConfig, out_dir: Path) -> list:
    paths = dwi_paths(out_dir, participant, cfg, [a.name for a in atlases])
    found = [*paths["maps"], paths["mask"], *paths["tractogram"]]
    for per_atlas in paths["atlases"].values():
        found += [per_atlas["labels"], *per_atlas["matrices"]]
    return found


def init_dmri_wf(participant: Participant, atlases: list[tuple[str, Atlas]], atlas_dir: str, cfg: PipelineConfig,
                 out_dir: Path, name: str | None = None) -> pe.Workflow:
    """Whole dMRI path for one participant; every DWI series is denoised and de-Gibbsed, then
    all are registered together and combined."""
    d = cfg.dmri
    wf = pe.Workflow(name=name or f"dmri_sub_{participant.label}")
    anat = init_anat_wf(cfg, d.normalization.backend)
    fields = [f"{kind}_{i}" for i in range(1, len(participant.dwi) + 1) for kind in ("dwi", "bval", "bvec")]
    inputnode = pe.Node(IdentityInterface(["t1w", *fields]), name="inputnode")
    inputnode.inputs.t1w = str(participant.t1w)
    series = [pe.Node(Merge(len(participant.dwi)), name=f"gather_{kind}") for kind in ("dwi", "bval", "bvec")]
    for index, run in enumerate(participant.dwi, start=1):
        for kind, path in (("dwi", run.path), ("bval", run.bval), ("bvec", run.bvec)):
            setattr(inputnode.inputs, f"{kind}_{index}", str(path))
        denoise = pe.Node(DwiDenoise(method=d.denoise), name=f"denoise_{index}")
        wf.connect(inputnode, f"dwi_{index}", denoise, "in_file")
        last = denoise
        if d.gibbs_removal:
            gibbs = pe.Node(GibbsRemoval(), name=f"gibbs_{index}")
            wf.connect(denoise, "out_file", gibbs, "in_file")
            last = gibbs
        for node in {denoise, last}:
            wf.connect([(inputnode, node, [(f"bval_{index}", "bval"), (f"bvec_{index}", "bvec")])])
        wf.connect([(last, series[0], [("out_file", f"in{index}")]),
                    (inputnode, series[1], [(f"bval_{index}", f"in{index}")]),
                    (inputnode, series[2], [(f"bvec_{index}", f"in{index}")])])
    motion = pe.Node(DwiMotionCorrection(correct=d.motion_correction, seed=cfg.seed), name="motion_eddy")
    tensor = pe.Node(TensorMaps(), name="tensor_maps")
    track = pe.Node(Tractography(model=d.model, tracking=d.tracking, stopping=d.stopping, fa_threshold=d.fa_threshold,
                                 seeds_per_voxel=d.seeds_per_voxel, step_size_mm=d.step_size_mm,
                                 max_angle_deg=d.max_angle_deg, min_length_mm=d.min_length_mm,
                                 max_length_mm=d.max_length_mm, seed=cfg.seed), name="tractography")
    coreg = pe.Node(DwiCoregistration(), name="dwi_to_t1w")
    tissue = pe.Node(TemplateToDwi(), name="tissue_to_dwi")
    paths = dwi_paths(out_dir, participant, cfg, [a.name for _, a in atlases])
    gather_maps = pe.Node(Merge(6), name="gather_maps")
    sink_maps = pe.Node(DerivativesSink(out_paths=[str(p) for p in (*paths["maps"], paths["mask"],
                                                                     *paths["tractogram"])]), name="sink_maps")
    wf.connect([
        (inputnode, anat, [("t1w", "inputnode.t1w")]),
        (anat, coreg, [("outputnode.t1w_brain", "t1w")]),
        (series[0], motion, [("out", "in_files")]), (series[1], motion, [("out", "bvals")]),
        (series[2], motion, [("out", "bvecs")]),
        (motion, tensor, [("out_file", "in_file"), ("bval", "bval"), ("bvec", "bvec"), ("mask", "mask")]),
        (motion, coreg, [("out_file", "dwi"), ("bval", "bval"), ("bvec", "bvec")]),
        (motion, tissue, [("mask", "reference")]),
        (coreg, tissue, [("t1w_to_dwi", "t1w_to_dwi")]),
        (anat, tissue, [("outputnode.inverse_coordmap", "inverse_coordmap")]),
        (motion, track, [("out_file", "dwi"), ("bval", "bval"), ("bvec", "bvec"), ("mask", "mask")]),
        (tensor, track, [("fa", "fa")]),
        (tissue, track, [("wm", "wm"), ("gm", "gm"), ("csf", "csf")]),
        (tensor, gather_maps, [("fa", "in1"), ("md", "in2"), ("ad", "in3"), ("rd", "in4")]),
        (motion, gather_maps, [("mask", "in5")]),
        (track, gather_maps, [("tractogram", "in6")]),
    ])
    gather_track = pe.Node(Merge(2), name="gather_all")
    wf.connect([(gather_maps, gather_track, [("out", "in1")]), (track, gather_track, [("sidecar", "in2")]),
                (gather_track, sink_maps, [("out", "in_files")])])
    for spec, atlas in atlases:
        tag = node_safe(atlas.name)
        labels = pe.Node(TemplateToDwi(atlas=spec, atlas_dir=atlas_dir), name=f"atlas_to_dwi_{tag}")
        sc = pe.Node(StructuralConnectivity(atlas=spec, atlas_dir=atlas_dir, search_radius_mm=d.search_radius_mm,
                                            sidecar={
            "Pipeline": cfg.name, "ConfigHash": cfg.digest(), "Atlas": atlas.name, "AtlasSpace": atlas.space,
            "AtlasSource": atlas.source, "RandomSeed": cfg.seed, "SearchRadiusMM": d.search_radius_mm}),
                     name=f"structural_{tag}")
        per_atlas = paths["atlases"][atlas.name]
        sink_labels = pe.Node(DerivativesSink(out_paths=[str(per_atlas["labels"])]), name=f"sink_labels_{tag}")
        sink_sc = pe.Node(DerivativesSink(out_paths=[str(p) for p in per_atlas["matrices"]]), name=f"sink_sc_{tag}")
        to_list = pe.Node(Merge(1), name=f"labels_list_{tag}")
        wf.connect([
            (motion, labels, [("mask", "reference")]),
            (coreg, labels, [("t1w_to_dwi", "t1w_to_dwi")]),
            (anat, labels, [("outputnode.inverse_coordmap", "inverse_coordmap")]),
            (track, sc, [("tractogram", "tractogram")]),
            (motion, sc, [("mask", "reference")]),
            (labels, sc, [("labels", "labels")]),
            (tensor, sc, [("fa", "fa")]),
            (labels, to_list, [("labels", "in1")]),
            (to_list, sink_labels, [("out", "in_files")]),
            (sc, sink_sc, [("out_files", "in_files")]),
        ])
    return wf
