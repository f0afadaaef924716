"""nipype interfaces for the shared tail: parcellation, connectivity, writing derivatives."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterface, BaseInterfaceInputSpec, DynamicTraitedSpec, File, TraitedSpec, traits
from nipype.interfaces.io import add_traits

from conntool.interfaces.base import AtlasInputSpec, ConntoolInputSpec, ConntoolInterface, node_atlas
from conntool.interfaces.io import load_mask
from conntool.outputs import copy_atomic, read_tsv, write_json, write_tsv
from conntool.series import opened
from conntool.steps.connectivity import BIDS_MEASURE, connectivity_matrix, covariance_estimator, fisher_z
from conntool.steps.parcellate import parcel_timeseries


class _ParcellateInput(AtlasInputSpec):
    in_file = File(exists=True, mandatory=True)
    valid_mask = File(exists=True, mandatory=True)
    min_coverage = traits.Float(mandatory=True)


class _ParcellateOutput(TraitedSpec):
    timeseries = File(exists=True)
    coverage = File(exists=True)


class Parcellate(ConntoolInterface):
    """Mean time series of every atlas node; nodes below the coverage limit are n/a."""

    input_spec = _ParcellateInput
    output_spec = _ParcellateOutput

    def _run_interface(self, runtime):
        atlas = node_atlas(self.inputs)
        with opened(self.inputs.in_file) as img:  # read in chunks: a gzipped file once
            labels = atlas.labels_on_grid(img)
            series, coverage = parcel_timeseries(img, labels, atlas.label_ids, load_mask(self.inputs.valid_mask),
                                                 self.inputs.min_coverage, self.inputs.chunk_mb)
        cov_table = pd.DataFrame({"node": atlas.label_names, "index": atlas.label_ids, "coverage": coverage,
                                  "included": coverage >= self.inputs.min_coverage})
        self._results["timeseries"] = str(write_tsv(os.path.join(runtime.cwd, "timeseries.tsv"),
                                                    pd.DataFrame(series, columns=list(atlas.label_names))))
        self._results["coverage"] = str(write_tsv(os.path.join(runtime.cwd, "coverage.tsv"), cov_table))
        return runtime


class _ConnectivityInput(ConntoolInputSpec):
    timeseries = File(exists=True, mandatory=True)
    qc = File(exists=True, mandatory=True, desc="denoising QC JSON; an excluded run gets no matrices")
    measures = traits.List(traits.Str, mandatory=True)
    fisher_z = traits.Bool(mandatory=True)
    sidecar = traits.Dict(desc="provenance added to every matrix sidecar")


class _ConnectivityOutput(TraitedSpec):
    out_files = traits.Dict(traits.Str, File(exists=True),
                            desc="file key (see matrix_files) → file; empty for an excluded run")


def matrix_files(measures: list[str], fisher: bool) -> dict[str, tuple[str, str, str]]:
    """Every file Connectivity writes: key (``pearson_fisherz.tsv``) → (measure, desc, extension)."""
    files = {}
    for measure in measures:
        for desc in ("", "fisherz") if fisher and measure in ("pearson", "partial") else ("",):
            for ext in (".tsv", ".json"):
                files[f"{measure}{'_' + desc if desc else ''}{ext}"] = (measure, desc, ext)
    return files


class Connectivity(ConntoolInterface):
    """Connectivity matrices (and Fisher z) with JSON sidecars."""

    input_spec = _ConnectivityInput
    output_spec = _ConnectivityOutput

    def _run_interface(self, runtime):
        qc = json.loads(Path(self.inputs.qc).read_text())
        self._results["out_files"] = {}
        if qc["Excluded"]:
            return runtime
        table = read_tsv(self.inputs.timeseries)
        series, nodes = table.to_numpy(float), list(table.columns)
        matrices = {m: connectivity_matrix(series, m) for m in self.inputs.measures}
        for key, (measure, desc, ext) in matrix_files(self.inputs.measures, self.inputs.fisher_z).items():
            path = os.path.join(runtime.cwd, key)
            self._results["out_files"][key] = path
            if ext == ".tsv":
                matrix = fisher_z(matrices[measure]) if desc else matrices[measure]
                write_tsv(path, pd.DataFrame(matrix, columns=nodes))
                continue
            write_json(path, {
                **self.inputs.sidecar, "Measure": BIDS_MEASURE[measure],
                "CovarianceEstimator": covariance_estimator(measure),
                "FisherZ": bool(desc), "NodeCount": len(nodes),
                "NodesWithoutData": [n for n, ok in zip(nodes, np.isfinite(series).all(axis=0)) if not ok],
                "VolumesUsed": qc["VolumesKept"],
            })
        return runtime


class _SinkInput(DynamicTraitedSpec, BaseInterfaceInputSpec):
    out_paths = traits.Dict(mandatory=True, desc="input name → destination path, or → {key: destination}")


class _SinkOutput(TraitedSpec):
    out_files = traits.List(traits.Str, desc="files written")


class DerivativesSink(BaseInterface):
    """Copy results to their BIDS-derivatives names atomically (temporary file + rename).

    Inputs are named by the keys of ``out_paths`` and connected by name. A key's destination
    is a path (its input is one file) or a mapping ``{key: path}`` (its input is a mapping
    with the same keys, e.g. one file per measure; an empty mapping, as for an excluded
    run, writes nothing). The sink always runs, so a deleted output is written again
    from the cache on the next run.
    """

    input_spec = _SinkInput
    output_spec = _SinkOutput
    _always_run = True

    def __init__(self, out_paths: dict, **inputs):
        super().__init__(out_paths=out_paths, **inputs)
        add_traits(self.inputs, list(out_paths))

    def _run_interface(self, runtime):
        self._written = []
        for key, destination in self.inputs.out_paths.items():
            source = getattr(self.inputs, key)
            if isinstance(destination, dict):
                unknown = sorted(set(source) - set(destination))
                if unknown:
                    raise ValueError(f"{key}: no destination for {', '.join(unknown)}")
                pairs = [(source[k], destination[k]) for k in sorted(source)]
            else:
                pairs = [(source, destination)]
            self._written += [str(copy_atomic(src, Path(dst))) for src, dst in pairs]
        return runtime

    def _list_outputs(self):
        return {"out_files": self._written}
