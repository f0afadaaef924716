"""PEPOLAR: the field is recovered from a reversed phase-encoding pair made with the
simulator's forward model, both images are unwarped by it; reversed-PE images are found in the
session's DWI series and in ``fmap/*_epi``; an EPI fieldmap without its geometry is an input error."""
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from conntool.bids import find_participant
from conntool.errors import ConntoolInputError
from conntool.simulate import epi_sources
from conntool.steps import fieldmap, pepolar
from conntool.steps.resample import grid_world_coords
from conntool.workflows.dmri import distortion_correction, pepolar_pair

READOUT_S = 0.05


def _reversed_pair():
    """A smooth head-like image at 4 mm, distorted along j- and j by a 100 Hz field (up to 5
    voxels each way, 10 between the two) near its front."""
    rng = np.random.default_rng(0)
    shape, affine = (30, 36, 30), np.diag([4.0, 4.0, 4.0, 1.0])
    grid = grid_world_coords(nib.Nifti1Image(np.zeros(shape, np.uint8), affine))
    head = np.sum(((grid - [60.0, 72.0, 60.0]) / [45.0, 58.0, 45.0]) ** 2, axis=-1) < 1
    texture = ndimage.gaussian_filter(rng.random(shape), 1.5)
    truth = head * (600 + 2000 * texture)

    def field_at(points):
        return 100 * np.exp(-np.sum((points - [60.0, 115.0, 50.0]) ** 2, axis=-1) / (2 * 14.0 ** 2))

    images = []
    for sign in (-1.0, 1.0):
        sources, intensity = epi_sources(grid, field_at, READOUT_S, sign * affine[:3, 1])
        ijk = np.moveaxis(sources @ np.linalg.inv(affine)[:3, :3].T + np.linalg.inv(affine)[:3, 3], -1, 0)
        images.append(ndimage.map_coordinates(truth, ijk, order=1) * intensity)
    return affine, head, field_at(grid), images


def test_field_recovered_and_both_images_unwarped():
    affine, head, true_field, (ap, pa) = _reversed_pair()
    factors = pepolar.readout_factor("j-", READOUT_S), pepolar.readout_factor("j", READOUT_S)
    assert factors == (-READOUT_S, READOUT_S)
    field = pepolar.field_from_pair(ap, pa, np.array([4.0, 4.0, 4.0]), 1, *factors, regularization=1e-8)
    residual = np.abs(field - true_field)[head] * READOUT_S  # voxels of displacement
    before = np.abs(true_field)[head] * READOUT_S
    assert np.percentile(before, 99) > 2.5  # the test has something to correct
    assert np.percentile(residual, 95) < 0.2 and residual.mean() < 0.1 * before.mean() + 0.02, (
        residual.mean(), np.percentile(residual, 95), before.mean())
    unwarped = [fieldmap.unwarp(im, affine, k * field, 1) for im, k in zip((ap, pa), factors)]
    assert pepolar.agreement(*unwarped, head) > pepolar.agreement(ap, pa, head) + 0.05
    wrong_way = [fieldmap.unwarp(im, affine, -k * field, 1) for im, k in zip((ap, pa), factors)]
    assert pepolar.agreement(*wrong_way, head) < pepolar.agreement(ap, pa, head)


def test_bspline_basis_sums_to_one_and_is_smooth():
    basis = pepolar.bspline_basis(37, 4.5)
    assert np.allclose(basis.sum(axis=1), 1.0) and basis.min() >= 0
    assert np.allclose(basis @ np.arange(basis.shape[1]), np.arange(37) / 4.5 + 1.0)  # reproduces a line


def test_real_ap_pa_series_make_a_pair(shared_data):
    from conntool.config import load_pipeline

    runs = find_participant(shared_data / "bids-xa30", "01", "dmri").dwi
    first, reverse = pepolar_pair(runs)
    assert first.path.name == "sub-01_dir-AP_dwi.nii.gz" and first.volumes == (0,) and first.phase_encoding_dir == "j-"
    assert reverse.path.name == "sub-01_dir-PA_dwi.nii.gz" and reverse.identifier == "dirPAdwi"
    assert distortion_correction(pepolar_pair(runs), load_pipeline("dmri-csd-prob").dmri).startswith("pepolar (")
    assert pepolar_pair(runs[:1]) is None  # one direction only: nothing to correct with


def _dwi_with_epi(root, epi_meta):
    dwi = root / "sub-01" / "dwi"
    fmap = root / "sub-01" / "fmap"
    dwi.mkdir(parents=True)
    fmap.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}))
    (root / "sub-01" / "anat").mkdir()
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((10, 10, 10)).astype(np.float32), np.eye(4)),
             root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    nib.save(nib.Nifti1Image(rng.random((6, 6, 6, 4)).astype(np.float32), np.eye(4)), dwi / "sub-01_dwi.nii.gz")
    (dwi / "sub-01_dwi.bval").write_text("0 1000 1000 0\n")
    (dwi / "sub-01_dwi.bvec").write_text("0 1 0 0\n0 0 1 0\n0 0 0 0\n")
    (dwi / "sub-01_dwi.json").write_text(json.dumps({"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.05}))
    nib.save(nib.Nifti1Image(rng.random((6, 6, 6, 2)).astype(np.float32), np.eye(4)), fmap / "sub-01_dir-PA_epi.nii.gz")
    (fmap / "sub-01_dir-PA_epi.json").write_text(json.dumps(
        {**epi_meta, "IntendedFor": ["bids::sub-01/dwi/sub-01_dwi.nii.gz"]}))
    return root


def test_epi_fieldmap_found_by_intended_for(tmp_path):
    runs = find_participant(_dwi_with_epi(tmp_path, {"PhaseEncodingDirection": "j", "TotalReadoutTime": 0.05}),
                            "01", "dmri").dwi
    assert [e.path.name for e in runs[0].epi] == ["sub-01_dir-PA_epi.nii.gz"]
    first, reverse = pepolar_pair(runs)
    assert first.volumes == (0, 3) and reverse.volumes == (0, 1) and reverse.identifier == "dirPAepi"


def test_epi_fieldmap_without_its_geometry_is_an_input_error(tmp_path):
    with pytest.raises(ConntoolInputError, match="sub-01_dir-PA_epi.nii.gz: an EPI fieldmap needs") as err:
        find_participant(_dwi_with_epi(tmp_path, {"TotalReadoutTime": 0.05}), "01", "dmri")
    assert "\n" not in str(err.value)


def test_bold_pair_is_two_epi_of_opposite_directions(tmp_path):
    from tests.conftest import write_tiny_bids

    root = write_tiny_bids(tmp_path / "bids")
    fmap = root / "sub-01" / "fmap"
    fmap.mkdir()
    bold = root / "sub-01" / "func" / "sub-01_task-rest_bold.json"
    bold.write_text(json.dumps({**json.loads(bold.read_text()), "PhaseEncodingDirection": "j",
                                "TotalReadoutTime": 0.04}))
    for direction, pe in (("AP", "j-"), ("PA", "j")):
        nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 6, 2)).astype(np.float32), np.eye(4)),
                 fmap / f"sub-01_dir-{direction}_epi.nii.gz")
        (fmap / f"sub-01_dir-{direction}_epi.json").write_text(json.dumps(
            {"PhaseEncodingDirection": pe, "TotalReadoutTime": 0.05,
             "IntendedFor": ["bids::sub-01/func/sub-01_task-rest_bold.nii.gz"]}))
    run = find_participant(root, "01", "fmri").bold[0]
    first, reverse = run.pepolar_pair()
    assert (first.path.name, reverse.path.name) == ("sub-01_dir-AP_epi.nii.gz", "sub-01_dir-PA_epi.nii.gz")
    assert first.volumes == (0, 1) and run.fieldmap is None
    (fmap / "sub-01_dir-AP_epi.nii.gz").unlink()
    (fmap / "sub-01_dir-AP_epi.json").unlink()
    assert find_participant(root, "01", "fmri").bold[0].pepolar_pair() is None  # one direction: no pair
