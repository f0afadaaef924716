"""Build the fMRI workflow for a fake participant and check its wiring without running it."""
import dataclasses
from pathlib import Path

import networkx as nx
import nibabel as nib
import numpy as np
from nipype.interfaces.base import isdefined

from conntool.atlases import resolve_atlas
from conntool.bids import BoldRun, Participant
from conntool.config import Smoothing, load_pipeline
from conntool.workflows.fmri import expected_outputs, init_fmri_wf


def _participant(slice_times):
    run = BoldRun(Path("/data/sub-01/func/sub-01_task-rest_bold.nii.gz"), {"subject": "01", "task": "rest"}, 2.0,
                  slice_times, 100)
    return Participant("01", Path("/data/sub-01/anat/sub-01_T1w.nii.gz"), bold=(run,))


def _edges(wf):
    """(upstream, downstream) pairs connected through any IdentityInterface, and node names."""
    graph = wf._create_flat_graph()
    names = {n: n.name for n in graph.nodes()}
    reach = {(names[u], names[v]) for u in graph.nodes() for v in nx.descendants(graph, u)}
    direct = {(names[u], names[v]) for u, v in graph.edges()}
    passthrough = {(a, c) for a, b in direct for b2, c in reach if b == b2 and b in ("inputnode", "outputnode")}
    return direct | passthrough, set(names.values())


def test_every_fmri_step_is_a_node_and_wired_in_order():
    cfg = load_pipeline("fmri-default")
    atlases = [("Power264", resolve_atlas("Power264"))]
    wf = init_fmri_wf(_participant((0.0, 1.0)), atlases, "", cfg, Path("/out"))
    edges, nodes = _edges(wf)
    for step in ("nonsteady", "prepare_series", "motion_correction", "boldref_to_t1w", "t1w_to_template", "resample",
                 "tissue_masks", "confounds", "denoise", "parcellate", "connectivity", "sink"):
        assert step in nodes, step
    for edge in [("nonsteady", "prepare_series"), ("prepare_series", "motion_correction"), ("prepare_series", "resample"),
                 ("motion_correction", "boldref_to_t1w"), ("t1w_to_template", "resample"),
                 ("boldref_to_t1w", "resample"), ("resample", "denoise"),
                 ("confounds", "denoise"), ("denoise", "parcellate"), ("parcellate", "connectivity"),
                 ("connectivity", "sink"), ("denoise", "sink_run_0")]:
        assert edge in edges, edge


def test_outputs_reach_their_files_by_name():
    cfg = load_pipeline("fmri-default")
    wf = init_fmri_wf(_participant((0.0, 1.0)), [("Power264", resolve_atlas("Power264"))], "", cfg, Path("/out"))
    graph = wf._create_flat_graph()
    fields = {}
    for u, v, data in graph.edges(data=True):
        if v.name.startswith("sink"):
            for source, target in data["connect"]:
                fields[(v.name, target)] = (u.name, source)
    assert fields[("sink", "matrices")] == ("connectivity", "out_files")
    assert fields[("sink", "coverage")] == ("parcellate", "coverage")
    for key in ("qc", "confounds", "brain_mask"):  # through the BOLD workflow's outputnode, by the same name
        assert fields[("sink_run_0", key)] == ("outputnode", key)
    sink = next(n for n in graph.nodes() if n.name == "sink_run_0")
    assert sink.interface.inputs.out_paths["qc"] == "/out/sub-01/func/sub-01_task-rest_desc-denoise_qc.json"


def test_smoothing_is_a_node_only_when_asked_for():
    cfg = load_pipeline("fmri-default")
    assert cfg.fmri.smoothing.fwhm_mm == 0
    _, nodes = _edges(init_fmri_wf(_participant((0.0, 1.0)), [("Power264", resolve_atlas("Power264"))], "", cfg,
                                   Path("/out")))
    assert "smooth" not in nodes
    smoothed = dataclasses.replace(cfg, fmri=dataclasses.replace(cfg.fmri, smoothing=Smoothing(fwhm_mm=4.0)))
    edges, nodes = _edges(init_fmri_wf(_participant((0.0, 1.0)), [("Power264", resolve_atlas("Power264"))], "",
                                       smoothed, Path("/out")))
    assert ("resample", "smooth") in edges and ("smooth", "denoise") in edges


def test_no_slice_timing_correction_without_slice_times():
    cfg = load_pipeline("fmri-default")
    for times, corrected in (((0.0, 1.0), True), (None, False)):
        wf = init_fmri_wf(_participant(times), [("Power264", resolve_atlas("Power264"))], "", cfg, Path("/out"))
        prepare = next(n for n in wf._create_flat_graph().nodes() if n.name == "prepare_series")
        assert isdefined(prepare.interface.inputs.slice_times) == corrected


def test_one_tail_per_atlas_and_expected_names():
    cfg = load_pipeline("fmri-24p")
    atlases = [(n, resolve_atlas(n)) for n in ("Power264", "Dosenbach160")]
    participant = _participant((0.0, 1.0))
    wf = init_fmri_wf(participant, atlases, "", cfg, Path("/out"))
    assert {"connectome_0_Power264", "connectome_0_Dosenbach160"} <= set(wf.list_node_names()) | {
        n.split(".")[0] for n in wf.list_node_names()}
    names = {p.name for p in expected_outputs(participant, [a for _, a in atlases], cfg, Path("/out"))}
    assert ("sub-01_task-rest_space-MNI152NLin2009aSym_seg-Power264_meas-PearsonCorrelation_relmat.tsv"
            in names)
    assert "sub-01_task-rest_space-MNI152NLin2009aSym_seg-Dosenbach160_stat-coverage_bold.tsv" in names
    assert "sub-01_task-rest_desc-confounds_timeseries.tsv" in names


def _header_only(path: Path, shape: tuple, zooms: tuple) -> Path:
    """A NIfTI file of ``shape`` holding its header only: the workflow sizes nodes from headers."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_zooms(zooms)
    with open(path, "wb") as f:
        header.write_to(f)
    return path


def test_node_memory_does_not_grow_with_the_number_of_volumes(tmp_path):
    cfg = load_pipeline("fmri-default")
    memory, threads = {}, {}
    for n in (600, 1200):
        bold = _header_only(tmp_path / f"sub-01_task-rest{n}_bold.nii", (96, 114, 96, n), (2.0, 2.0, 2.0, 0.8))
        run = BoldRun(bold, {"subject": "01", "task": f"rest{n}"}, 0.8, tuple(np.linspace(0, 0.7, 96)), n)
        wf = init_fmri_wf(Participant("01", Path("/data/sub-01_T1w.nii.gz"), bold=(run,)),
                          [("Power264", resolve_atlas("Power264"))], "", cfg, Path("/out"))
        nodes = {node.name: node for node in wf._create_flat_graph().nodes()}
        memory[n] = {name: node.mem_gb for name, node in nodes.items()}
        threads[n] = {name: node.n_procs for name, node in nodes.items()}
    one_copy = 96 * 114 * 96 * 600 * 4 / 2 ** 30  # GiB of the 600-volume series in float32
    for step in ("nonsteady", "prepare_series", "motion_correction", "resample", "confounds", "denoise", "parcellate",
                 "boldref_to_t1w", "tissue_masks", "connectivity", "skullstrip", "t1w_to_template"):
        assert memory[1200][step] == memory[600][step] < 1.25 * one_copy, step  # series are streamed
    assert {name for name, n in threads[600].items() if n > 1} == set()  # see conntool.workflows.resources


def test_report_nodes_follow_every_sink_and_go_with_no_report():
    cfg = load_pipeline("fmri-default")
    atlases = [("Power264", resolve_atlas("Power264"))]
    edges, nodes = _edges(init_fmri_wf(_participant((0.0, 1.0)), atlases, "", cfg, Path("/out")))
    figures = {"anat_figures", "run_figures_0", "atlas_figures"}
    assert figures | {f"sink_{n}" for n in figures} | {"participant_report"} <= nodes
    for edge in [("t1w_to_template", "anat_figures"), ("segmentation", "anat_figures"), ("anat_figures", "run_figures_0"), ("denoise", "run_figures_0"),
                 ("resample", "run_figures_0"), ("tissue_masks", "run_figures_0"), ("connectivity", "atlas_figures")]:
        assert edge in edges, edge
    sinks = {n for n in nodes if n.startswith("sink")}
    assert sinks == {"sink", "sink_run_0", "sink_anat"} | {f"sink_{n}" for n in figures}
    assert all((sink, "report_inputs") in edges for sink in sinks)  # the page is written last
    assert ("report_inputs", "participant_report") in edges
    _, bare = _edges(init_fmri_wf(_participant((0.0, 1.0)), atlases, "", cfg, Path("/out"), report=False))
    assert not [n for n in bare if "figures" in n or "report" in n]


def test_no_result_waits_for_a_figure():
    """A figure node that fails costs its figure only: no derivatives sink lies downstream of one."""
    cfg = load_pipeline("fmri-default")
    wf = init_fmri_wf(_participant((0.0, 1.0)), [("Power264", resolve_atlas("Power264"))], "", cfg, Path("/out"))
    graph = wf._create_flat_graph()
    for node in graph.nodes():
        if node.name.endswith("figures"):
            after = {d.name for d in nx.descendants(graph, node)}
            assert all("figures" in d or d in ("report_inputs", "participant_report") for d in after), after


def test_a_pepolar_pair_gives_the_field_when_there_is_no_fieldmap(tmp_path):
    """Two fmap/*_epi of opposite phase encoding: their field is estimated, registered to the BOLD
    reference through the unwarped pair's anatomy, and applied in the one resampling."""
    from conntool.bids import PeImage

    epi = []
    for direction, pe in (("AP", "j-"), ("PA", "j")):
        path = tmp_path / f"sub-01_dir-{direction}_epi.nii.gz"
        path.touch()  # the node's inputs must exist
        epi.append(PeImage(path, (0, 1, 2), pe, 0.05))
    run = dataclasses.replace(_participant((0.0, 1.0)).bold[0], phase_encoding_dir="j", total_readout_time=0.04,
                              epi=tuple(epi))
    participant = Participant("01", Path("/data/sub-01/anat/sub-01_T1w.nii.gz"), bold=(run,))
    cfg = load_pipeline("fmri-default")
    wf = init_fmri_wf(participant, [("Power264", resolve_atlas("Power264"))], "", cfg, Path("/out"))
    edges, nodes = _edges(wf)
    for edge in [("pepolar_field", "fieldmap_to_boldref"), ("motion_correction", "fieldmap_to_boldref"),
                 ("fieldmap_to_boldref", "boldref_to_t1w"), ("fieldmap_to_boldref", "resample")]:
        assert edge in edges, edge
    assert "fieldmap" not in nodes  # no GRE fieldmap node
    graph = wf._create_flat_graph()
    field = next(n for n in graph.nodes() if n.name == "pepolar_field").interface.inputs
    assert (field.first_pe, field.reversed_pe, field.first_volumes) == ("j-", "j", [0, 1, 2])
    wired = {(u.name, s, t) for u, v, d in graph.edges(data=True) if v.name == "fieldmap_to_boldref"
             for s, t in d["connect"]}
    assert ("pepolar_field", "corrected", "magnitude_brain") in wired
    sink = next(n for n in graph.nodes() if n.name == "sink_run_0").interface.inputs.out_paths
    assert sink["fieldmap"] == "/out/sub-01/fmap/sub-01_fmapid-dirAPepi_desc-preproc_fieldmap.nii.gz"
    off = dataclasses.replace(cfg, fmri=dataclasses.replace(
        cfg.fmri, distortion_correction=dataclasses.replace(cfg.fmri.distortion_correction, pepolar=False)))
    assert "pepolar_field" not in _edges(init_fmri_wf(participant, [], "", off, Path("/out")))[1]
