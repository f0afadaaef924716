"""CLI: listing commands, and bad input → one line, exit 2, nothing written."""
import gzip

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from conntool.cli import main
from tests.conftest import write_tiny_bids


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_pipelines_and_atlas_listing():
    listed = run("pipelines", "list")
    assert listed.exit_code == 0 and "fmri-36p-scrub" in listed.output
    shown = run("pipelines", "show", "fmri-36p-scrub")
    assert "fd_mm: 0.5" in shown.output
    assert "Power264" in run("atlas", "list").output
    shown = run("atlas", "show", "Dosenbach160")
    assert shown.exit_code == 0 and "160 nodes" in shown.output


def _fmri(bids, out, *extra):
    return run("fmri", bids, out, "--atlas", "Power264", *extra)


def _assert_user_error(result, *needles, out=None):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("conntool: error:"), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]
    if out is not None:
        assert not out.exists()


def test_not_a_bids_folder(tmp_path):
    (tmp_path / "plain").mkdir()
    _assert_user_error(_fmri(tmp_path / "plain", tmp_path / "out"), "not a BIDS dataset", out=tmp_path / "out")


def test_missing_t1w(tmp_path):
    bids = write_tiny_bids(tmp_path / "bids", t1w=False)
    _assert_user_error(_fmri(bids, tmp_path / "out"), "T1w", out=tmp_path / "out")


def test_3d_bold(tmp_path):
    bids = write_tiny_bids(tmp_path / "bids", bold_shape=(8, 8, 6))
    _assert_user_error(_fmri(bids, tmp_path / "out"), "sub-01_task-rest_bold.nii.gz", "3D image, expected 4D",
                       out=tmp_path / "out")


def test_truncated_bold(tmp_path):
    bids = write_tiny_bids(tmp_path / "bids")
    bold = bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz"
    raw = gzip.decompress(bold.read_bytes())
    bold.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    _assert_user_error(_fmri(bids, tmp_path / "out"), "sub-01_task-rest_bold.nii.gz", "truncated",
                       out=tmp_path / "out")


def test_missing_repetition_time(tmp_path):
    bids = write_tiny_bids(tmp_path / "bids", tr=None)
    _assert_user_error(_fmri(bids, tmp_path / "out"), "RepetitionTime", out=tmp_path / "out")


def test_atlas_without_overlap(tmp_path):
    bids = write_tiny_bids(tmp_path / "bids")
    affine = np.diag([2.0, 2, 2, 1])
    affine[:3, 3] = 800
    atlas = tmp_path / "atlas-Far_dseg.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), affine), atlas)
    result = run("fmri", bids, tmp_path / "out", "--atlas", atlas)
    _assert_user_error(result, "atlas-Far_dseg.nii.gz", "no overlap", out=tmp_path / "out")


def test_unknown_participant_and_pipeline(tmp_path):
    bids = write_tiny_bids(tmp_path / "bids")
    _assert_user_error(_fmri(bids, tmp_path / "out", "--participant-label", "07"), "sub-07")
    _assert_user_error(_fmri(bids, tmp_path / "out", "--pipeline", "nope"), "unknown preset")
    _assert_user_error(_fmri(bids, tmp_path / "out", "--plugin-args", "{bad"), "--plugin-args")


def test_existing_results_need_overwrite(tmp_path):
    bids = write_tiny_bids(tmp_path / "bids")
    out = tmp_path / "out" / "sub-01" / "func"
    out.mkdir(parents=True)
    existing = out / "sub-01_task-rest_desc-confounds_timeseries.tsv"
    existing.write_text("keep me")
    _assert_user_error(_fmri(bids, tmp_path / "out"), "--overwrite")
    assert existing.read_text() == "keep me"


def test_simulate_rejects_bad_modalities(tmp_path):
    _assert_user_error(run("simulate", tmp_path / "sim", "--modalities", "pet"), "--modalities",
                       out=tmp_path / "sim")


@pytest.mark.parametrize("args", [["--help"], ["fmri", "--help"], ["simulate", "--help"]])
def test_help(args):
    assert run(*args).exit_code == 0


def test_dwi_gradient_mismatch(tmp_path):
    bids = write_tiny_bids(tmp_path / "bids")
    dwi = bids / "sub-01" / "dwi"
    dwi.mkdir()
    nib.save(nib.Nifti1Image(np.ones((6, 6, 6, 5), np.float32), np.eye(4)), dwi / "sub-01_dwi.nii.gz")
    (dwi / "sub-01_dwi.bval").write_text("0 1000 1000 1000\n")
    (dwi / "sub-01_dwi.bvec").write_text("0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    result = run("dmri", bids, tmp_path / "out", "--atlas", "Power264")
    _assert_user_error(result, "sub-01_dwi.nii.gz", "5 volumes but 4 b-values", out=tmp_path / "out")
