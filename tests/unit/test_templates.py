"""Templates: nilearn's 2009a always, a TemplateFlow copy of 2009c from ../shared/data/templates,
and the template-pair registration that carries priors and atlases between them."""
from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from conntool.atlases import alignment_map, report_alignment, resolve_atlas
from conntool.steps.dwi_space import values_at_points
from conntool.steps.registration import map_points
from conntool.steps.resample import grid_world_coords
from conntool.templates import NILEARN, NILEARN_SPACE, cross_template_map, find_template, output_template, with_priors
from conntool.workflows.connectome import atlas_provenance

C_SPACE = "MNI152NLin2009cAsym"


@pytest.fixture(scope="module")
def templateflow(shared_data, tmp_path_factory):
    """``$TEMPLATEFLOW_HOME`` = the shared templates, a fresh cache: the pair is registered once
    for the module (about a minute)."""
    saved = {k: os.environ.get(k) for k in ("TEMPLATEFLOW_HOME", "CONNTOOL_CACHE_DIR")}
    os.environ["TEMPLATEFLOW_HOME"] = str(shared_data / "templates")
    os.environ["CONNTOOL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield find_template(C_SPACE)
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def test_without_templateflow_the_output_is_nilearns_and_says_so(monkeypatch, caplog):
    from conntool.cli import _data_spaces
    from conntool.config import load_pipeline

    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    assert find_template(C_SPACE) is None
    assert output_template(C_SPACE) is NILEARN and NILEARN.name == NILEARN_SPACE
    assert find_template(NILEARN_SPACE) is NILEARN
    cfg = load_pipeline("fmri-default")
    assert cfg.fmri.normalization.template == C_SPACE  # what the shipped preset asks for
    with caplog.at_level("WARNING", logger="conntool"):
        assert _data_spaces("fmri", cfg, []) == [NILEARN_SPACE]
    (message,) = [r.getMessage() for r in caplog.records if r.name == "conntool"]
    assert f"template {C_SPACE}: not in $TEMPLATEFLOW_HOME (unset)" in message and "named so" in message


def test_templateflow_copy_found_with_fmriprep_grid(templateflow):
    assert templateflow is not None and templateflow.name == C_SPACE
    grid = templateflow.grid(2.0)
    assert grid.shape == (97, 115, 97) and np.allclose(grid.affine[:3, 3], (-96.5, -132.5, -78.5))
    t1w = templateflow.t1w(2.0)
    assert t1w.shape == grid.shape and np.allclose(t1w.affine, grid.affine) and t1w.get_data_dtype() == np.float32
    assert 0.95 < templateflow.brain(grid).sum() * 8 / 1e6 < 2.0  # brain volume, litres
    three = templateflow.grid(3.0)
    assert np.allclose(np.abs(np.diag(three.affine)[:3]), 3.0)


@pytest.mark.slow  # registers the two templates once (about a minute)
def test_template_pair_registration_is_cached_and_aligns(templateflow):
    path = cross_template_map(NILEARN, templateflow)
    mtime = path.stat().st_mtime_ns
    assert cross_template_map(NILEARN, templateflow).stat().st_mtime_ns == mtime  # not registered again
    reverse = cross_template_map(templateflow, NILEARN)  # the same registration's inverse, cached with it
    assert reverse != path and reverse.stat().st_mtime_ns <= mtime + 10**10
    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["Grid"] == C_SPACE and sidecar["Into"] == NILEARN_SPACE and sidecar["Similarity"] > 0.9
    # nilearn's T1w carried onto 2009c's grid matches 2009c's better than taken as it is
    grid = templateflow.grid(2.0)
    points, inside = grid_world_coords(grid), templateflow.brain(grid)
    a = NILEARN.t1w(2.0)
    c = np.asarray(templateflow.t1w(2.0).dataobj, float)[inside]
    carried = values_at_points(np.asarray(a.dataobj, float), a.affine, map_points(nib.load(path), points))[inside]
    direct = values_at_points(np.asarray(a.dataobj, float), a.affine, points)[inside]
    assert np.corrcoef(carried, c)[0, 1] > np.corrcoef(direct, c)[0, 1] + 0.02


@pytest.mark.slow  # registers the two templates once (about a minute)
def test_priors_carried_into_a_template_without_its_own(templateflow):
    template = with_priors(templateflow)
    assert template.priors_map and with_priors(NILEARN) is NILEARN
    grid = templateflow.grid(2.0)
    priors = template.tissue_probabilities(grid)
    brain = priors["brain"] > 0
    total = priors["gm"] + priors["wm"] + priors["csf"]
    assert np.all(total[brain] <= 1 + 1e-6) and np.all(priors["gm"][~brain] >= 0)
    assert 0.5 < priors["gm"][brain].sum() / priors["wm"][brain].sum() < 3  # cortex and white matter both there


@pytest.mark.slow  # registers the two templates once (about a minute)
def test_atlas_of_another_template_is_brought_across(templateflow, shared_data, tmp_path, caplog):
    """An atlas drawn in 2009c, data in nilearn's 2009a: labels come through the pair's map.
    One drawn in NLin6Asym (not at hand) is used as it is, with a warning and the flag."""
    tian = resolve_atlas("Schaefer400Tian2", shared_data / "atlases")
    atlas_map = alignment_map(tian, NILEARN_SPACE)
    assert atlas_map.endswith("_coordmap.nii.gz")
    moved = resolve_atlas("Schaefer400Tian2", shared_data / "atlases", atlas_map)
    grid = NILEARN.grid(2.0)
    direct, carried = (np.asarray(a.labels_on_grid(grid).dataobj) for a in (tian, moved))
    labelled = (direct > 0) | (carried > 0)
    assert 0.5 < (direct == carried)[labelled].mean() < 0.99  # moved by a few millimetres, not scrambled
    assert set(np.unique(carried)) - {0} <= set(tian.label_ids)
    assert atlas_provenance(moved, NILEARN_SPACE)["AtlasSpaceMismatch"] is False
    assert atlas_provenance(moved, NILEARN_SPACE)["AtlasAlignment"] == os.path.basename(atlas_map)
    assert alignment_map(tian, C_SPACE) == ""  # same space: as it is
    schaefer = resolve_atlas("Schaefer200", shared_data / "atlases")
    assert alignment_map(schaefer, C_SPACE) == ""  # MNI152NLin6Asym is not at hand
    assert atlas_provenance(schaefer, C_SPACE)["AtlasSpaceMismatch"] is True
    with caplog.at_level("INFO", logger="conntool"):
        report_alignment(moved, NILEARN_SPACE)
        report_alignment(schaefer, C_SPACE)
    messages = [r.getMessage() for r in caplog.records if r.name == "conntool"]
    assert any("brought across" in m for m in messages)
    assert any("Schaefer200 is drawn in MNI152NLin6Asym" in m and "used as it is" in m for m in messages)
    # points of a DWI-like grid map too (the dMRI path asks labels at template points)
    points = grid_world_coords(grid)[::4, ::4, ::4]
    assert np.array_equal(moved.labels_at(points), carried[::4, ::4, ::4])


def test_a_template_with_its_own_priors_uses_them(shared_data, tmp_path, monkeypatch):
    """TemplateFlow's full copies ship ``label-GM/WM/CSF_probseg``: no registration then."""
    home = tmp_path / f"tpl-{C_SPACE}"
    home.mkdir()
    for suffix in ("desc-brain_T1w", "desc-brain_mask"):
        (home / f"tpl-{C_SPACE}_res-01_{suffix}.nii.gz").symlink_to(
            shared_data / "templates" / f"tpl-{C_SPACE}_res-01_{suffix}.nii.gz")
    mask = nib.load(shared_data / "templates" / f"tpl-{C_SPACE}_res-01_desc-brain_mask.nii.gz")
    inside = np.asarray(mask.dataobj) > 0
    for tissue, value in (("GM", 0.5), ("WM", 0.3), ("CSF", 0.2)):
        nib.save(nib.Nifti1Image(np.where(inside, value, 0).astype(np.float32), mask.affine),
                 home / f"tpl-{C_SPACE}_res-01_label-{tissue}_probseg.nii.gz")
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("CONNTOOL_CACHE_DIR", str(tmp_path / "cache"))
    template = find_template(C_SPACE)
    assert template.folder == str(home) and with_priors(template) is template  # nothing registered
    grid = template.grid(2.0)
    priors = template.tissue_probabilities(grid)
    core = template.brain(grid) & (priors["gm"] > 0.49)
    assert core.sum() > 1e5 and np.allclose(priors["wm"][core], 0.3, atol=0.01)
    assert not (tmp_path / "cache").exists()
