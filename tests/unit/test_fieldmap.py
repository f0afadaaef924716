"""Fieldmap SDC steps: phase scaling and unwrapping, field in Hz, and the correction undoes the
simulator's forward distortion (with the right sign and the Jacobian); fieldmaps are found by
IntendedFor, and a fieldmap that cannot be used is a one-line input error."""
import json

import nibabel as nib
import numpy as np
import pytest

from conntool.bids import find_participant
from conntool.errors import ConntoolInputError
from conntool.simulate import epi_sources
from conntool.steps import fieldmap
from conntool.steps.resample import grid_world_coords, sample_volume
from tests.conftest import write_tiny_bids


def test_siemens_phase_is_scaled_and_wraps_are_undone():
    x = np.linspace(-1, 1, 24)
    truth = 5.0 * (x[:, None, None] ** 2 + x[None, :, None] ** 2 + 0 * x[None, None, :12])  # up to 10 rad
    mask = np.ones(truth.shape, bool)
    siemens = np.rint(np.angle(np.exp(1j * truth)) * 4096 / np.pi)
    wrapped = fieldmap.phase_to_radians(siemens)
    assert np.abs(wrapped).max() <= np.pi + 1e-3 and np.abs(wrapped - truth).max() > 3  # wrapped indeed
    unwrapped = fieldmap.unwrap(wrapped, mask)
    offset = np.median(truth) - np.median(unwrapped)
    assert abs(offset / (2 * np.pi) - np.round(offset / (2 * np.pi))) < 1e-3  # equal up to 2πk
    assert np.abs(unwrapped + offset - truth).max() < 2e-3  # 12-bit quantisation
    assert np.allclose(fieldmap.phasediff_to_hz(np.full(3, np.pi), 0.00492, 0.00738), 1 / (2 * 0.00246))


def test_shift_sign_follows_the_phase_encoding_direction():
    assert fieldmap.shift_voxels(np.array([100.0]), 0.05, "j")[0] == 5.0
    assert fieldmap.shift_voxels(np.array([100.0]), 0.05, "j-")[0] == -5.0
    assert fieldmap.pe_axis_and_sign("i-") == (0, -1.0)


def _blob_image():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    grid = grid_world_coords(nib.Nifti1Image(np.zeros((24, 40, 8)), affine))
    truth = np.exp(-np.sum((grid - [24.0, 40.0, 8.0]) ** 2 / [60.0, 120.0, 1e4], axis=-1)) * 1000
    field = 60 * np.exp(-np.sum((grid - [24.0, 46.0, 8.0]) ** 2 / [200.0, 200.0, 1e4], axis=-1))  # Hz
    return affine, grid, truth, field


@pytest.mark.parametrize("pe_dir", ["j", "j-"])
def test_correction_undoes_the_simulated_distortion(pe_dir):
    affine, grid, truth, field = _blob_image()
    axis, sign = fieldmap.pe_axis_and_sign(pe_dir)

    def field_at(points):
        return sample_volume(field, affine, points, order=1)

    sources, intensity = epi_sources(grid, field_at, 0.05, sign * affine[:3, axis])
    distorted = sample_volume(truth, affine, sources, order=3) * intensity
    shift = fieldmap.shift_voxels(field, 0.05, pe_dir)
    errors = {}
    for name, s in (("none", 0 * shift), ("corrected", shift), ("opposite", -shift)):
        errors[name] = np.abs(fieldmap.unwarp(distorted, affine, s, axis) - truth).mean()
    assert errors["none"] > 50 * errors["corrected"] and errors["opposite"] > errors["none"], errors


def test_real_fieldmap_found_by_intended_for(shared_data):
    run = find_participant(shared_data / "bids-xa30", "01", "fmri").bold[0]
    fmap = run.fieldmap
    assert fmap.kind == "phasediff" and fmap.echo_times == (0.01, 0.01246) and fmap.identifier == "phasediff"
    assert fmap.magnitude.name == "sub-01_magnitude1.nii.gz" and run.phase_encoding_dir == "j-"


def _with_fieldmap(root, phasediff_meta, bold_meta=None):
    write_tiny_bids(root)
    fmap = root / "sub-01" / "fmap"
    fmap.mkdir()
    for name in ("magnitude1", "phasediff"):
        nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(100, 10, (8, 8, 6)).astype(np.float32), np.eye(4)),
                 fmap / f"sub-01_{name}.nii.gz")
    bold = next((root / "sub-01" / "func").glob("*_bold.nii.gz"))
    (fmap / "sub-01_phasediff.json").write_text(json.dumps(
        {**phasediff_meta, "IntendedFor": [f"bids::sub-01/func/{bold.name}"]}))
    sidecar = bold.with_name(bold.name.replace(".nii.gz", ".json"))
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **(bold_meta or {})}))
    return root


@pytest.mark.parametrize("meta,bold_meta,message", [
    ({"EchoTime1": 0.00492}, {"PhaseEncodingDirection": "j", "TotalReadoutTime": 0.05},
     "phasediff.nii.gz: EchoTime2 missing"),
    ({"EchoTime1": 0.007, "EchoTime2": 0.005}, {"PhaseEncodingDirection": "j", "TotalReadoutTime": 0.05},
     "must be later than the first"),
    ({"EchoTime1": 0.00492, "EchoTime2": 0.00738}, {}, "has a fieldmap (sub-01_phasediff.nii.gz) but no"),
])
def test_unusable_fieldmap_is_a_one_line_input_error(tmp_path, meta, bold_meta, message):
    root = _with_fieldmap(tmp_path / "bids", meta, bold_meta)
    with pytest.raises(ConntoolInputError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        find_participant(root, "01", "fmri")
    assert "\n" not in str(err.value)


def test_effective_echo_spacing_gives_the_readout_time(tmp_path):
    root = _with_fieldmap(tmp_path / "bids", {"EchoTime1": 0.00492, "EchoTime2": 0.00738},
                          {"PhaseEncodingDirection": "j-", "EffectiveEchoSpacing": 0.0005})
    run = find_participant(root, "01", "fmri").bold[0]
    assert run.fieldmap.kind == "phasediff" and np.isclose(run.total_readout_time, 0.0005 * 7)  # 8 voxels along j
