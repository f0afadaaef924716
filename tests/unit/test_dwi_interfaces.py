"""dMRI interfaces on tiny images: the atlas reaches the DWI grid through the given transforms,
and structural matrices come out keyed by file name for the sink."""
import json

import nibabel as nib
import numpy as np
from dipy.io.stateful_tractogram import Space, StatefulTractogram
from dipy.io.streamline import save_tractogram
from dipy.tracking.streamline import Streamlines

from conntool.interfaces.dmri import StructuralConnectivity, TemplateToDwi, sc_files
from conntool.outputs import read_tsv


def test_atlas_labels_reach_the_dwi_grid_through_rigid_and_warp(tmp_path):
    atlas = np.zeros((30, 30, 30), np.int16)
    atlas[10:15, 10:20, 10:20], atlas[15:20, 10:20, 10:20] = 3, 8
    atlas_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    atlas_affine[:3, 3] = -30.0
    nib.save(nib.Nifti1Image(atlas, atlas_affine), tmp_path / "atlas-Two_dseg.nii.gz")
    dwi_affine = np.diag([-3.0, 3.0, 3.0, 1.0])
    dwi_affine[:3, 3] = [24.0, -24.0, -24.0]
    nib.save(nib.Nifti1Image(np.ones((17, 17, 17), np.uint8), dwi_affine), tmp_path / "mask.nii.gz")
    t1w_to_dwi = np.eye(4)
    t1w_to_dwi[:3, 3] = [4.0, 0.0, 0.0]  # DWI = T1w moved 4 mm right
    np.save(tmp_path / "t1w_to_dwi.npy", t1w_to_dwi)
    t1w_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    t1w_affine[:3, 3] = -50.0
    shift = np.array([0.0, 6.0, 0.0])  # template = T1w moved 6 mm anterior
    t1w_points = np.moveaxis(np.indices((100, 100, 100), dtype=float), 0, -1) - 50.0
    nib.save(nib.Nifti1Image((t1w_points + shift).astype(np.float32), t1w_affine), tmp_path / "coordmap.nii.gz")
    result = TemplateToDwi(reference=str(tmp_path / "mask.nii.gz"), t1w_to_dwi=str(tmp_path / "t1w_to_dwi.npy"),
                           inverse_coordmap=str(tmp_path / "coordmap.nii.gz"),
                           atlas=str(tmp_path / "atlas-Two_dseg.nii.gz")).run(cwd=str(tmp_path))
    labels = np.asarray(nib.load(result.outputs.labels).dataobj)

    ijk = np.moveaxis(np.indices(labels.shape, dtype=float), 0, -1)
    template = ijk @ dwi_affine[:3, :3].T + dwi_affine[:3, 3] - t1w_to_dwi[:3, 3] + shift
    atlas_ijk = np.rint((template - atlas_affine[:3, 3]) / 2.0).astype(int)
    inside = np.all((atlas_ijk >= 0) & (atlas_ijk < 30), axis=-1)
    expected = np.zeros(labels.shape, int)
    expected[inside] = atlas[tuple(atlas_ijk[inside].T)]
    assert {3, 8} <= set(np.unique(labels))
    assert np.mean(labels == expected) > 0.99  # nearest-neighbour ties at voxel borders aside


def test_structural_connectivity_gives_one_file_per_sink_key(tmp_path):
    labels = np.zeros((10, 3, 3), np.int16)
    labels[0], labels[9] = 4, 7
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "atlas-Pair_dseg.nii.gz")
    nib.save(nib.Nifti1Image(np.full(labels.shape, 0.5, np.float32), np.eye(4)), tmp_path / "fa.nii.gz")
    line = np.array([[0.0, 1, 1], [4.5, 1, 1], [9.0, 1, 1]])
    reference = nib.load(tmp_path / "fa.nii.gz")
    save_tractogram(StatefulTractogram(Streamlines([line, line + [0, 0.2, 0]]), reference, Space.RASMM),
                    str(tmp_path / "tracks.trx"), bbox_valid_check=False)
    result = StructuralConnectivity(tractogram=str(tmp_path / "tracks.trx"), reference=str(tmp_path / "fa.nii.gz"),
                                    labels=str(tmp_path / "atlas-Pair_dseg.nii.gz"), fa=str(tmp_path / "fa.nii.gz"),
                                    atlas=str(tmp_path / "atlas-Pair_dseg.nii.gz"), search_radius_mm=0.0,
                                    sidecar={"Pipeline": "test"}).run(cwd=str(tmp_path))
    matrices = result.outputs.matrices
    assert set(matrices) == set(sc_files())
    count = read_tsv(matrices["StreamlineCount.tsv"])
    assert list(count.columns) == ["Pair_4", "Pair_7"]
    assert count.to_numpy().tolist() == [[0, 2], [2, 0]]
    sidecar = json.loads(open(matrices["MeanLength.json"]).read())
    assert sidecar["Measure"] == "MeanLength" and sidecar["Pipeline"] == "test" and sidecar["StreamlineCount"] == 2
