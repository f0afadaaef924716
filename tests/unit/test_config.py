import pytest
import yaml

from conntool.config import config_from_dict, load_pipeline, preset_names, preset_text
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
