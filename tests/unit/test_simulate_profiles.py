"""Size profiles of the simulator: today's sizes through the same simulator, not a copy of it."""
import dataclasses

import nibabel as nib
import numpy as np

from conntool.simulate import PROFILES, SimulationSettings, simulate_dataset


def test_profiles_have_the_sizes_of_their_studies():
    assert PROFILES["small"] == SimulationSettings()
    hcp = PROFILES["hcp"]
    assert (hcp.t1w_voxel_mm, hcp.bold_shape, hcp.bold_voxel_mm, hcp.n_volumes, hcp.tr) == (
        1.0, (96, 114, 96), 2.0, 600, 0.8)
    assert hcp.dwi_voxel_mm == 2.0 and hcp.dwi_n_b0 + sum(n for _, n in hcp.dwi_shells) == 96
    assert [b for b, _ in hcp.dwi_shells] == [1000.0, 2000.0, 3000.0]
    abcd = PROFILES["abcd"]
    assert (abcd.bold_voxel_mm, abcd.tr, abcd.t1w_voxel_mm, abcd.dwi_voxel_mm) == (2.4, 0.8, 1.0, 1.7)


def test_a_fine_t1w_and_multi_shell_dwi_are_written(tmp_path):
    """The hcp profile's kinds of image (1 mm T1w, three shells), on a small BOLD and DWI grid."""
    settings = dataclasses.replace(PROFILES["hcp"], n_volumes=24, bold_shape=(12, 14, 12), bold_voxel_mm=12.0,
                                   dwi_shape=(10, 12, 10), dwi_voxel_mm=14.0)
    bids = simulate_dataset(tmp_path / "bids", 1, seed=0, modalities=("dmri", "fmri"), settings=settings)
    t1w = nib.load(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    assert t1w.header.get_zooms() == (1.0, 1.0, 1.0) and t1w.shape == (197, 233, 189)
    bold = nib.load(bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz")
    assert bold.shape == (12, 14, 12, 24) and np.isclose(bold.header.get_zooms()[3], 0.8)
    bvals = np.loadtxt(bids / "sub-01" / "dwi" / "sub-01_dwi.bval")
    assert nib.load(bids / "sub-01" / "dwi" / "sub-01_dwi.nii.gz").shape == (10, 12, 10, 96)
    assert np.array_equal(np.unique(bvals), [0, 1000, 2000, 3000]) and (bvals == 0).sum() == 6
    assert (bids / "derivatives" / "simulation" / "sub-01" / "sub-01_task-rest_desc-truth_relmat.tsv").exists()
