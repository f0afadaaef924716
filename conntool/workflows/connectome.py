"""The shared tail: parcellate a denoised series, compute matrices, write derivatives."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from conntool.atlases import Atlas, space_mismatch
from conntool.config import Connectivity as ConnectivityConfig
from conntool.interfaces.connectome import Connectivity, DerivativesSink, Parcellate, matrix_files
from conntool.interfaces.report import AtlasFigures
from conntool.outputs import bids_name, subject_folder
from conntool.steps.connectivity import BIDS_MEASURE
from conntool.templates import Template
from conntool.workflows.report import figures_node
from conntool.workflows.resources import FMRI, resources


def connectome_paths(out_dir: Path, entities: dict, atlas_name: str, cfg: ConnectivityConfig) -> dict:
    """Destination of every file of one run × atlas (used for wiring and overwrite checks)."""
    ents = {**entities, "seg": atlas_name}
    folder = subject_folder(out_dir, entities, "func")
    return {
        "timeseries": folder / bids_name({**ents, "stat": "mean"}, "timeseries", ".tsv"),
        "coverage": folder / bids_name({**ents, "stat": "coverage"}, "bold", ".tsv"),
        "matrices": {key: folder / bids_name({**ents, "meas": BIDS_MEASURE[measure], "desc": desc}, "relmat", ext)
                     for key, (measure, desc, ext) in matrix_files(list(cfg.measures), cfg.fisher_z).items()},
    }


def atlas_provenance(atlas: Atlas, space: str) -> dict:
    """What every matrix sidecar records about its atlas, used on data in template ``space``:
    its own space, whether that differs from ``space`` and was not brought across
    (``AtlasSpaceMismatch``), and the template-pair registration that brought it across."""
    mismatch = space_mismatch(atlas, space)
    return {"Atlas": atlas.name, "AtlasSpace": atlas.space,
            "AtlasSpaceMismatch": mismatch and not atlas.atlas_map,
            "AtlasAlignment": Path(atlas.atlas_map).name if atlas.atlas_map else None,
            "AtlasSource": atlas.source,
            "LabelsNotInAtlasImage": list(atlas.labels_not_in_image)}


def init_connectome_wf(spec: str, atlas: Atlas, atlas_dir: str, min_coverage: float,
                       cfg: ConnectivityConfig, out_dir: Path, entities: dict, sidecar: dict, template: Template,
                       name: str, series_shape: tuple | None = None, report: bool = False) -> pe.Workflow:
    """inputnode: ``bold`` (denoised, in ``template``), ``valid_mask``, ``qc`` (denoising JSON).
    ``spec`` is the ``--atlas`` value naming ``atlas``. ``series_shape`` (4D, of ``bold`` at most)
    sizes the parcellation node's memory; ``report`` adds the coverage and matrix figures (node
    ``atlas_figures``, its sink ``sink_atlas_figures``)."""
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(["bold", "valid_mask", "qc"]), name="inputnode")
    atlas_inputs = {"atlas": spec, "atlas_dir": atlas_dir, "atlas_map": atlas.atlas_map}
    parcellate = pe.Node(Parcellate(**atlas_inputs, min_coverage=min_coverage),
                         name="parcellate", **resources(FMRI, "parcellate", template=series_shape))
    connectivity = pe.Node(Connectivity(measures=list(cfg.measures), fisher_z=cfg.fisher_z,
                                        sidecar={**sidecar, "Atlas": atlas.name}), name="connectivity",
                           **resources(FMRI, "connectivity"))
    paths = connectome_paths(out_dir, entities, atlas.name, cfg)
    sink = pe.Node(DerivativesSink(out_paths={"timeseries": str(paths["timeseries"]),
                                              "coverage": str(paths["coverage"]),
                                              "matrices": {k: str(p) for k, p in paths["matrices"].items()}}),
                   name="sink")
    wf.connect([
        (inputnode, parcellate, [("bold", "in_file"), ("valid_mask", "valid_mask")]),
        (inputnode, connectivity, [("qc", "qc")]),
        (parcellate, connectivity, [("timeseries", "timeseries")]),
        (parcellate, sink, [("timeseries", "timeseries"), ("coverage", "coverage")]),
        (connectivity, sink, [("out_files", "matrices")]),
    ])
    if report:
        figure_entities = {k: v for k, v in entities.items() if k != "space"} | {"seg": atlas.name}
        figures, _ = figures_node(wf, AtlasFigures(**atlas_inputs, template=dataclasses.asdict(template)), "atlas", out_dir,
                                  figure_entities, name="atlas_figures")
        wf.connect([(inputnode, figures, [("valid_mask", "reference")]),
                    (parcellate, figures, [("coverage", "coverage")]),
                    (connectivity, figures, [("out_files", "matrices")])])
    return wf
