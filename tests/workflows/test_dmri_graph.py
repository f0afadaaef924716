"""Build the dMRI workflow for a fake participant with an AP/PA pair and check its wiring."""
from pathlib import Path

from conntool.atlases import resolve_atlas
from conntool.bids import DwiRun, Participant
from conntool.config import load_pipeline
from conntool.workflows.dmri import expected_outputs, init_dmri_wf
from tests.workflows.test_fmri_graph import _edges


def _participant():
    runs = tuple(DwiRun(Path(f"/d/sub-01_dir-{d}_dwi.nii.gz"), Path(f"/d/sub-01_dir-{d}_dwi.bval"),
                        Path(f"/d/sub-01_dir-{d}_dwi.bvec"), {"subject": "01", "direction": d}, None)
                 for d in ("AP", "PA"))
    return Participant("01", Path("/d/sub-01_T1w.nii.gz"), dwi=runs)


def test_every_dmri_step_is_a_node_and_both_series_are_combined():
    cfg = load_pipeline("dmri-csd-prob")
    wf = init_dmri_wf(_participant(), [("Power264", resolve_atlas("Power264"))], "", cfg, Path("/out"))
    edges, nodes = _edges(wf)
    for step in ("denoise_1", "denoise_2", "gibbs_1", "gibbs_2", "motion_eddy", "tensor_maps", "dwi_to_t1w",
                 "t1w_to_template", "tissue_to_dwi", "tractography", "atlas_to_dwi_Power264",
                 "structural_Power264"):
        assert step in nodes, step
    for edge in [("gibbs_1", "gather_dwi"), ("gibbs_2", "gather_dwi"), ("gather_dwi", "motion_eddy"),
                 ("tensor_maps", "tractography"), ("tissue_to_dwi", "tractography"),
                 ("t1w_to_template", "atlas_to_dwi_Power264"), ("tractography", "structural_Power264")]:
        assert edge in edges, edge


def test_dmri_output_names():
    cfg = load_pipeline("dmri-dti-det")
    names = {p.name for p in expected_outputs(_participant(), [resolve_atlas("Power264")], cfg, Path("/o"))}
    assert "sub-01_space-dwi_seg-Power264_meas-StreamlineCount_relmat.tsv" in names
    assert "sub-01_space-dwi_model-tensor_desc-deterministic_tractography.trx" in names
    assert "sub-01_space-dwi_model-tensor_desc-FA_dwimap.nii.gz" in names
