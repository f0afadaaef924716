"""Tissue segmentation: Atropos finds the tissues of the image, not of the (misplaced) priors;
it is reproducible; the priors reach the T1w grid through the inverse warp; the shared
anatomical outputs are guarded from overwriting unless this run would write them identically."""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from conntool.bids import Participant
from conntool.config import load_pipeline
from conntool.interfaces.dmri import TissuesToDwi
from conntool.steps import segmentation
from conntool.workflows.anat import anat_outputs_to_check, anat_paths, anat_provenance


def _phantom(shift_voxels: int):
    """Concentric WM core, GM shell, CSF shell (40³, 2 mm) with noise, and priors blurred and
    displaced by ``shift_voxels`` along x, as a registration error would."""
    radius = np.linalg.norm(np.moveaxis(np.indices((40, 40, 40), dtype=float), 0, -1) - 19.5, axis=-1)
    truth = {"wm": radius < 8, "gm": (radius >= 8) & (radius < 12), "csf": (radius >= 12) & (radius < 15)}
    brain = radius < 15
    t1w = 1000.0 * truth["wm"] + 600.0 * truth["gm"] + 250.0 * truth["csf"]
    t1w = (t1w + np.random.default_rng(0).normal(0, 60, t1w.shape)) * brain
    priors = {t: np.roll(ndimage.gaussian_filter(m.astype(float), 1.5), shift_voxels, axis=0) for t, m in truth.items()}
    return t1w, brain, truth, priors


def test_atropos_finds_the_image_tissues_where_the_priors_are_displaced():
    t1w, brain, truth, priors = _phantom(shift_voxels=2)
    found = segmentation.atropos(t1w, brain, (2.0, 2.0, 2.0), priors, prior_weight=0.25, mrf_smoothing=0.1,
                                 iterations=5)
    labels = segmentation.hard_labels(found, brain)
    prior_labels = segmentation.hard_labels(priors, brain)
    for tissue, value in segmentation.DSEG_LABELS.items():
        ours = segmentation.dice(labels == value, truth[tissue])
        assert ours > 0.9, (tissue, ours)
        assert ours > segmentation.dice(prior_labels == value, truth[tissue]) + 0.05, tissue
    total = found["gm"] + found["wm"] + found["csf"]
    assert np.allclose(total[brain], 1, atol=1e-5) and not total[~brain].any()


def test_atropos_is_reproducible():
    t1w, brain, _, priors = _phantom(shift_voxels=1)
    runs = [segmentation.atropos(t1w, brain, (2.0, 2.0, 2.0), priors, 0.25, 0.1, 3) for _ in range(2)]
    assert all(np.array_equal(runs[0][t], runs[1][t]) for t in segmentation.TISSUES)


def test_warped_priors_follow_the_inverse_coordinate_map():
    prior = np.zeros((20, 20, 20))
    prior[5:10, 5:10, 5:10] = 1.0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    t1w_ijk = np.moveaxis(np.indices((20, 20, 20), dtype=float), 0, -1)
    template_points = (t1w_ijk + [2, 0, 0]) * 2.0  # T1w voxel i sits at template voxel i + 2
    found = segmentation.warped_priors({t: prior for t in segmentation.TISSUES}, affine, template_points)
    assert np.array_equal(found["gm"][3:8, 5:10, 5:10], np.ones((5, 5, 5)))
    assert found["gm"].sum() == 125


def test_tissues_reach_the_dwi_grid_through_the_rigid_transform(tmp_path):
    wm = np.zeros((30, 30, 30), np.float32)
    wm[10:20, 10:20, 10:20] = 1.0
    for tissue in ("wm", "gm", "csf"):
        nib.save(nib.Nifti1Image(wm, np.eye(4)), tmp_path / f"{tissue}.nii.gz")
    dwi_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.ones((15, 15, 15), np.uint8), dwi_affine), tmp_path / "ref.nii.gz")
    t1w_to_dwi = np.eye(4)
    t1w_to_dwi[:3, 3] = [4.0, 0.0, 0.0]  # a T1w point is 4 mm further along x in DWI world
    np.save(tmp_path / "t1w_to_dwi.npy", t1w_to_dwi)
    result = TissuesToDwi(reference=str(tmp_path / "ref.nii.gz"), t1w_to_dwi=str(tmp_path / "t1w_to_dwi.npy"),
                          **{t: str(tmp_path / f"{t}.nii.gz") for t in ("wm", "gm", "csf")}).run(cwd=str(tmp_path))
    on_dwi = np.asarray(nib.load(result.outputs.wm).dataobj)
    assert on_dwi[7, 7, 7] == 1 and on_dwi[4, 7, 7] == 0  # DWI x 14 mm ← T1w 10 mm; DWI 8 mm ← T1w 4 mm
    assert np.isclose(on_dwi[:, 7, 7].sum(), 5)  # 10 mm of WM along x: five 2 mm voxels


def test_shared_anatomical_outputs_are_guarded_unless_this_run_makes_them_identically(tmp_path):
    cfg = load_pipeline("fmri-default")
    participant = Participant(label="01", t1w=Path("/bids/sub-01/anat/sub-01_T1w.nii.gz"), bold=(), dwi=())
    assert len(anat_outputs_to_check(tmp_path, participant, cfg.fmri, cfg.seed)) == 6  # (none exists yet)
    paths = anat_paths(tmp_path, "01")
    for tissue, sidecar in paths["sidecar"].items():
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        sidecar.write_text(json.dumps(anat_provenance(participant.t1w, cfg.fmri, cfg.seed)))
        paths["probseg"][tissue].write_bytes(b"")
    assert anat_outputs_to_check(tmp_path, participant, cfg.fmri, cfg.seed) == []
    assert len(anat_outputs_to_check(tmp_path, participant, cfg.fmri, cfg.seed + 1)) == 6
    assert paths["probseg"]["gm"].name == "sub-01_label-GM_probseg.nii.gz"
