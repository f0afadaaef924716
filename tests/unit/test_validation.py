"""Inputs broken the ways real datasets are: one line naming the file or option, exit 2,
nothing written, before any work; or a warning where the input is usable as it is."""
import json
import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from conntool.bids import choose_t1w, find_participant, find_participants
from conntool.cli import main
from conntool.errors import ConntoolInputError
from conntool.workflows.fmri import expected_outputs, qc_path
from tests.conftest import write_tiny_bids

BOLD = Path("sub-01") / "func" / "sub-01_task-rest_bold.nii.gz"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _fails(result, *needles, untouched=()):
    """Exit 2, exactly one line starting ``conntool: error:`` holding every needle, nothing made."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("conntool: error:"), result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    for path in untouched:
        assert not Path(path).exists(), path


def _fmri(bids, out, *extra):
    return run("fmri", bids, out, "--atlas", "Power264", "--work-dir", out.parent / "work", *extra)


def _rewrite_bold(bids, data=None, affine=None):
    img = nib.load(bids / BOLD)
    values = np.asarray(img.dataobj) if data is None else data
    nib.save(nib.Nifti1Image(values, img.affine if affine is None else affine), bids / BOLD)


def _sidecar(bids, **changes):
    path = bids / "sub-01" / "func" / "sub-01_task-rest_bold.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


@pytest.fixture
def bids(tmp_path):
    return write_tiny_bids(tmp_path / "bids")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_bold_with_nan_or_inf(bids, tmp_path, value):
    data = np.asarray(nib.load(bids / BOLD).dataobj).copy()
    data[2, 3, 1, 5] = value
    _rewrite_bold(bids, data)
    _fails(_fmri(bids, tmp_path / "out"), BOLD.name, "NaN or infinite", untouched=[tmp_path / "out",
                                                                                   tmp_path / "work"])


def test_all_zero_bold(bids, tmp_path):
    _rewrite_bold(bids, np.zeros((8, 8, 6, 12), np.float32))
    _fails(_fmri(bids, tmp_path / "out"), BOLD.name, "all zeros", untouched=[tmp_path / "out"])


@pytest.mark.parametrize("tr", [0, -2, "2s", None])
def test_bad_repetition_time(tmp_path, tr):
    bids = write_tiny_bids(tmp_path / "bids", slice_timing=False)
    _sidecar(bids, RepetitionTime=tr)
    _fails(_fmri(bids, tmp_path / "out"), "sub-01_task-rest_bold", "RepetitionTime", untouched=[tmp_path / "out"])


@pytest.mark.parametrize("affine", [np.zeros((4, 4)), np.array([[2, 0, 0, 0], [2, 0, 0, 0], [0, 0, 3, 0],
                                                                  [0, 0, 0, 1.0]])])
def test_zero_or_singular_affine(bids, tmp_path, affine):
    img = nib.load(bids / BOLD)
    header = img.header.copy()
    header["qform_code"], header["sform_code"] = 0, 1
    for row, key in enumerate(("srow_x", "srow_y", "srow_z")):  # raw fields: nibabel refuses to build such a header
        header[key] = affine[row]
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), None, header), bids / BOLD)
    _fails(_fmri(bids, tmp_path / "out"), BOLD.name, untouched=[tmp_path / "out"])


def test_slice_timing_beyond_tr(bids, tmp_path):
    _sidecar(bids, SliceTiming=[0.0, 0.4, 0.8, 1.2, 1.6, 2.0])  # TR is 2 s: the last slice would be the next volume
    _fails(_fmri(bids, tmp_path / "out"), BOLD.name, "SliceTiming", "[0, RepetitionTime=2 s)",
           untouched=[tmp_path / "out"])


def test_bad_slice_encoding_direction(bids, tmp_path):
    _sidecar(bids, SliceEncodingDirection="z")
    _fails(_fmri(bids, tmp_path / "out"), BOLD.name, "SliceEncodingDirection", untouched=[tmp_path / "out"])


def test_slice_axis_and_order_from_metadata(tmp_path):
    bids = write_tiny_bids(tmp_path / "bids", slice_timing=False)
    _sidecar(bids, SliceEncodingDirection="i-", SliceTiming=[0.1 * k for k in range(8)],
             PhaseEncodingDirection="j-", TotalReadoutTime=0.05)
    run_ = find_participant(bids, "01", "fmri").bold[0]
    assert run_.slice_axis == 0
    assert run_.slice_times == tuple(0.1 * k for k in reversed(range(8)))  # voxel 0 was acquired last
    assert run_.phase_encoding_dir == "j-" and run_.total_readout_time == 0.05


def test_header_tr_disagreeing_with_sidecar_warns_and_uses_sidecar(bids, caplog):
    img = nib.load(bids / BOLD)
    img.header["pixdim"][4] = 0.0
    nib.save(img, bids / BOLD)
    with caplog.at_level(logging.WARNING, logger="conntool"):
        run_ = find_participant(bids, "01", "fmri").bold[0]
    assert run_.tr == 2.0
    assert "header TR 0 s disagrees with the sidecar's RepetitionTime 2 s" in caplog.text


def test_work_dir_and_output_dir_that_are_files(bids, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    _fails(run("fmri", bids, tmp_path / "out", "--atlas", "Power264", "--work-dir", a_file), "--work-dir",
           "is a file", untouched=[tmp_path / "out"])
    _fails(run("fmri", bids, tmp_path / "out", "--atlas", "Power264", "--work-dir", a_file / "work"),
           "--work-dir", "is a file", untouched=[tmp_path / "out"])
    _fails(run("fmri", bids, a_file, "--atlas", "Power264", "--work-dir", tmp_path / "work"), "OUTPUT_DIR",
           "is a file", untouched=[tmp_path / "work"])
    assert a_file.read_text() == "not a folder"


def test_plugin_nprocs_and_repeated_atlas(bids, tmp_path):
    out = tmp_path / "out"
    _fails(_fmri(bids, out, "--plugin", "NoSuch"), "--plugin NoSuch", "MultiProc", untouched=[out])
    _fails(_fmri(bids, out, "--nprocs", "0"), "--nprocs", untouched=[out])
    _fails(run("fmri", bids, out, "--atlas", "Power264", "--atlas", "Power264"), "--atlas Power264",
           "more than once", untouched=[out])


def test_validation_takes_seconds(bids, tmp_path):
    """A bad option found after the data were read still fails fast (the 10 s budget)."""
    start = time.time()
    _fails(_fmri(bids, tmp_path / "out", "--pipeline", str(tmp_path / "missing.yaml")), "missing.yaml")
    assert time.time() - start < 10


def _dwi(bids, bvec_text="0 1 0 0\n0 0 1 0\n0 0 0 1\n", folder=None):
    dwi = folder or bids / "sub-01" / "dwi"
    dwi.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).random((6, 6, 6, 4)).astype(np.float32) + 1
    nib.save(nib.Nifti1Image(data, np.eye(4)), dwi / "sub-01_dwi.nii.gz")
    (dwi / "sub-01_dwi.bval").write_text("0 1000 1000 1000\n")
    (dwi / "sub-01_dwi.bvec").write_text(bvec_text)
    return dwi


def test_nan_in_bvec(bids, tmp_path):
    _dwi(bids, "0 1 0 0\n0 0 nan 0\n0 0 0 1\n")
    _fails(run("dmri", bids, tmp_path / "out", "--atlas", "Power264"), "sub-01_dwi.bvec", "NaN",
           untouched=[tmp_path / "out"])


def test_gradient_files_found_by_inheritance(bids):
    dwi = _dwi(bids)
    for ext in (".bval", ".bvec"):  # a dataset-level dwi.bval/.bvec applies to every DWI series
        (dwi / f"sub-01_dwi{ext}").rename(bids / f"dwi{ext}")
    found = find_participant(bids, "01", "dmri").dwi[0]
    assert found.bval == bids / "dwi.bval" and found.bvec == bids / "dwi.bvec"


def test_gradient_files_missing(bids, tmp_path):
    (_dwi(bids) / "sub-01_dwi.bvec").unlink()
    _fails(run("dmri", bids, tmp_path / "out", "--atlas", "Power264"), "sub-01_dwi.nii.gz", ".bvec",
           untouched=[tmp_path / "out"])


def test_series_on_different_grids_are_not_combined(bids, tmp_path):
    dwi = _dwi(bids)
    other = dwi / "sub-01_dir-PA_dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 6, 5, 4), np.float32), np.eye(4)), other)
    for ext in (".bval", ".bvec"):
        (dwi / f"sub-01_dir-PA_dwi{ext}").write_text((dwi / f"sub-01_dwi{ext}").read_text())
    _fails(run("dmri", bids, tmp_path / "out", "--atlas", "Power264"), "sub-01_dwi.nii.gz", "cannot be combined",
           untouched=[tmp_path / "out"])


def test_dataset_under_a_folder_named_like_a_datatype(tmp_path):
    bids = write_tiny_bids(tmp_path / "dwi" / "func" / "anat" / "study")
    participant = find_participant(bids, "01", "fmri")
    assert participant.t1w.name == "sub-01_T1w.nii.gz" and len(participant.bold) == 1


def test_several_t1w_rule_is_logged(bids, caplog):
    anat = bids / "sub-01" / "anat"
    for run_label in ("02", "01"):
        (anat / f"sub-01_run-{run_label}_T1w.nii.gz").write_bytes((anat / "sub-01_T1w.nii.gz").read_bytes())
    (anat / "sub-01_T1w.nii.gz").unlink()
    with caplog.at_level(logging.WARNING, logger="conntool"):
        chosen = find_participant(bids, "01", "fmri").t1w
    assert chosen.name == "sub-01_run-01_T1w.nii.gz"
    assert "2 T1w images; using sub-01_run-01_T1w.nii.gz" in caplog.text
    assert choose_t1w([Path("sub-01_ses-2_T1w.nii.gz"), Path("sub-01_ses-1_run-2_T1w.nii.gz")]).name == \
        "sub-01_ses-1_run-2_T1w.nii.gz"


def test_sessions_and_echo_are_kept_in_output_names(tmp_path):
    bids = write_tiny_bids(tmp_path / "bids")
    func = bids / "sub-01" / "func"
    session = bids / "sub-01" / "ses-2" / "func"
    session.mkdir(parents=True)
    for echo in ("1", "2"):
        for ext in (".nii.gz", ".json"):
            (session / f"sub-01_ses-2_task-rest_echo-{echo}_bold{ext}").write_bytes(
                (func / f"sub-01_task-rest_bold{ext}").read_bytes())
    participant = find_participant(bids, "01", "fmri")
    assert len(participant.bold) == 3
    names = {str(qc_path(Path("/out"), r)) for r in participant.bold}
    assert names == {"/out/sub-01/func/sub-01_task-rest_desc-denoise_qc.json",
                     "/out/sub-01/ses-2/func/sub-01_ses-2_task-rest_echo-1_desc-denoise_qc.json",
                     "/out/sub-01/ses-2/func/sub-01_ses-2_task-rest_echo-2_desc-denoise_qc.json"}
    from conntool.atlases import resolve_atlas
    from conntool.config import load_pipeline

    paths = expected_outputs(participant, [resolve_atlas("Power264")], load_pipeline("fmri-default"), Path("/out"))
    assert len(paths) == len(set(paths))  # no two runs write the same file


def test_error_type_is_the_input_error():
    with pytest.raises(ConntoolInputError, match="not a directory"):
        find_participants(Path("/nonexistent/bids"), None, "fmri")


@pytest.mark.parametrize("key, value, needle", [
    ("low_pass_hz", 0.005, "must be above high_pass_hz"),
    ("high_pass_hz", -0.01, "fmri.filter.high_pass_hz"),
])
def test_preset_out_of_range(bids, tmp_path, key, value, needle):
    import yaml

    from conntool.config import preset_text

    preset = yaml.safe_load(preset_text("fmri-default")[1])
    preset["fmri"]["filter"][key] = value
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(preset))
    _fails(_fmri(bids, tmp_path / "out", "--pipeline", path), needle, untouched=[tmp_path / "out", tmp_path / "work"])


def test_low_pass_above_nyquist_names_the_run(tmp_path):
    bids = write_tiny_bids(tmp_path / "bids", tr=8.0, slice_timing=False)  # Nyquist 0.0625 Hz < 0.08 Hz
    _fails(_fmri(bids, tmp_path / "out"), BOLD.name, "low_pass_hz", untouched=[tmp_path / "out"])
