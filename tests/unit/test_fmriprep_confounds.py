"""conntool's confound strategies pick the columns nilearn's load_confounds picks from a real
fMRIPrep table (the one nilearn ships), and bad fMRIPrep derivatives stop before any work."""
import shutil
from importlib import resources

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from nilearn.interfaces.fmriprep import load_confounds

from conntool.cli import main
from conntool.outputs import read_tsv
from conntool.steps.confounds import select

NILEARN_DATA = resources.files("nilearn.interfaces.fmriprep") / "data"


@pytest.fixture
def fmriprep_run(tmp_path):
    """A run with nilearn's real fMRIPrep v21 confounds table (its length sets the volumes)."""
    func = tmp_path / "deriv" / "sub-01" / "func"
    func.mkdir(parents=True)
    stem = "sub-01_task-rest"
    for ext in (".tsv", ".json"):
        shutil.copyfile(NILEARN_DATA / f"test-v21_desc-confounds_timeseries{ext}",
                        func / f"{stem}_desc-confounds_timeseries{ext}")
    n_volumes = len(read_tsv(func / f"{stem}_desc-confounds_timeseries.tsv"))
    affine = np.diag([4.0, 4, 4, 1])
    data = np.random.default_rng(0).random((6, 6, 6, n_volumes)).astype(np.float32) + 1
    bold = nib.Nifti1Image(data, affine)
    bold.header.set_zooms((4.0, 4.0, 4.0, 2.0))
    nib.save(bold, func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((6, 6, 6), np.uint8), affine),
             func / f"{stem}_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
    (tmp_path / "deriv" / "dataset_description.json").write_text('{"Name": "fmriprep", "BIDSVersion": "1.9.0"}')
    return func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"


@pytest.mark.parametrize("strategy, nilearn_args", [
    ("6P", {"strategy": ("motion",), "motion": "basic"}),
    ("24P", {"strategy": ("motion",), "motion": "full"}),
    ("36P", {"strategy": ("motion", "wm_csf", "global_signal"), "motion": "full", "wm_csf": "full",
             "global_signal": "full"}),
])
def test_strategies_select_the_columns_nilearn_selects(fmriprep_run, strategy, nilearn_args):
    table = read_tsv(fmriprep_run.parent / "sub-01_task-rest_desc-confounds_timeseries.tsv")
    theirs, _ = load_confounds(str(fmriprep_run), demean=False, **nilearn_args)
    ours = select(table, strategy)
    assert set(ours.columns) == set(theirs.columns)
    # the values agree wherever fMRIPrep wrote one; where it wrote n/a (the first row of a
    # derivative), conntool regresses 0 and nilearn the next row's value
    written = table[theirs.columns].notna().all(axis=1).to_numpy()
    assert (~written).sum() <= 1
    assert np.allclose(ours[theirs.columns].to_numpy()[written], theirs.to_numpy()[written])


def _connectome(deriv, out):
    return CliRunner().invoke(main, ["connectome", str(deriv), str(out), "--atlas", "Power264",
                                     "--work-dir", str(out.parent / "work")])


def test_missing_confounds_table_is_one_line(fmriprep_run, tmp_path):
    (fmriprep_run.parent / "sub-01_task-rest_desc-confounds_timeseries.tsv").unlink()
    result = _connectome(tmp_path / "deriv", tmp_path / "out")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "confounds table" in result.output and fmriprep_run.name in result.output
    assert not (tmp_path / "out").exists()


def test_unknown_space_and_wrong_length_are_one_line(fmriprep_run, tmp_path):
    result = CliRunner().invoke(main, ["connectome", str(tmp_path / "deriv"), str(tmp_path / "out"), "--atlas",
                                       "Power264", "--space", "MNI152NLin6Asym"])
    assert result.exit_code == 2 and "--space MNI152NLin6Asym" in result.output
    table = fmriprep_run.parent / "sub-01_task-rest_desc-confounds_timeseries.tsv"
    table.write_text("\n".join(table.read_text().splitlines()[:-3]) + "\n")
    result = _connectome(tmp_path / "deriv", tmp_path / "out")
    assert result.exit_code == 2 and "rows for" in result.output and not (tmp_path / "out").exists()
