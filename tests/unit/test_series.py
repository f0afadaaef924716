"""Streaming a series in chunks (conntool.series): files as nibabel writes them, and every
streamed fMRI step giving the same numbers whatever the chunk size, equal to the whole-series
computation or to the reference library."""
import nibabel as nib
import numpy as np
import pytest
from nipype.algorithms.confounds import compute_dvars, compute_noise_components

from conntool import series
from conntool.interfaces.fmri import Confounds, Denoise, Smooth
from conntool.interfaces.io import save_image
from conntool.outputs import read_tsv, write_tsv
from conntool.steps import confounds
from conntool.steps.dvars import dvars, streamed_median
from conntool.steps.smooth import smooth_in_mask

TINY_MB = 0.002  # a few volumes or planes per chunk


@pytest.fixture
def bold(tmp_path):
    rng = np.random.default_rng(0)
    slow = np.cumsum(rng.standard_normal((3, 40)), axis=1)
    data = 500 + rng.uniform(0.5, 2, (9, 10, 8, 3)) @ slow + 3 * rng.standard_normal((9, 10, 8, 40))
    affine = np.diag([2.0, 2.0, 2.5, 1.0])
    affine[:3, 3] = [-9, -10, -8]
    brain = np.zeros((9, 10, 8), bool)
    brain[1:8, 1:9, 1:7] = True
    return data.astype(np.float32), affine, brain


@pytest.mark.parametrize("name", ["scaled.nii.gz", "scaled.nii", "scaled_nifti2.nii.gz"])
def test_streamed_volumes_equal_nibabel_gzipped_or_not(tmp_path, bold, name):
    data, affine, _ = bold
    kind = nib.Nifti2Image if "nifti2" in name else nib.Nifti1Image
    img = kind(np.round(data * 7).astype(np.int16), affine)
    img.header.set_slope_inter(0.25, 3.0)  # read as raw * 0.25 + 3, as nibabel applies it
    nib.save(img, tmp_path / name)
    expected = np.asarray(nib.load(tmp_path / name).dataobj, np.float32)
    with series.opened(tmp_path / name) as opened:
        assert type(opened) is kind
    streamed = [(chunk, volumes) for chunk, volumes in series.iter_volumes(tmp_path / name, TINY_MB, start=2)]
    assert len(streamed) > 1 and streamed[0][0].start == 2
    assert np.array_equal(np.concatenate([volumes for _, volumes in streamed], axis=-1), expected[..., 2:])


def test_writer_by_volumes_or_slabs_equals_nibabel(tmp_path, bold):
    data, affine, _ = bold
    reference = nib.load(save_image(data, affine, "ref.nii", str(tmp_path), tr=0.8))
    for how in ("volumes", "slabs"):
        path = tmp_path / f"{how}.nii"
        with series.SeriesWriter(path, data.shape, affine, tr=0.8) as writer:
            if how == "volumes":
                for chunk in series.volume_chunks(data.shape, TINY_MB):
                    writer.write_volumes(chunk, data[..., chunk])
            else:
                for planes in reversed(series.slab_chunks(data.shape, TINY_MB)):  # any order
                    writer.write_slab(planes, data[:, :, planes])
        written = nib.load(path)
        assert np.array_equal(np.asarray(written.dataobj), data)
        assert np.array_equal(written.affine, reference.affine)
        assert written.header.get_zooms() == reference.header.get_zooms()
    assert len(series.volume_chunks(data.shape, TINY_MB)) > 2 and len(series.slab_chunks(data.shape, TINY_MB)) > 2
    assert np.array_equal(series.read_slab(path, slice(2, 5)), data[:, :, 2:5])
    gz = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), gz)
    copy = series.uncompressed(gz, tmp_path / "copy", TINY_MB) if (tmp_path / "copy").mkdir() is None else None
    assert np.array_equal(np.asarray(nib.load(copy).dataobj), data)
    assert np.allclose(series.mean_volume(gz, TINY_MB), data.mean(axis=-1, dtype=np.float64))


def test_streamed_median_and_dvars_equal_numpy_and_nipype(tmp_path, bold):
    data, affine, brain = bold
    voxels = data[brain]
    for values in (voxels, voxels[:-1]):  # odd and even counts
        assert streamed_median(lambda v=values: np.array_split(v, 5)) == np.median(values)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "bold.nii")
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), tmp_path / "brain.nii")
    std, plain, _ = compute_dvars(str(tmp_path / "bold.nii"), str(tmp_path / "brain.nii"))
    ours_std, ours_plain = dvars(lambda: (data[:, :, z:z + 2][brain[:, :, z:z + 2]] for z in range(0, 8, 2)))
    assert np.isnan(ours_std[0]) and np.isnan(ours_plain[0])
    np.testing.assert_allclose(ours_std[1:], std, rtol=1e-5)
    np.testing.assert_allclose(ours_plain[1:], plain, rtol=1e-5)


def test_acompcor_of_gathered_voxels_equals_nipype_on_the_image(bold):
    data, _, brain = bold
    wm, csf = brain.copy(), brain.copy()
    wm[:, :, 4:], csf[:, :, :4] = False, False
    chunks = [data[..., :13], data[..., 13:]]
    means, voxels = confounds.tissue_signals(chunks, {"brain": brain, "wm": wm, "csf": csf})
    assert np.array_equal(means["global_signal"], data[brain].mean(axis=0))
    ours = confounds.acompcor(voxels, 3)
    for tissue, mask, prefix in (("wm", wm, "w"), ("csf", csf, "c")):
        theirs, _, _ = compute_noise_components(data, [nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))], 3,
                                                "polynomial", 1, failure_mode="nan")
        assert np.array_equal(ours[[f"{prefix}_comp_cor_{k:02d}" for k in range(3)]].to_numpy(), theirs)


def _run(interface, **inputs):
    return [interface(**inputs, chunk_mb=mb).run().outputs for mb in (256.0, TINY_MB)]


def test_streamed_steps_do_not_depend_on_the_chunk_size(tmp_path, bold, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, affine, brain = bold
    path = save_image(data, affine, "bold.nii", str(tmp_path), tr=0.8)
    brain_path = save_image(brain.astype(np.uint8), affine, "brain.nii", str(tmp_path))
    smoothed = _run(Smooth, in_file=path, brain_mask=brain_path, fwhm_mm=5.0)
    expected = smooth_in_mask(data, affine, brain, 5.0)
    for out in smoothed:
        assert np.array_equal(np.asarray(nib.load(out.out_file).dataobj), expected)
    wm, csf = brain.copy(), brain.copy()
    wm[:, :, 4:], csf[:, :, :4] = False, False
    masks = {t: save_image(m.astype(np.uint8), affine, f"{t}.nii", str(tmp_path))
             for t, m in (("wm", wm), ("csf", csf))}
    motion = write_tsv(tmp_path / "motion.tsv", read_tsv_like_motion(40))
    tables = [read_tsv(o.confounds) for o in _run(Confounds, in_file=path, motion=str(motion),
                                                   brain_mask=brain_path, wm_mask=masks["wm"],
                                                   csf_mask=masks["csf"], acompcor_components=2)]
    assert tables[0].equals(tables[1])
    cleaned = _run(Denoise, in_file=path, confounds=tables[0].pipe(write_tsv_to, tmp_path / "c.tsv"),
                   brain_mask=brain_path, strategy="24P", fd_mm=None, dvars_std=None, min_segment_volumes=0,
                   min_time_s=0.0, detrend=True, high_pass_hz=0.01, low_pass_hz=0.1, filter_order=2)
    first, second = (np.asarray(nib.load(o.out_file).dataobj) for o in cleaned)
    np.testing.assert_allclose(first, second, rtol=0, atol=1e-6 * np.abs(first).max())


def read_tsv_like_motion(n):
    import pandas as pd

    rng = np.random.default_rng(1)
    table = pd.DataFrame(rng.normal(0, 0.05, (n, 6)), columns=confounds.MOTION)
    table["framewise_displacement"] = np.r_[0, np.abs(np.diff(table.to_numpy(), axis=0)).sum(axis=1)]
    return table


def write_tsv_to(table, path):
    return str(write_tsv(path, table))
