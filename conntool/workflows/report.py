"""Report nodes of the workflows: each figure node with the sink that puts its figures into
``OUT/sub-<label>/figures/``, and the participant's page after every sink has written."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from nipype.interfaces.utility import Merge
from nipype.pipeline import engine as pe

from conntool.config import Normalization
from conntool.interfaces.connectome import DerivativesSink
from conntool.interfaces.report import AnatFigures, ParticipantReport
from conntool.reports.layout import figure_paths
from conntool.templates import output_template
from conntool.workflows.resources import ANAT, resources


def figures_node(wf: pe.Workflow, interface, kind: str, out_dir: Path, entities: dict, name: str,
                 **resources) -> tuple[pe.Node, pe.Node]:
    """A node of ``wf`` drawing the figures of ``kind`` (see :data:`conntool.reports.layout.FIGURES`)
    for file-name ``entities``, connected to its sink; the caller connects the node's inputs."""
    node = pe.Node(interface, name=name, **resources)
    paths = {desc: str(path) for desc, path in figure_paths(out_dir, kind, entities).items()}
    sink = pe.Node(DerivativesSink(out_paths={"figures": paths}), name=f"sink_{name}")
    wf.connect(node, "figures", sink, "figures")
    return node, sink


def add_anat_figures(wf: pe.Workflow, anat: pe.Workflow, normalization: Normalization, out_dir: Path,
                     label: str) -> tuple[pe.Node, pe.Node]:
    """The T1w → template and segmentation figures of ``anat`` (:func:`init_anat_wf`, under the
    preset's ``normalization``), and their sink."""
    interface = AnatFigures(template=dataclasses.asdict(output_template(normalization.template)),
                            template_resolution_mm=normalization.template_resolution_mm)
    figures, sink = figures_node(wf, interface, "anat", out_dir, {"sub": label}, name="anat_figures",
                                 **resources(ANAT, "anat_figures"))
    wf.connect([(anat, figures, [("outputnode.t1w_brain", "t1w_brain"), ("outputnode.coordmap", "coordmap"),
                                 *[(f"outputnode.{t}", t) for t in ("gm", "wm", "csf")]])])
    return figures, sink


def sink_outputs(sub: pe.Workflow) -> list[tuple[pe.Workflow, str]]:
    """``(sub, "<sink>.out_files")`` for every derivatives sink in sub-workflow ``sub``."""
    return [(sub, f"{name}.out_files") for name in sub.list_node_names()
            if isinstance(sub.get_node(name).interface, DerivativesSink)]


def add_participant_report(wf: pe.Workflow, out_dir: Path, label: str, written: list[tuple]) -> pe.Node:
    """``OUT/sub-<label>.html``, written once every ``(node, output)`` in ``written`` (the
    participant's sinks, ``out_files``) has run."""
    merge = pe.Node(Merge(len(written)), name="report_inputs")
    report = pe.Node(ParticipantReport(out_dir=str(out_dir), subject=label), name="participant_report")
    for k, (node, field) in enumerate(written, start=1):
        wf.connect(node, field, merge, f"in{k}")
    wf.connect(merge, "out", report, "written")
    return report
