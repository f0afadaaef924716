"""Output space on the real XA30 volunteer: the shipped default preset asks for
MNI152NLin2009cAsym; with a TemplateFlow copy at hand (../shared/data/templates) the outputs
are in it and named so, and atlases of other templates are brought across or flagged.
(Without one the outputs are in nilearn's 2009a: ``test_fmri_real`` and the simulated tests.)"""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from nilearn import datasets

from conntool.outputs import read_tsv
from tests.integration.conftest import conntool, short_run_preset

pytestmark = pytest.mark.slow
C = "MNI152NLin2009cAsym"
STEM = "sub-01_task-fa_run-1"


def _write_atlas_in_2009a(path):
    """Three labels drawn from nilearn's own 2009a priors (left GM, right GM, WM): an atlas that
    truly is in MNI152NLin2009aSym."""
    gm, wm = datasets.load_mni152_gm_template(resolution=2), datasets.load_mni152_wm_template(resolution=2)
    g, w = np.asarray(gm.dataobj), np.asarray(wm.dataobj)
    x = nib.affines.apply_affine(gm.affine, np.moveaxis(np.indices(g.shape), 0, -1))[..., 0]
    labels = np.zeros(g.shape, np.int16)
    labels[(g > 0.5) & (x < 0)], labels[(g > 0.5) & (x >= 0)], labels[w > 0.5] = 1, 2, 3
    nib.save(nib.Nifti1Image(labels, gm.affine), path)
    return path


@pytest.fixture(scope="module")
def runs(shared_data, tmp_path_factory):
    """The shipped default, then the short-run preset (its matrices carry the sidecars), both
    with ``$TEMPLATEFLOW_HOME`` set and one work folder and template-pair cache."""
    root = tmp_path_factory.mktemp("spaces")
    env = {"TEMPLATEFLOW_HOME": str(shared_data / "templates"), "CONNTOOL_CACHE_DIR": str(root / "cache")}
    atlas = _write_atlas_in_2009a(root / "atlas-Tissue3_space-MNI152NLin2009aSym_res-02_dseg.nii.gz")

    def run(out, *pipeline):
        return conntool("fmri", shared_data / "bids-xa30", root / out, "--participant-label", "01",
                        "--atlas", "Schaefer400Tian2", "--atlas", "Schaefer200", "--atlas", atlas,
                        "--atlas-dir", shared_data / "atlases", "--work-dir", root / "work", "--nprocs", "2",
                        *pipeline, env=env)

    return root, run("out"), run("out-short", "--pipeline", short_run_preset(root / "short.yaml"))


def test_default_preset_writes_2009c_outputs(runs):
    root, default, short = runs
    func = root / "out" / "sub-01" / "func"
    boldref = nib.load(func / f"{STEM}_space-{C}_boldref.nii.gz")
    assert np.allclose(boldref.header.get_zooms()[:3], 3.0)
    assert np.allclose(boldref.affine[:3, 3], (-96, -132, -78))  # 2009c's field of view, not nilearn's (-98, -134, -72)
    assert (func / f"{STEM}_space-{C}_desc-brain_mask.nii.gz").is_file()
    assert (func / f"{STEM}_space-{C}_seg-Tissue3_stat-coverage_bold.tsv").is_file()
    assert not list(func.glob("*MNI152NLin2009aSym*"))
    probseg = json.loads((root / "out" / "sub-01" / "anat" / "sub-01_label-GM_probseg.json").read_text())
    assert probseg["NormalizationTemplate"] == C
    assert "not in $TEMPLATEFLOW_HOME" not in default.stderr
    # the template pair is registered once, by the first run, and cached in both directions
    assert "registering MNI152NLin2009aSym to MNI152NLin2009cAsym" in default.stderr
    assert "registering MNI152" not in short.stderr
    assert len(list((root / "cache").glob("*_coordmap.nii.gz"))) == 2
    assert "atlas Tissue3 is drawn in MNI152NLin2009aSym" in default.stderr and "brought across" in default.stderr
    warning = [line for line in default.stderr.splitlines() if "Schaefer200 is drawn in MNI152NLin6Asym" in line]
    assert len(warning) == 1 and "used as it is" in warning[0]
    assert "Schaefer400Tian2 is drawn" not in default.stderr  # its own space


def test_sidecars_record_space_and_alignment(runs):
    root, _, _ = runs
    func = root / "out-short" / "sub-01" / "func"

    def sidecar(atlas):
        return json.loads((func / f"{STEM}_space-{C}_seg-{atlas}_meas-PearsonCorrelation_relmat.json").read_text())

    tian, schaefer, tissue = sidecar("Schaefer400Tian2"), sidecar("Schaefer200"), sidecar("Tissue3")
    assert {tian["Space"], schaefer["Space"], tissue["Space"]} == {C}
    assert tian["AtlasSpaceMismatch"] is False and tian["AtlasAlignment"] is None
    assert schaefer["AtlasSpaceMismatch"] is True and schaefer["AtlasAlignment"] is None
    assert tissue["AtlasSpaceMismatch"] is False
    assert tissue["AtlasAlignment"].startswith(f"from-{C}_to-MNI152NLin2009aSym_")
    matrix = read_tsv(func / f"{STEM}_space-{C}_seg-Tissue3_meas-PearsonCorrelation_relmat.tsv").to_numpy()
    assert matrix.shape == (3, 3) and np.isfinite(matrix).all()
