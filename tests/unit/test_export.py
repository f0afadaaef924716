"""conntool export: every format read back the way its consumer reads it, the manifest, the
--missing policies, tangent space, and bad input (one line, exit 2, nothing written)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from nilearn.connectome import ConnectivityMeasure
from scipy.io import loadmat
from sklearn.preprocessing import normalize

from conntool.cli import main
from conntool.export import FORMATS, graph_edges, is_metamatching_layout, lower_triangle
from conntool.outputs import bids_name, read_tsv, subject_folder, write_json, write_tsv

NODES = ["LH_Vis_1", "LH_Vis_2", "LH_SomMot_1", "RH_Vis_1", "RH_SomMot_1"]
SPACE = "MNI152NLin2009aSym"
#: export order of the runs that have a usable Pearson matrix and no missing node
USABLE = ["sub-01_task-rest_run-2", "sub-01_task-rest_run-10", "sub-04_task-rest_run-1",
          "sub-06_ses-1_task-rest_run-1"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _write_run(out, ents, series, qc_excluded=False, relmat=True):
    """One functional run: QC JSON, mean time series (if any), Pearson (+ partial, Fisher z) relmats."""
    folder = subject_folder(out, ents, "func")
    qc = {"Excluded": qc_excluded, "VolumesKept": 0 if qc_excluded else 40}
    if qc_excluded:
        qc["Reason"] = "only 40 s of data left after censoring (minimum 120 s)"
    write_json(folder / bids_name({**ents, "desc": "denoise"}, "qc", ".json"), qc)
    seg = {**ents, "space": SPACE, "seg": "Toy"}
    if series is not None:
        write_tsv(folder / bids_name({**seg, "stat": "mean"}, "timeseries", ".tsv"),
                  pd.DataFrame(series, columns=NODES))
    if not relmat:
        return
    have = np.isfinite(series).all(axis=0)
    pearson = np.full((len(NODES), len(NODES)), np.nan)
    pearson[np.ix_(have, have)] = np.corrcoef(series[:, have].T)
    for meas, desc, matrix in [("PearsonCorrelation", None, pearson), ("PartialCorrelation", None, -pearson / 2),
                               ("PearsonCorrelation", "fisherz", np.arctanh(pearson * 0.9))]:
        name = bids_name({**seg, "meas": meas, "desc": desc}, "relmat", ".tsv")
        write_tsv(folder / name, pd.DataFrame(matrix, columns=NODES))
        write_json(folder / name.replace(".tsv", ".json"),
                   {"Measure": meas, "NodeCount": len(NODES), "Atlas": "Toy",
                    "NodesWithoutData": [n for n, h in zip(NODES, have) if not h]})


def _write_dwi(out, sub, count, outside=()):
    folder = subject_folder(out, {"sub": sub}, "dwi")
    ents = {"sub": sub, "space": "dwi", "seg": "Toy"}
    length = np.where(count > 0, 10 + count, np.nan)
    for meas, matrix in [("StreamlineCount", count), ("MeanLength", length)]:
        name = bids_name({**ents, "meas": meas}, "relmat", ".tsv")
        write_tsv(folder / name, pd.DataFrame(matrix, columns=NODES))
        write_json(folder / name.replace(".tsv", ".json"), {"Measure": meas, "NodeCount": 5,
                                                             "NodesNotInDwiFieldOfView": list(outside)})


@pytest.fixture
def cohort(tmp_path):
    """conntool outputs of 6 participants (Toy atlas, 5 nodes) and a participants.tsv beside them.

    sub-01 run-2 and run-10, sub-04, sub-06 (ses-1) are usable; sub-02 has no data for node
    LH_SomMot_1; denoising excluded sub-03; sub-05's connectivity failed (QC, no matrix).
    participants.tsv lacks sub-06, has sub-07 (no outputs), and no age for sub-04. Structural:
    sub-01, and sub-02 with RH_SomMot_1 outside the DWI field of view; sub-04 has only its dseg.
    """
    out, rng = tmp_path / "out", np.random.default_rng(0)
    write_json(out / "dataset_description.json", {"Name": "conntool derivatives", "DatasetType": "derivative"})
    series = {key: rng.standard_normal((40, 5)) + rng.standard_normal((40, 1)) for key in range(6)}
    series[2][:, 2] = np.nan
    _write_run(out, {"sub": "01", "task": "rest", "run": "2"}, series[0])
    _write_run(out, {"sub": "01", "task": "rest", "run": "10"}, series[1])
    _write_run(out, {"sub": "02", "task": "rest", "run": "1"}, series[2])
    _write_run(out, {"sub": "03", "task": "rest", "run": "1"}, series[3], qc_excluded=True, relmat=False)
    _write_run(out, {"sub": "04", "task": "rest", "run": "1"}, series[4])
    _write_run(out, {"sub": "05", "task": "rest", "run": "1"}, None, relmat=False)
    _write_run(out, {"sub": "06", "ses": "1", "task": "rest", "run": "1"}, series[5])
    count = rng.integers(0, 4, (5, 5)).astype(float)
    count = np.triu(count, 1) + np.triu(count, 1).T
    _write_dwi(out, "01", count)
    count2 = count + 1 - np.eye(5)
    count2[4, :] = count2[:, 4] = 0
    _write_dwi(out, "02", count2, outside=["RH_SomMot_1"])
    dseg = subject_folder(out, {"sub": "04"}, "dwi") / "sub-04_space-dwi_seg-Toy_dseg.nii.gz"
    dseg.parent.mkdir(parents=True)
    dseg.write_bytes(b"")
    tsv = tmp_path / "participants.tsv"
    tsv.write_text("participant_id\tdiagnosis\tage\n" + "\n".join(
        ["sub-01\tpatient\t30", "sub-02\tcontrol\t25", "sub-03\tpatient\t51", "sub-04\tcontrol\tn/a",
         "sub-05\tpatient\t33", "sub-07\tcontrol\t28"]) + "\n")
    return {"out": out, "tsv": tsv, "dest": tmp_path / "export"}


def _relmat(out, run_id, meas="PearsonCorrelation"):
    ents = dict(part.split("-", 1) for part in run_id.split("_"))
    folder = subject_folder(out, ents, "dwi" if meas in ("StreamlineCount", "MeanLength") else "func")
    space = "dwi" if folder.name == "dwi" else SPACE
    return read_tsv(folder / bids_name({**ents, "space": space, "seg": "Toy", "meas": meas}, "relmat", ".tsv")
                    ).to_numpy(float)


def _export(c, fmt, name, *extra, measure="PearsonCorrelation"):
    dest = c["dest"] / name
    result = run("export", c["out"], dest, "--format", fmt, "--atlas", "Toy", "--measure", measure, *extra)
    assert result.exit_code == 0, result.output
    return dest, result


def _cells(array):
    return [str(cell[0]) for cell in array.ravel()]


def _manifest(dest):
    return (pd.read_csv(dest.with_name(f"{dest.stem}_manifest.tsv"), sep="\t", na_values="n/a", keep_default_na=False),
            json.loads(dest.with_name(f"{dest.stem}_manifest.json").read_text()))


def test_braingb_mat_loads_as_braingb_does(cohort):
    dest, result = _export(cohort, "braingb", "HIV.mat", "--label-column", "diagnosis",
                           "--participants-tsv", cohort["tsv"])
    m = loadmat(dest)
    assert m["fmri"].shape == (5, 5, 3) and "dti" not in m
    adj = torch.Tensor(m["fmri"]).transpose(0, 2)  # BrainGB's BrainDataset.process, view=1
    y = torch.Tensor(m["label"]).long().flatten()
    y[y == -1] = 0
    ids = _cells(m["run_id"])
    assert ids == USABLE[:3]  # sub-06 is not in participants.tsv
    assert _cells(m["subject"]) == ["sub-01", "sub-01", "sub-04"]
    assert _cells(m["node_names"]) == NODES
    for i, run_id in enumerate(ids):
        assert np.array_equal(m["fmri"][:, :, i], _relmat(cohort["out"], run_id))
        np.testing.assert_allclose(adj[i].numpy(), _relmat(cohort["out"], run_id).T, rtol=1e-6)
        index = (torch.isnan(adj[i]) == 0).nonzero(as_tuple=True)  # BrainGB's dense_to_ind_val: 25 edges
        assert len(index[0]) == 25
    assert y.tolist() == [1, 1, 0]
    assert _manifest(dest)[1]["LabelCoding"] == {"diagnosis": {"control": 0, "patient": 1}}
    assert "<root>/HIV.mat or <root>/BP.mat" in result.output


def test_braingb_codes_numeric_classes_from_zero(cohort):
    (cohort["out"] / "participants.tsv").write_text(
        "participant_id\tdx_group\n" + "".join(f"sub-0{i}\t{1 + i % 2}\n" for i in range(1, 7)))
    dest, _ = _export(cohort, "braingb", "HIV.mat", "--label-column", "dx_group")  # found in OUTPUT_DIR
    assert loadmat(dest)["label"].ravel().tolist() == [1, 1, 0, 0]  # dx_group 2, 2, 1, 1
    assert _manifest(dest)[1]["LabelCoding"] == {"dx_group": {"1": 0, "2": 1}}
    ages, result = _export(cohort, "braingb", "BP.mat", "--label-column", "age", "--participants-tsv", cohort["tsv"])
    assert loadmat(ages)["label"].ravel().tolist() == [0, 0]  # two runs of sub-01, age 30: class 0 of 1
    assert "classes" not in result.output
    (cohort["out"] / "participants.tsv").write_text(
        "participant_id\tage\n" + "".join(f"sub-0{i}\t{20 + i}\n" for i in range(1, 7)))
    assert "age: 3 classes" in _export(cohort, "braingb", "ABIDE.mat", "--label-column", "age")[1].output


def test_braingb_npy_loads_as_braingb_abide_does(cohort):
    dest, _ = _export(cohort, "braingb-npy", "abide.npy", "--label-column", "diagnosis",
                      "--participants-tsv", cohort["tsv"])
    data = np.load(dest, allow_pickle=True).item()  # BrainGB's load_data_abide
    assert data["corr"].shape == (3, 5, 5)
    assert data["label"].tolist() == [1, 1, 0] and data["run_id"] == USABLE[:3]
    for matrix, run_id in zip(data["corr"], data["run_id"]):
        assert np.array_equal(matrix, _relmat(cohort["out"], run_id))


def test_metamatching_features_and_v11_scaling(cohort):
    dest, result = _export(cohort, "metamatching", "fc.npz", "--label-column", "diagnosis", "--label-column", "age",
                           "--participants-tsv", cohort["tsv"])
    npz = np.load(dest)  # meta-matching's own example data loads this way: no pickle
    assert npz["x"].shape == (2, 10) and npz["y"].shape == (2, 2)
    assert npz["run_id"].tolist() == USABLE[:2]  # sub-04's age is n/a
    assert npz["y"].tolist() == [[0, 30], [0, 30]]  # only patients left: one class, coded 0
    for x, run_id in zip(npz["x"], npz["run_id"]):
        fc = _relmat(cohort["out"], run_id)
        assert np.array_equal(x, fc[np.tril(np.ones(5), k=-1) == 1])  # meta-matching's flattening
    val = npz["x"] - np.nanmean(npz["x"], axis=1, keepdims=True)  # CBIG_model_pytorch.demean_norm
    np.testing.assert_allclose(npz["x_demean_norm"], normalize(val, axis=1, norm="l2"))
    features = read_tsv(dest.with_name("fc_features.tsv"))
    assert features[["row", "column"]].values.tolist() == [[1, 0], [2, 0], [2, 1], [3, 0], [3, 1], [3, 2],
                                                         [4, 0], [4, 1], [4, 2], [4, 3]]
    assert features["node_row"][2] == NODES[2] and features["node_column"][2] == NODES[1]
    assert "not the 419-node layout" in result.output
    manifest = _manifest(dest)[1]
    assert manifest["MetaMatchingLayout"] is False and "419-node" in manifest["Notes"][0]


def test_metamatching_vector_of_a_known_4x4_matrix(tmp_path):
    out = tmp_path / "out"
    lower = np.array([[0, 0, 0, 0], [0.1, 0, 0, 0], [0.2, 0.4, 0, 0], [0.3, 0.5, 0.6, 0]])
    matrix = np.eye(4) + lower - lower.T  # the upper triangle differs, so reading it would show
    folder = subject_folder(out, {"sub": "01"}, "func")
    write_tsv(folder / f"sub-01_task-rest_space-{SPACE}_seg-Four_meas-PearsonCorrelation_relmat.tsv",
              pd.DataFrame(matrix, columns=list("ABCD")))
    dest = tmp_path / "mm.npz"
    result = run("export", out, dest, "--format", "metamatching", "--atlas", "Four", "--measure", "PearsonCorrelation")
    assert result.exit_code == 0, result.output
    x = np.load(dest)["x"]
    assert x.tolist() == [[0.1, 0.2, 0.4, 0.3, 0.5, 0.6]]  # not MATLAB's column order 0.1, 0.2, 0.3, 0.4, ...
    centred = np.array([-0.25, -0.15, 0.05, -0.05, 0.15, 0.25])
    np.testing.assert_allclose(np.load(dest)["x_demean_norm"][0], centred / np.sqrt(0.175))
    assert lower_triangle(matrix[None]).tolist() == x.tolist()


def test_metamatching_layout_check():
    cortex = [f"17Networks_{h}_Net_{i}" for h in ("LH", "RH") for i in range(200)]
    aseg = ["Left-Cerebellum-Cortex", "Left-Thalamus-Proper", "Left-Caudate", "Left-Putamen", "Left-Pallidum",
            "Brain-Stem", "Left-Hippocampus", "Left-Amygdala", "Left-Accumbens-area", "Left-VentralDC",
            "Right-Cerebellum-Cortex", "Right-Thalamus-Proper", "Right-Caudate", "Right-Putamen", "Right-Pallidum",
            "Right-Hippocampus", "Right-Amygdala", "Right-Accumbens-area", "Right-VentralDC"]
    assert is_metamatching_layout(cortex + aseg)
    assert not is_metamatching_layout(cortex + aseg[1:] + aseg[:1])
    assert not is_metamatching_layout([n.replace("17", "7") for n in cortex] + aseg)
    assert not is_metamatching_layout(cortex[200:] + cortex[:200] + aseg)


def test_pyg_arrays_build_pyg_data(cohort):
    pytest.importorskip("torch_geometric", reason="torch-geometric is not installed (pip install '.[test]')")
    from torch_geometric.data import Batch, Data
    from torch_geometric.utils import to_dense_adj

    dest, _ = _export(cohort, "pyg", "graphs.npz", "--label-column", "diagnosis", "--participants-tsv", cohort["tsv"])
    z = np.load(dest)
    ptr = z["edge_ptr"]
    graphs = [Data(x=torch.from_numpy(z["x"][i]), edge_index=torch.from_numpy(z["edge_index"][:, ptr[i]:ptr[i + 1]]),
                   edge_attr=torch.from_numpy(z["edge_attr"][ptr[i]:ptr[i + 1]]), y=torch.from_numpy(z["y"][i:i + 1]))
              for i in range(len(z["x"]))]
    assert z["run_id"].tolist() == USABLE[:3] and z["node_names"].tolist() == NODES
    for graph, run_id in zip(graphs, z["run_id"]):
        graph.validate(raise_on_error=True)
        fc = _relmat(cohort["out"], run_id)
        assert graph.num_nodes == 5 and graph.num_edges == 25  # complete, self-loops included (BrainGB)
        np.testing.assert_allclose(graph.x.numpy(), fc, rtol=1e-6)
        dense = to_dense_adj(graph.edge_index, edge_attr=graph.edge_attr, max_num_nodes=5)[0]
        np.testing.assert_allclose(dense.numpy(), fc, rtol=1e-6)
        braingb = torch.stack((torch.isnan(torch.Tensor(fc)) == 0).nonzero(as_tuple=True))
        assert torch.equal(graph.edge_index, braingb)  # BrainGB's edge order
    batch = Batch.from_data_list(graphs)
    assert batch.num_graphs == 3 and batch.y.tolist() == [1, 1, 0] and batch.y.dtype == torch.int64


@pytest.mark.parametrize("how", ["topk:2", "threshold:0.15"])
def test_pyg_sparsified_graphs(cohort, how):
    dest, _ = _export(cohort, "pyg", "sparse.npz", "--sparsify", how)
    z = np.load(dest)
    for i, run_id in enumerate(z["run_id"]):
        fc = _relmat(cohort["out"], run_id)
        edges = z["edge_index"][:, z["edge_ptr"][i]:z["edge_ptr"][i + 1]]
        pairs = set(map(tuple, edges.T.tolist()))
        assert pairs == {(j, i) for i, j in pairs} and all(i != j for i, j in pairs)
        strength = np.abs(fc) - 2 * np.eye(5)
        if how == "topk:2":
            strongest = {(r, c) for r in range(5) for c in np.argsort(-strength[r])[:2]}
            assert strongest <= pairs and pairs == strongest | {(j, i) for i, j in strongest}
        else:
            assert pairs == set(zip(*np.nonzero(strength >= 0.15)))
        attr = z["edge_attr"][z["edge_ptr"][i]:z["edge_ptr"][i + 1]]
        np.testing.assert_allclose(attr, fc[edges[0], edges[1]], rtol=1e-6)


def test_bct_mat(cohort):
    dest, result = _export(cohort, "bct", "bct.mat")
    assert "1 participant(s) contribute more than one run" in result.output
    m = loadmat(dest)
    assert m["CIJ"].shape == (5, 5, 4) and _cells(m["run_id"]) == USABLE
    assert _cells(m["subject"]) == ["sub-01", "sub-01", "sub-04", "sub-06"] and "label" not in m
    for i, run_id in enumerate(USABLE):
        assert np.array_equal(m["CIJ"][:, :, i], _relmat(cohort["out"], run_id))


def test_npz_and_manifest_list_every_run_with_its_reason(cohort):
    dest, _ = _export(cohort, "npz", "all.npz", "--label-column", "diagnosis", "--participants-tsv", cohort["tsv"])
    z = np.load(dest)
    assert z["matrices"].shape == (3, 5, 5) and z["run_id"].tolist() == USABLE[:3]
    assert z["labels"].tolist() == [[1], [1], [0]] and z["label_columns"].tolist() == ["diagnosis"]
    assert z["session"].tolist() == ["", "", ""] and z["run"].tolist() == ["2", "10", "1"]
    assert not z["missing_nodes"].any()
    table, manifest = _manifest(dest)
    assert table["id"].tolist() == ["sub-01_task-rest_run-2", "sub-01_task-rest_run-10", "sub-02_task-rest_run-1",
                                    "sub-03_task-rest_run-1", "sub-04_task-rest_run-1", "sub-05_task-rest_run-1",
                                    "sub-06_ses-1_task-rest_run-1", "sub-07"]
    assert table["index"].tolist()[:2] == [0, 1] and table["index"][4] == 2 and table["index"].isna().sum() == 5
    reasons = dict(zip(table["id"], table["reason"]))
    assert reasons["sub-02_task-rest_run-1"] == "nodes without data: LH_SomMot_1 (1, more than --max-missing-nodes 0)"
    assert reasons["sub-03_task-rest_run-1"] == ("excluded by denoising: only 40 s of data left after censoring "
                                                 "(minimum 120 s)")
    assert reasons["sub-05_task-rest_run-1"].startswith("no matrix found")
    assert reasons["sub-06_ses-1_task-rest_run-1"] == "no label: sub-06 is not in participants.tsv"
    assert reasons["sub-07"] == "no matrix found: no outputs for this participant"
    assert table["diagnosis"].tolist()[:2] == ["patient", "patient"]
    assert manifest["Included"] == 3 and manifest["Excluded"] == 5 and manifest["NodeNames"] == NODES
    assert [r["status"] for r in manifest["Runs"]] == table["status"].tolist()


def test_missing_mean_fills_from_the_group_and_records_it(cohort):
    dest, _ = _export(cohort, "npz", "mean.npz", "--missing", "mean")
    z = np.load(dest)
    ids = z["run_id"].tolist()
    assert ids == USABLE[:2] + ["sub-02_task-rest_run-1"] + USABLE[2:]
    own = _relmat(cohort["out"], "sub-02_task-rest_run-1")
    others = np.stack([_relmat(cohort["out"], i) for i in USABLE])
    filled = z["matrices"][2]
    measured = np.isfinite(own)
    assert np.array_equal(filled[measured], own[measured])
    np.testing.assert_allclose(filled[~measured], others.mean(axis=0)[~measured])
    assert z["missing_nodes"][2].tolist() == [False, False, True, False, False]
    table, manifest = _manifest(dest)
    row = table[table["id"] == "sub-02_task-rest_run-1"].iloc[0]
    assert row["status"] == "included" and row["filled_entries"] == 9 and row["missing_node_names"] == "LH_SomMot_1"
    assert manifest["Missing"] == "mean"
    capped, _ = _export(cohort, "npz", "capped.npz", "--missing", "mean", "--max-missing-nodes", "0")
    assert "sub-02_task-rest_run-1" not in np.load(capped)["run_id"].tolist()


def test_missing_keep_leaves_nan_in_npz_only(cohort):
    dest, _ = _export(cohort, "npz", "keep.npz", "--missing", "keep")
    z = np.load(dest)
    kept = z["matrices"][z["run_id"].tolist().index("sub-02_task-rest_run-1")]
    assert np.isnan(kept[2]).all() and np.isnan(kept[:, 2]).all()
    assert np.isfinite(np.delete(np.delete(kept, 2, 0), 2, 1)).all()
    refused = cohort["dest"] / "refused"
    _assert_user_error(run("export", cohort["out"], refused / "k.npz", "--format", "pyg", "--atlas", "Toy",
                           "--measure", "PearsonCorrelation", "--missing", "keep"), "--missing keep", "npz",
                       out=refused)


def _series(out, run_id):
    ents = dict(part.split("-", 1) for part in run_id.split("_"))
    path = subject_folder(out, ents, "func") / bids_name({**ents, "space": SPACE, "seg": "Toy", "stat": "mean"},
                                                         "timeseries", ".tsv")
    return read_tsv(path).to_numpy(float)


def test_tangent_equals_nilearn(cohort):
    dest, _ = _export(cohort, "npz", "tangent.npz", measure="tangent")
    z = np.load(dest)
    assert z["run_id"].tolist() == USABLE  # not sub-03 (excluded by denoising) nor sub-02 (a node without data)
    expected = ConnectivityMeasure(kind="tangent").fit_transform([_series(cohort["out"], i) for i in USABLE])
    np.testing.assert_allclose(z["matrices"], expected, rtol=1e-10, atol=1e-12)


def test_tangent_needs_two_runs(cohort, tmp_path):
    only_sub04 = tmp_path / "only04.tsv"
    only_sub04.write_text("participant_id\tdiagnosis\nsub-04\tcontrol\n")
    _assert_user_error(run("export", cohort["out"], cohort["dest"] / "t.npz", "--format", "npz", "--atlas", "Toy",
                           "--measure", "tangent", "--label-column", "diagnosis", "--participants-tsv", only_sub04),
                       "at least 2 runs", "1 left", out=cohort["dest"])


def test_tangent_keep_leaves_the_missing_node_out_of_the_fit(cohort):
    dest, _ = _export(cohort, "npz", "tangent.npz", "--missing", "keep", measure="tangent")
    z = np.load(dest)
    ids = USABLE[:2] + ["sub-02_task-rest_run-1"] + USABLE[2:]
    assert z["run_id"].tolist() == ids
    series = [np.delete(_series(cohort["out"], i), 2, axis=1) for i in ids]
    expected = ConnectivityMeasure(kind="tangent").fit_transform(series)
    assert np.isnan(z["matrices"][:, 2]).all() and np.isnan(z["matrices"][:, :, 2]).all()
    np.testing.assert_allclose(np.delete(np.delete(z["matrices"], 2, 1), 2, 2), expected, rtol=1e-10, atol=1e-12)


def test_structural_exports(cohort):
    dest, _ = _export(cohort, "braingb", "BP.mat", "--label-column", "diagnosis", "--participants-tsv",
                      cohort["tsv"], measure="StreamlineCount")
    m = loadmat(dest)
    assert "fmri" not in m and m["dti"].shape == (5, 5, 1)
    assert np.array_equal(m["dti"][:, :, 0], _relmat(cohort["out"], "sub-01", "StreamlineCount"))
    reasons = dict(zip(*_manifest(dest)[0][["id", "reason"]].values.T))
    assert reasons["sub-02"].startswith("nodes without data: RH_SomMot_1")
    assert reasons["sub-04"].startswith("no matrix found")
    length = _relmat(cohort["out"], "sub-01", "MeanLength")
    assert np.isnan(length).any()
    bct, result = _export(cohort, "bct", "length_bct.mat", measure="MeanLength")
    assert np.array_equal(loadmat(bct)["CIJ"][:, :, 0], np.nan_to_num(length))  # no streamline: 0, no connection
    assert "written as 0" in result.output
    raw, _ = _export(cohort, "npz", "length.npz", measure="MeanLength")
    assert np.array_equal(np.load(raw)["matrices"][0], length, equal_nan=True)
    filled, _ = _export(cohort, "npz", "filled.npz", "--missing", "mean", measure="StreamlineCount")
    counts = np.load(filled)["matrices"]
    sub01 = _relmat(cohort["out"], "sub-01", "StreamlineCount")
    assert np.array_equal(counts[1][4], sub01[4]) and np.array_equal(counts[1][:, 4], sub01[:, 4])
    assert np.array_equal(counts[1][:4, :4], _relmat(cohort["out"], "sub-02", "StreamlineCount")[:4, :4])


def _assert_user_error(result, *needles, out=None):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("conntool: error:"), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    if out is not None:
        assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("args, needles", [
    (["--atlas", "Nope"], ["--atlas Nope", "atlases: Toy"]),
    (["--measure", "Pearson"], ["--measure Pearson", "PartialCorrelation, PearsonCorrelation", "tangent"]),
    (["--label-column", "sex", "--participants-tsv", "{tsv}"], ["--label-column sex", "diagnosis, age"]),
    (["--label-column", "diagnosis"], ["--participants-tsv"]),
    (["--participants-tsv", "{tsv}.missing"], ["no such file"]),
    (["--format", "metamatching", "--measure", "PartialCorrelation"], ["Pearson"]),
    (["--format", "braingb"], ["one --label-column"]),
    (["--format", "bct", "--sparsify", "topk:2"], ["--sparsify"]),
    (["--format", "pyg", "--sparsify", "top:2"], ["--sparsify top:2", "topk:K"]),
    (["--format", "pyg", "--sparsify", "topk:5"], ["1 <= K < 5"]),
    (["--max-missing-nodes", "2"], ["--missing mean or keep"]),
    (["--measure", "tangent", "--missing", "mean"], ["tangent"]),
    (["--format", "npz2"], ["npz2"]),
])
def test_bad_input_is_one_line_and_writes_nothing(cohort, args, needles):
    defaults = {"--format": "npz", "--atlas": "Toy", "--measure": "PearsonCorrelation"}
    args = [a.format(tsv=cohort["tsv"]) for a in args]
    for key, value in defaults.items():
        if key not in args:
            args += [key, value]
    dest = cohort["dest"] / f"x{FORMATS.get(args[args.index('--format') + 1], '.npz')}"
    _assert_user_error(run("export", cohort["out"], dest, *args), *needles, out=cohort["dest"])


def test_dest_must_have_the_format_extension(cohort):
    _assert_user_error(run("export", cohort["out"], cohort["dest"] / "abide.npz", "--format", "braingb-npy",
                           "--atlas", "Toy", "--measure", "PearsonCorrelation", "--label-column", "diagnosis"),
                       "DEST", "writes a .npy file", out=cohort["dest"])


def test_bad_output_dirs(tmp_path):
    args = ["--format", "npz", "--atlas", "Toy", "--measure", "PearsonCorrelation"]
    _assert_user_error(run("export", tmp_path / "none", tmp_path / "d" / "x.npz", *args), "not a folder",
                       out=tmp_path / "d")
    (tmp_path / "empty" / "sub-01" / "func").mkdir(parents=True)
    _assert_user_error(run("export", tmp_path / "empty", tmp_path / "d" / "x.npz", *args), "no connectivity results",
                       out=tmp_path / "d")


def test_differing_node_names_refused(cohort):
    path = next((cohort["out"] / "sub-04" / "func").glob("*meas-PearsonCorrelation_relmat.tsv"))
    table = read_tsv(path)
    write_tsv(path, table.rename(columns={"LH_Vis_2": "LH_Vis_2b"}))
    _assert_user_error(run("export", cohort["out"], cohort["dest"] / "x.npz", "--format", "npz", "--atlas", "Toy",
                           "--measure", "PearsonCorrelation"), path.name, "node 2 is 'LH_Vis_2b'", out=cohort["dest"])


def test_unreadable_inputs_and_oversized_mat_refused(cohort, monkeypatch):
    args = ["--atlas", "Toy", "--measure", "PearsonCorrelation"]
    monkeypatch.setattr("conntool.export.MAT_V5_LIMIT", 200)  # 5 x 5 x 4 doubles are 800 bytes
    _assert_user_error(run("export", cohort["out"], cohort["dest"] / "x.mat", "--format", "bct", *args),
                       "CIJ is 0.0 GB", "MAT v5", out=cohort["dest"])
    relmat = next((cohort["out"] / "sub-06").glob("ses-1/func/*meas-PearsonCorrelation_relmat.tsv"))
    text = relmat.read_text()
    relmat.write_text(text.replace("\n1\t", "\nhigh\t", 1))
    _assert_user_error(run("export", cohort["out"], cohort["dest"] / "x.npz", "--format", "npz", *args),
                       relmat.name, "not a numeric TSV", out=cohort["dest"])
    relmat.write_text(text)
    qc = cohort["out"] / "sub-04" / "func" / "sub-04_task-rest_desc-denoise_qc.json"
    qc.write_text("{not json")
    _assert_user_error(run("export", cohort["out"], cohort["dest"] / "x.npz", "--format", "npz", *args),
                       qc.name, "not valid JSON", out=cohort["dest"])


def test_nothing_left_and_existing_dest_refused(cohort, tmp_path):
    args = ["--format", "npz", "--atlas", "Toy", "--measure", "PearsonCorrelation"]
    only_sub07 = tmp_path / "only07.tsv"
    only_sub07.write_text("participant_id\tage\nsub-07\t28\n")
    _assert_user_error(run("export", cohort["out"], cohort["dest"] / "x.npz", *args, "--label-column", "age",
                           "--participants-tsv", only_sub07),
                       "nothing to export", "5 no label", "2 no matrix found", out=cohort["dest"])
    dest, _ = _export(cohort, "npz", "x.npz")
    before = dest.read_bytes()
    _assert_user_error(run("export", cohort["out"], dest, *args), "exists", "--overwrite")
    assert dest.read_bytes() == before
    assert run("export", cohort["out"], dest, *args, "--overwrite").exit_code == 0


def test_graph_edges_keep_every_non_nan_entry():
    matrix = np.array([[1.0, np.nan, 0.0], [np.nan, 1.0, -0.5], [0.0, -0.5, 1.0]])
    edges, attr = graph_edges(matrix)
    assert edges.tolist() == [[0, 0, 1, 1, 2, 2, 2], [0, 2, 1, 2, 0, 1, 2]]  # zeros kept, NaN dropped
    assert attr.tolist() == [1.0, 0.0, 1.0, -0.5, 0.0, -0.5, 1.0] and edges.dtype == np.int64


def test_cli_formats_are_the_exporters():
    option = next(p for p in main.commands["export"].params if p.name == "fmt")
    assert list(option.type.choices) == list(FORMATS)
