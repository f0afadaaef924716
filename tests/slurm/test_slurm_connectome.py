"""conntool's own command through nipype's SLURM plugin on the one-node test cluster: three
simulated participants give the same bytes as a MultiProc run."""
import json

import pytest

from conntool.simulate_fmriprep import simulate_fmriprep_dataset
from tests.integration.conftest import conntool

pytestmark = pytest.mark.slow


def test_three_participants_through_slurm_equal_multiproc(slurm_cluster, tmp_path):
    deriv = tmp_path / "deriv"
    simulate_fmriprep_dataset(deriv, 3, seed=1, n_volumes=160, resolution_mm=4.0)
    common = ["connectome", deriv, "participant", "--atlas", "Sim100", "--atlas-dir", deriv / "sourcedata" / "simulation"]
    local = conntool(common[0], common[1], tmp_path / "multiproc", *common[2:], "--work-dir", tmp_path / "w1")
    slurm = conntool(common[0], common[1], tmp_path / "slurm", *common[2:], "--work-dir", tmp_path / "w2",
                     "--plugin", "SLURM", "--plugin-args",
                     json.dumps({"sbatch_args": f"-p {slurm_cluster.partition}", "poll_sleep_duration": 1}))
    assert "(3 participants)" in local.stdout and "(3 participants)" in slurm.stdout
    assert list((tmp_path / "w2" / "conntool_connectome").glob("batch/batchscript_*.sh"))  # jobs went through sbatch
    written = sorted(p.relative_to(tmp_path / "multiproc") for p in (tmp_path / "multiproc").rglob("sub-*/**/*.*"))
    assert len([p for p in written if p.name.endswith("_relmat.tsv")]) == 3 * 4
    for path in written:
        assert (tmp_path / "slurm" / path).read_bytes() == (tmp_path / "multiproc" / path).read_bytes(), path
