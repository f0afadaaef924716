"""Build the dMRI workflow for fake participants and check its wiring without running it."""
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from nipype.interfaces.utility import IdentityInterface

from conntool.atlases import resolve_atlas
from conntool.bids import DwiRun, Participant
from conntool.config import config_from_dict, load_pipeline, preset_text
from conntool.workflows.dmri import dwi_paths, expected_outputs, init_dmri_wf


def _run(folder: Path, stem: str, slice_axis: int = 2) -> DwiRun:
    ents = dict(part.split("-") for part in stem.split("_"))
    entities = {"subject": ents["sub"], "direction": ents["dir"]}
    if "ses" in ents:
        entities["session"] = ents["ses"]
    return DwiRun(path=folder / f"{stem}_dwi.nii.gz", bval=folder / f"{stem}_dwi.bval",
                  bvec=folder / f"{stem}_dwi.bvec", entities=entities, slice_axis=slice_axis)


def _participant(*runs: DwiRun) -> Participant:
    return Participant("01", Path("/d/sub-01_T1w.nii.gz"), dwi=runs)


def _links(wf) -> set[tuple[str, str, str, str]]:
    """(source, output, destination, input) of every connection, traced back through
    IdentityInterface nodes (workflow input/output nodes); nodes named without the top workflow."""
    feeds = {}
    for source, destination, data in wf._create_flat_graph().edges(data=True):
        for output, inp in data["connect"]:
            feeds[(destination, inp)] = (source, output)

    def origin(node, port):
        while isinstance(node.interface, IdentityInterface) and (node, port) in feeds:
            node, port = feeds[(node, port)]
        return node, port

    def name(node) -> str:
        return node.fullname.split(".", 1)[1]

    links = set()
    for (destination, inp), (source, output) in feeds.items():
        if not isinstance(destination.interface, IdentityInterface):
            node, port = origin(source, output)
            links.add((name(node), port, name(destination), inp))
    return links


def _nodes(wf) -> dict:
    return {node.fullname.split(".", 1)[1]: node for node in wf._create_flat_graph().nodes()}


def _cfg(preset: str, **dmri):
    data = yaml.safe_load(preset_text(preset)[1])
    data["dmri"].update(dmri)
    return config_from_dict(data, preset)


POWER = [("Power264", resolve_atlas("Power264"))]


def test_series_of_a_session_are_denoised_degibbsed_along_their_slice_axis_and_combined():
    runs = (_run(Path("/d"), "sub-01_dir-AP", slice_axis=1), _run(Path("/d"), "sub-01_dir-PA", slice_axis=0))
    cfg = _cfg("dmri-dti-det", seed_fa_threshold=0.3, seed_wm_threshold=0.6, dti_odf_power=3,
               motion_sampling_proportion=0.5)
    wf = init_dmri_wf(_participant(*runs), POWER, "", cfg, Path("/out"))
    links, nodes = _links(wf), _nodes(wf)
    assert nodes["dwi_wf.inputnode"].inputs.dwi == [str(r.path) for r in runs]
    assert nodes["dwi_wf.gibbs"].inputs.slice_axis == [1, 0]
    assert nodes["dwi_wf.motion_eddy"].inputs.sampling_proportion == 0.5
    assert nodes["dwi_wf.tractography"].inputs.seed_fa_threshold == 0.3
    assert nodes["dwi_wf.tractography"].inputs.seed_wm_threshold == 0.6
    assert nodes["dwi_wf.tractography"].inputs.dti_odf_power == 3
    assert nodes["dwi_wf.tractography"].inputs.sidecar["MotionSamplingProportion"] == 0.5
    for link in [
        ("dwi_wf.inputnode", "dwi", "dwi_wf.denoise", "in_file"),
        ("dwi_wf.denoise", "out_file", "dwi_wf.gibbs", "in_file"),
        ("dwi_wf.gibbs", "out_file", "dwi_wf.motion_eddy", "in_files"),
        ("dwi_wf.inputnode", "bvec", "dwi_wf.motion_eddy", "bvecs"),
        ("anat_wf.skullstrip", "t1w_brain", "dwi_wf.dwi_to_t1w", "t1w"),
        ("anat_wf.t1w_to_template", "inverse_coordmap", "anat_wf.segmentation", "inverse_coordmap"),
        ("anat_wf.segmentation", "wm", "dwi_wf.tissue_to_dwi", "wm"),
        ("dwi_wf.dwi_to_t1w", "t1w_to_dwi", "dwi_wf.tissue_to_dwi", "t1w_to_dwi"),
        ("anat_wf.t1w_to_template", "inverse_coordmap", "dwi_wf.atlas_to_dwi_Power264", "inverse_coordmap"),
        ("dwi_wf.dwi_to_t1w", "t1w_to_dwi", "dwi_wf.atlas_to_dwi_Power264", "t1w_to_dwi"),
        ("dwi_wf.motion_eddy", "bvec", "dwi_wf.tractography", "bvec"),
        ("dwi_wf.tensor_maps", "fa", "dwi_wf.tractography", "fa"),
        ("dwi_wf.tissue_to_dwi", "wm", "dwi_wf.tractography", "wm"),
        ("dwi_wf.tractography", "tractogram", "dwi_wf.structural_Power264", "tractogram"),
        ("dwi_wf.atlas_to_dwi_Power264", "labels", "dwi_wf.structural_Power264", "labels"),
    ]:
        assert link in links, link
    merges = [name for name, node in nodes.items() if type(node.interface).__name__ == "Merge"]
    assert merges == ["report_inputs"]  # series are combined by motion_eddy itself; the one Merge feeds the report


def test_every_output_reaches_its_sink_by_name():
    runs = (_run(Path("/d"), "sub-01_dir-AP"),)
    cfg = load_pipeline("dmri-csd-prob")
    participant = _participant(*runs)
    wf = init_dmri_wf(participant, POWER, "", cfg, Path("/out"))
    links, nodes = _links(wf), _nodes(wf)
    paths = dwi_paths(Path("/out"), participant, cfg, ["Power264"])[""]
    expected = {
        "sink_preproc": [("motion_eddy", "out_file", "dwi"), ("motion_eddy", "bval", "bval"),
                         ("motion_eddy", "bvec", "bvec"), ("motion_eddy", "mask", "mask")],
        "sink_maps": [("tensor_maps", key, key) for key in ("fa", "md", "ad", "rd")],
        "sink_tractography": [("tractography", "tractogram", "tractogram"), ("tractography", "sidecar", "sidecar")],
        "sink_Power264": [("atlas_to_dwi_Power264", "labels", "labels"),
                          ("structural_Power264", "matrices", "matrices")],
    }
    groups = {"sink_preproc": paths["preproc"], "sink_maps": paths["maps"],
              "sink_tractography": paths["tractography"], "sink_Power264": paths["atlases"]["Power264"]}
    for sink, wires in expected.items():
        fed = {(s, o, i) for s, o, d, i in links if d == f"dwi_wf.{sink}"}
        assert fed == {(f"dwi_wf.{s}", o, i) for s, o, i in wires}, sink
        out_paths = nodes[f"dwi_wf.{sink}"].inputs.out_paths
        assert set(out_paths) == {i for _, _, i in wires}
        assert out_paths == {k: {m: str(p) for m, p in v.items()} if isinstance(v, dict) else str(v)
                             for k, v in groups[sink].items()}


def test_sessions_are_never_combined_and_the_t1w_is_processed_once():
    runs = (_run(Path("/d"), "sub-01_ses-1_dir-AP"), _run(Path("/d"), "sub-01_ses-1_dir-PA"),
            _run(Path("/d"), "sub-01_ses-2_dir-AP"))
    cfg = load_pipeline("dmri-csd-prob")
    wf = init_dmri_wf(_participant(*runs), POWER, "", cfg, Path("/out"))
    links, nodes = _links(wf), _nodes(wf)
    assert [n for n in nodes if n.endswith("skullstrip")] == ["anat_wf.skullstrip"]
    assert nodes["dwi_ses_1_wf.inputnode"].inputs.dwi == [str(runs[0].path), str(runs[1].path)]
    assert nodes["dwi_ses_2_wf.inputnode"].inputs.dwi == [str(runs[2].path)]
    between = [(s, d) for s, _, d, _ in links  # links between the two sessions' workflows
               if s.split(".")[0] != d.split(".")[0] and s.startswith("dwi_ses") and d.startswith("dwi_ses")]
    assert between == []
    assert {d for s, _, d, _ in links if s.startswith("dwi_ses") and not d.startswith("dwi_ses")} == {"report_inputs"}
    for session in ("1", "2"):
        assert ("anat_wf.skullstrip", "t1w_brain", f"dwi_ses_{session}_wf.dwi_to_t1w", "t1w") in links
        out_paths = nodes[f"dwi_ses_{session}_wf.sink_preproc"].inputs.out_paths
        prefix = f"/out/sub-01/ses-{session}/dwi/sub-01_ses-{session}_space-dwi_"
        assert out_paths["dwi"] == prefix + "desc-preproc_dwi.nii.gz"
        matrices = nodes[f"dwi_ses_{session}_wf.sink_Power264"].inputs.out_paths["matrices"]
        assert matrices["StreamlineCount.tsv"] == prefix + "seg-Power264_meas-StreamlineCount_relmat.tsv"


def test_without_gibbs_removal_denoised_series_are_combined():
    cfg = _cfg("dmri-dti-det", gibbs_removal=False)
    wf = init_dmri_wf(_participant(_run(Path("/d"), "sub-01_dir-AP")), POWER, "", cfg, Path("/out"))
    assert "dwi_wf.gibbs" not in _nodes(wf)
    assert ("dwi_wf.denoise", "out_file", "dwi_wf.motion_eddy", "in_files") in _links(wf)


@pytest.mark.parametrize("sessions", [False, True])
def test_dmri_output_names(sessions):
    cfg = load_pipeline("dmri-dti-det")
    stem = "sub-01_ses-1_dir-AP" if sessions else "sub-01_dir-AP"
    found = expected_outputs(_participant(_run(Path("/d"), stem)), [resolve_atlas("Power264")], cfg, Path("/o"))
    prefix = "sub-01_ses-1" if sessions else "sub-01"
    folder = Path("/o/sub-01/ses-1/dwi") if sessions else Path("/o/sub-01/dwi")
    assert {p.parent for p in found} == {folder, Path("/o/sub-01/anat")}
    names = {p.name for p in found}
    for tissue in ("GM", "WM", "CSF"):
        assert {f"sub-01_label-{tissue}_probseg.nii.gz", f"sub-01_label-{tissue}_probseg.json"} <= names
    for name in ("space-dwi_desc-preproc_dwi.nii.gz", "space-dwi_desc-preproc_dwi.bval",
                 "space-dwi_desc-preproc_dwi.bvec", "space-dwi_desc-brain_mask.nii.gz",
                 "space-dwi_model-tensor_desc-FA_dwimap.nii.gz", "space-dwi_model-tensor_desc-RD_dwimap.nii.gz",
                 "space-dwi_model-tensor_desc-deterministic_tractography.trx",
                 "space-dwi_model-tensor_desc-deterministic_tractography.json",
                 "space-dwi_seg-Power264_dseg.nii.gz", "space-dwi_seg-Power264_meas-StreamlineCount_relmat.tsv",
                 "space-dwi_seg-Power264_meas-MeanFA_relmat.json"):
        assert f"{prefix}_{name}" in names, name
    assert len(found) == len(names) == 6 + 4 + 4 + 2 + 1 + 8


def _header_only(path: Path, shape: tuple) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_zooms((2.0, 2.0, 2.0, 1.0))
    with gzip.open(path, "wb") as f:
        header.write_to(f)
    return path


def test_nodes_declare_memory_from_the_series_and_two_processes(tmp_path):
    """Per-series nodes are sized by one series, the combined ones by the session's series
    together; Gibbs removal, motion correction and tractography, which work in two processes,
    declare both."""
    for stem in ("sub-01_dir-AP", "sub-01_dir-PA"):
        _header_only(tmp_path / f"{stem}_dwi.nii.gz", (96, 114, 80, 48))
    runs = (_run(tmp_path, "sub-01_dir-AP"), _run(tmp_path, "sub-01_dir-PA"))
    nodes = _nodes(init_dmri_wf(_participant(*runs), POWER, "", load_pipeline("dmri-csd-prob"), Path("/out")))
    one_series = 96 * 114 * 80 * 48 * 4 / 2 ** 30
    assert nodes["dwi_wf.denoise"].mem_gb == pytest.approx(0.5 + 4 * one_series, abs=0.01)
    assert nodes["dwi_wf.motion_eddy"].mem_gb == pytest.approx(1.0 + 3 * 2 * one_series, abs=0.01)
    assert nodes["dwi_wf.gibbs"].n_procs == nodes["dwi_wf.motion_eddy"].n_procs == 2
    assert nodes["dwi_wf.tractography"].n_procs == 2 and nodes["dwi_wf.tensor_maps"].n_procs == 1


def _reversed_pair(folder: Path) -> tuple[DwiRun, DwiRun]:
    """An AP/PA pair of series with their phase encoding; b-values on disk (the pair's b=0 volumes are
    chosen by them), the images empty files (the field node's inputs must exist)."""
    runs = []
    for direction, pe in (("AP", "j-"), ("PA", "j")):
        run = _run(folder, f"sub-01_dir-{direction}")
        run.bval.write_text("0 1000 0 1000\n")
        run.path.touch()
        runs.append(DwiRun(run.path, run.bval, run.bvec, run.entities, phase_encoding_dir=pe, total_readout_time=0.05))
    return tuple(runs)


def test_a_reversed_pair_is_unwarped_before_it_is_combined(tmp_path):
    runs = _reversed_pair(tmp_path)
    participant = _participant(*runs)
    cfg = load_pipeline("dmri-csd-prob")
    wf = init_dmri_wf(participant, POWER, "", cfg, Path("/out"))
    links, nodes = _links(wf), _nodes(wf)
    field = nodes["dwi_wf.pepolar_field"].inputs
    assert (field.first, field.first_volumes, field.first_pe) == (str(runs[0].path), [0, 2], "j-")
    assert (field.reversed_file, field.reversed_pe, field.regularization) == (str(runs[1].path), "j", 1e-8)
    assert nodes["dwi_wf.unwarp"].inputs.phase_encoding_dir == ["j-", "j"]
    for link in [("dwi_wf.gibbs", "out_file", "dwi_wf.unwarp", "in_file"),
                 ("dwi_wf.pepolar_field", "field_hz", "dwi_wf.unwarp", "field_hz"),
                 ("dwi_wf.unwarp", "out_file", "dwi_wf.motion_eddy", "in_files"),
                 ("dwi_wf.pepolar_field", "field_hz", "dwi_wf.sink_fieldmap", "field"),
                 ("dwi_wf.pepolar_field", "references", "dwi_wf.dwi_figures", "pepolar_references")]:
        assert link in links, link
    assert nodes["dwi_wf.sink_fieldmap"].inputs.out_paths["field"] == \
        "/out/sub-01/fmap/sub-01_fmapid-dirPAdwi_desc-preproc_fieldmap.nii.gz"
    assert nodes["dwi_wf.tractography"].inputs.sidecar["DistortionCorrection"].startswith("pepolar (")
    off = _cfg("dmri-csd-prob", distortion_correction={"pepolar": False, "regularization": 1e-8})
    nodes = _nodes(init_dmri_wf(participant, POWER, "", off, Path("/out")))
    assert "dwi_wf.pepolar_field" not in nodes and "dwi_wf.unwarp" not in nodes
    assert nodes["dwi_wf.tractography"].inputs.sidecar["DistortionCorrection"] == "none: switched off in the preset"
    assert "fieldmap" not in dwi_paths(Path("/out"), participant, off, ["Power264"])[""]
