import pytest
import yaml

from conntool import config
from conntool.config import (check_against_tr, config_from_dict, confound_strategy_names, load_confound_strategy,
                             load_pipeline, preset_names, preset_text)
from conntool.errors import ConntoolInputError

REQUIRED = {"fmri-default", "fmri-24p", "fmri-36p-scrub", "fmri-acompcor", "dmri-dti-det", "dmri-csd-prob"}


def test_required_presets_ship_and_load():
    assert REQUIRED <= set(preset_names())
    for name in preset_names():
        cfg = load_pipeline(name)
        assert cfg.name == name
        assert cfg.fmri is not None or cfg.dmri is not None


def test_scrub_preset_censors():
    cfg = load_pipeline("fmri-36p-scrub")
    assert cfg.fmri.censoring.fd_mm == 0.5 and cfg.fmri.censoring.min_time_s == 240
    assert cfg.fmri.confounds.strategy == "36P"


def _default_dict():
    return yaml.safe_load(preset_text("fmri-default")[1])


def test_unknown_key_is_an_error():
    data = _default_dict()
    data["fmri"]["smoothing"]["fwhm"] = 4
    with pytest.raises(ConntoolInputError, match="unknown key.*fwhm"):
        config_from_dict(data, "x.yaml")


def test_missing_key_is_an_error():
    data = _default_dict()
    del data["fmri"]["filter"]["low_pass_hz"]
    with pytest.raises(ConntoolInputError, match="missing key 'low_pass_hz'"):
        config_from_dict(data, "x.yaml")


def test_bad_choice_and_type_are_errors():
    data = _default_dict()
    data["fmri"]["confounds"]["strategy"] = "99P"
    with pytest.raises(ConntoolInputError, match="99P"):
        config_from_dict(data, "x.yaml")
    data = _default_dict()
    data["fmri"]["smoothing"]["fwhm_mm"] = "six"
    with pytest.raises(ConntoolInputError, match="fwhm_mm"):
        config_from_dict(data, "x.yaml")


def test_config_is_frozen_and_hash_tracks_content():
    a, b = load_pipeline("fmri-default"), load_pipeline("fmri-default")
    assert a.digest() == b.digest()
    assert a.digest() != load_pipeline("fmri-24p").digest()
    with pytest.raises(Exception):
        a.seed = 3


def test_preset_from_path(tmp_path):
    path = tmp_path / "mine.yaml"
    data = _default_dict()
    data["name"] = "mine"
    path.write_text(yaml.safe_dump(data))
    assert load_pipeline(str(path)).name == "mine"
    with pytest.raises(ConntoolInputError, match="unknown preset"):
        load_pipeline("no-such-preset")


def test_new_preset_keys_keep_the_former_constants():
    for name in ("fmri-default", "fmri-24p", "fmri-36p-scrub", "fmri-acompcor"):
        f = load_pipeline(name).fmri
        assert (f.tissue_masks.threshold, f.tissue_masks.erode_voxels, f.tissue_masks.min_voxels_to_erode) == (
            0.9, 1, 500)
        assert f.normalization.template_resolution_mm == 2 and f.filter.order == 5
    assert load_pipeline("fmri-36p-scrub").fmri.censoring.min_segment_volumes == 5
    assert load_pipeline("fmri-default").fmri.censoring.min_segment_volumes == 0


def test_range_error_is_one_line_naming_source_and_key():
    data = _default_dict()
    data["fmri"]["filter"]["low_pass_hz"] = 0.005
    with pytest.raises(ConntoolInputError) as err:
        config_from_dict(data, "fmri-default")
    assert str(err.value) == "fmri-default: fmri.filter.low_pass_hz (0.005) must be above high_pass_hz (0.01)"


@pytest.mark.parametrize("path,value", [
    ("fmri.filter.high_pass_hz", 0), ("fmri.filter.low_pass_hz", -0.1), ("fmri.filter.order", 0),
    ("fmri.smoothing.fwhm_mm", -1), ("fmri.censoring.fd_mm", 0), ("fmri.censoring.dvars_std", -1.5),
    ("fmri.censoring.min_time_s", -1), ("fmri.censoring.min_segment_volumes", -1),
    ("fmri.parcellation.min_coverage", 0), ("fmri.parcellation.min_coverage", 1.5),
    ("fmri.confounds.acompcor_components", 0), ("fmri.normalization.resolution_mm", 0),
    ("fmri.normalization.template_resolution_mm", -2), ("fmri.tissue_masks.threshold", 1),
    ("fmri.tissue_masks.erode_voxels", -1), ("fmri.tissue_masks.min_voxels_to_erode", -1),
    ("fmri.dummy_scans", -1), ("fmri.dummy_scans", "some"), ("fmri.motion_separation_mm", -1.0),
    ("fmri.coregistration_sampling", 0), ("fmri.coregistration_sampling", 1.5), ("fmri.connectivity.measures", []),
    ("fmri.connectivity.measures", ["pearson", "pearson"]), ("fmri.normalization.backend", "fsl"),
    ("fmri.normalization.template", "MNI305"), ("fmri.normalization.affine_sampling", 0),
    ("fmri.normalization.affine_sampling", 1.5),
    ("fmri.segmentation.method", "fast"), ("fmri.segmentation.prior_weight", 1.5),
    ("fmri.segmentation.mrf_smoothing", -0.1), ("fmri.segmentation.iterations", 0),
    ("fmri.distortion_correction.smoothing_fwhm_mm", -1),
    ("seed", -1),
])
def test_out_of_range_fmri_values_are_errors(path, value):
    data = _default_dict()
    *parents, key = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[key] = value
    with pytest.raises(ConntoolInputError, match=rf"^mine\.yaml: {path}\b") as err:
        config_from_dict(data, "mine.yaml")
    assert "\n" not in str(err.value)


def test_null_limits_and_one_sided_filters_are_valid():
    data = _default_dict()
    data["fmri"]["filter"]["high_pass_hz"] = None
    data["fmri"]["censoring"].update(fd_mm=0.3, dvars_std=None)
    assert config_from_dict(data, "x.yaml").fmri.filter.high_pass_hz is None


@pytest.mark.parametrize("key,value", [
    ("fa_threshold", 0), ("fa_threshold", 1), ("seeds_per_voxel", 0), ("step_size_mm", 0), ("max_angle_deg", 0),
    ("max_angle_deg", 91), ("min_length_mm", -1), ("max_length_mm", 20), ("search_radius_mm", -1),
])
def test_out_of_range_dmri_values_are_errors(key, value):
    data = yaml.safe_load(preset_text("dmri-csd-prob")[1])
    data["dmri"][key] = value
    with pytest.raises(ConntoolInputError, match=rf"^dmri-csd-prob: dmri\.{key} \({value}\) must be"):
        config_from_dict(data, "dmri-csd-prob")


def test_filter_checked_against_each_runs_nyquist():
    cfg = load_pipeline("fmri-default")  # low-pass 0.08 Hz
    check_against_tr(cfg, 2.0, "sub-01_bold.nii.gz")  # Nyquist 0.25 Hz
    with pytest.raises(ConntoolInputError) as err:
        check_against_tr(cfg, 7.0, "sub-01_task-rest_bold.nii.gz")  # Nyquist 0.0714 Hz
    assert str(err.value).startswith("sub-01_task-rest_bold.nii.gz: fmri-default fmri.filter.low_pass_hz (0.08) "
                                     "must be below the Nyquist frequency")
    check_against_tr(load_pipeline("dmri-dti-det"), 7.0, "x")  # no fmri section: nothing to check


def test_confound_strategies_ship_validated_and_unknown_ones_name_the_known():
    assert confound_strategy_names() == ["24P", "36P", "6P", "9P", "aCompCor"]
    for name in confound_strategy_names():
        assert load_confound_strategy(name).name == name
    with pytest.raises(ConntoolInputError, match="99P.*known: 24P, 36P, 6P, 9P, aCompCor"):
        load_confound_strategy("99P")
    data = _default_dict()
    data["fmri"]["confounds"]["strategy"] = "99P"
    with pytest.raises(ConntoolInputError, match="^x.yaml: fmri.confounds.strategy: '99P' is not one of 24P"):
        config_from_dict(data, "x.yaml")


@pytest.mark.parametrize("text,message", [
    ("name: bad\ndescription: d\ncolumns: [trans_x]\nextra: 1\n", "unknown key"),
    ("name: other\ndescription: d\ncolumns: [trans_x]\n", "differs from the file name"),
    ("name: bad\ndescription: d\ncolumns: []\n", "non-empty"),
    ("name: bad\ndescription: d\ncolumns: ['^w_comp_cor_(']\n", "not a regular expression"),
])
def test_broken_strategy_files_are_rejected(tmp_path, monkeypatch, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    monkeypatch.setattr(config, "_confounds_folder", lambda: tmp_path)
    load_confound_strategy.cache_clear()
    try:
        with pytest.raises(ConntoolInputError, match=message):
            load_confound_strategy("bad")
    finally:
        load_confound_strategy.cache_clear()
