"""nipype interfaces for the shared tail: parcellation, connectivity, writing derivatives."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits)

from conntool.atlases import resolve_atlas
from conntool.interfaces.io import load_mask
from conntool.outputs import copy_atomic, read_tsv, write_json, write_tsv
from conntool.steps.connectivity import BIDS_MEASURE, connectivity_matrix, covariance_estimator, fisher_z
from conntool.steps.parcellate import parcel_timeseries


class _ParcellateInput(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    valid_mask = File(exists=True, mandatory=True)
    atlas = traits.Str(mandatory=True, desc="atlas name or path, as given to --atlas")
    atlas_dir = traits.Str("", usedefault=True)
    min_coverage = traits.Float(mandatory=True)


class _ParcellateOutput(TraitedSpec):
    timeseries = File(exists=True)
    coverage = File(exists=True)


class Parcellate(SimpleInterface):
    """Mean time series of every atlas node; nodes below the coverage limit are n/a."""

    input_spec = _ParcellateInput
    output_spec = _ParcellateOutput

    def _run_interface(self, runtime):
        atlas = resolve_atlas(self.inputs.atlas, Path(self.inputs.atlas_dir) if self.inputs.atlas_dir else None)
        img = nib.load(self.inputs.in_file)
        labels = atlas.labels_on_grid(img)
        series, coverage = parcel_timeseries(img, labels, atlas.label_ids, load_mask(self.inputs.valid_mask),
                                             self.inputs.min_coverage)
        cov_table = pd.DataFrame({"node": atlas.label_names, "index": atlas.label_ids, "coverage": coverage,
                                  "included": coverage >= self.inputs.min_coverage})
        self._results["timeseries"] = str(write_tsv(os.path.join(runtime.cwd, "timeseries.tsv"),
                                                    pd.DataFrame(series, columns=list(atlas.label_names))))
        self._results["coverage"] = str(write_tsv(os.path.join(runtime.cwd, "coverage.tsv"), cov_table))
        return runtime


class _ConnectivityInput(BaseInterfaceInputSpec):
    timeseries = File(exists=True, mandatory=True)
    qc = File(exists=True, mandatory=True, desc="denoising QC JSON; an excluded run gets no matrices")
    measures = traits.List(traits.Str, mandatory=True)
    fisher_z = traits.Bool(mandatory=True)
    sidecar = traits.Dict(desc="provenance added to every matrix sidecar")


class _ConnectivityOutput(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="per measure: TSV, JSON (then Fisher-z TSV, JSON)")


def matrix_files(measures: list[str], fisher: bool) -> list[tuple[str, str]]:
    """(measure, desc) of every file Connectivity writes, in its output order."""
    files = []
    for measure in measures:
        files.append((measure, ""))
        if fisher and measure in ("pearson", "partial"):
            files.append((measure, "fisherz"))
    return files


class Connectivity(SimpleInterface):
    """Connectivity matrices (and Fisher z) with JSON sidecars."""

    input_spec = _ConnectivityInput
    output_spec = _ConnectivityOutput

    def _run_interface(self, runtime):
        qc = json.loads(Path(self.inputs.qc).read_text())
        self._results["out_files"] = []
        if qc["Excluded"]:
            return runtime
        table = read_tsv(self.inputs.timeseries)
        series, nodes = table.to_numpy(float), list(table.columns)
        matrices = {m: connectivity_matrix(series, m) for m in self.inputs.measures}
        for measure, desc in matrix_files(self.inputs.measures, self.inputs.fisher_z):
            matrix = fisher_z(matrices[measure]) if desc else matrices[measure]
            stem = os.path.join(runtime.cwd, f"{measure}{'_' + desc if desc else ''}")
            write_tsv(stem + ".tsv", pd.DataFrame(matrix, columns=nodes))
            write_json(stem + ".json", {
                **self.inputs.sidecar, "Measure": BIDS_MEASURE[measure],
                "CovarianceEstimator": covariance_estimator(measure),
                "FisherZ": bool(desc), "NodeCount": len(nodes),
                "NodesWithoutData": [n for n, ok in zip(nodes, np.isfinite(series).all(axis=0)) if not ok],
                "VolumesUsed": qc["VolumesKept"],
            })
            self._results["out_files"] += [stem + ".tsv", stem + ".json"]
        return runtime


class _SinkInput(BaseInterfaceInputSpec):
    in_files = traits.List(File(exists=True), mandatory=True)
    out_paths = traits.List(traits.Str, mandatory=True, desc="destination of each in_file")


class _SinkOutput(TraitedSpec):
    out_files = traits.List(traits.Str)


class DerivativesSink(SimpleInterface):
    """Copy results to the output folder atomically (temp file + rename).

    ``in_files[i]`` goes to ``out_paths[i]``; an empty ``in_files`` means the step
    produced nothing for this run (an excluded run) and nothing is written.
    """

    input_spec = _SinkInput
    output_spec = _SinkOutput

    def _run_interface(self, runtime):
        sources = self.inputs.in_files
        if sources and len(sources) != len(self.inputs.out_paths):
            raise ValueError(f"{len(sources)} files for {len(self.inputs.out_paths)} destinations")
        self._results["out_files"] = [str(copy_atomic(src, Path(dst)))
                                      for src, dst in zip(sources, self.inputs.out_paths)]
        return runtime
