"""Cohort-level exports of conntool's matrices in the layouts machine-learning code reads.

``conntool export OUTPUT_DIR DEST`` stacks one atlas × measure over every participant/run of
an output folder, in one node order (the atlas order, checked identical in every file) and one
run order (subject, session, task, run labels, digits compared as numbers), and writes DEST in
the layout that a consumer's own loading code reads, with a manifest beside it
(``<DEST stem>_manifest.tsv`` and ``.json``) listing every run included and every run excluded
with its reason. Each run is one row (graph, sample): a participant with several runs is
several rows, so split training and test sets by the ``subject`` array.

Formats (N runs, k nodes); labels come from participants.tsv (``--label-column``, repeatable),
text values coded 0..C-1 in sorted order, the coding in the manifest:

``braingb``
    ``.mat`` (``scipy.io.savemat``) with ``fmri`` (functional) or ``dti`` (structural),
    k × k × N, and ``label`` (N × 1, one column coded as classes 0..C-1 whether text or
    numbers, since BrainGB's classes are 0 and 1), as BrainGB's ``BrainDataset`` reads
    (``torch.Tensor(m[key]).transpose(0, 2)``); also ``subject``, ``run_id``, ``node_names``.
``braingb-npy``
    ``np.save`` of a dict: ``corr`` N × k × k and ``label`` (N,), as BrainGB's ABIDE loader
    reads (``np.load(path, allow_pickle=True).item()``); also ``subject``, ``run_id``, ``node_names``.
``metamatching``
    ``.npz`` with ``x``: the strict lower triangle of each Pearson matrix in numpy row order
    (``np.tril_indices(k, -1)``, as ``fc[np.tril(np.ones(k), k=-1) == 1]``), N × k(k-1)/2;
    ``x_demean_norm``: the same rows as meta-matching v1.1/v2.0 feed their models (row mean
    subtracted, divided by the row's L2 norm; applying it again changes nothing); ``y`` N × C
    when labels are asked for; ``subject``, ``run_id``. The node pair of each column is in
    ``<DEST stem>_features.tsv``.
``pyg``
    One ``.npz`` for all graphs: ``x`` N × k × k float32 (node features = matrix rows, BrainGB's
    default), ``edge_index`` 2 × E int64 and ``edge_attr`` (E,) float32 of all graphs one after
    another, graph i's edges being columns ``edge_ptr[i]:edge_ptr[i + 1]`` (node numbers within
    the graph, as ``torch_geometric.data.Data`` takes them); ``y`` (int64 when every value is
    whole, else float32); ``subject``, ``run_id``, ``node_names``. Without ``--sparsify`` the
    graph is complete: every entry that is not NaN, diagonal included, in row-major order
    (BrainGB's ``dense_to_ind_val``).
``bct``
    ``.mat`` with ``CIJ`` k × k × N (the Brain Connectivity Toolbox's name and bctpy's group
    layout), ``subject``, ``run_id``, ``node_names``, ``label`` N × C when asked for.
``npz``
    Everything: ``matrices`` N × k × k, ``node_names``, ``subject``, ``session``, ``task``,
    ``run``, ``run_id``, ``missing_nodes`` N × k (nodes without data before ``--missing``),
    ``labels`` N × C and ``label_columns``.

Missing data: a node without data (no time series: a functional matrix's all-n/a row; outside
the DWI field of view: the structural sidecar's ``NodesNotInDwiFieldOfView``) is never zeroed.
Runs with more than ``--max-missing-nodes`` such nodes are excluded; the others follow
``--missing``: ``exclude`` drops them (so it takes no ``--max-missing-nodes``), ``mean`` replaces
each entry of a missing node with the mean of that entry over the exported runs that measured it,
``keep`` leaves NaN, and only ``npz`` takes it: BrainGB turns NaN entries into absent edges and
then zero node features, and meta-matching, PyG layers and the BCT cannot compute with NaN.
Structural ``MeanLength`` and ``MeanFA`` are n/a where no streamline joins two nodes: that is an
absent edge, not missing data; ``bct`` and PyG's ``x`` write it as 0 (the BCT convention, and
what BrainGB's dense node features give), the other formats keep NaN (BrainGB drops NaN edges).

Group-level values (the ``mean`` fill, the tangent reference) are computed over every exported
run, held-out ones included: refit them within training folds for a strict evaluation.
``--measure tangent`` is nilearn's ``ConnectivityMeasure(kind="tangent")`` on the runs'
``stat-mean_timeseries`` files; ``--missing mean`` is refused for it, and ``keep`` leaves nodes
missing in any run out of the fit (NaN rows and columns).
"""
from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from conntool.errors import ConntoolInputError
from conntool.outputs import ENTITY_ORDER, _atomic, read_tsv, write_json, write_tsv

#: format → file extension DEST must have
FORMATS = {"braingb": ".mat", "braingb-npy": ".npy", "metamatching": ".npz", "pyg": ".npz", "bct": ".mat",
           "npz": ".npz"}
MISSING_POLICIES = ("exclude", "mean", "keep")
#: bytes one variable of a MAT v5 file can hold (scipy.io.savemat refuses more), less room for its header
MAT_V5_LIMIT = 2**32 - 2**16
TANGENT = "tangent"
#: structural measures whose n/a means "no streamline joins the nodes" (an absent edge)
NO_EDGE_MEASURES = ("MeanLength", "MeanFA")
#: entities naming what was computed, not which run it came from
_DERIVED_ENTITIES = ("space", "seg", "meas", "stat", "desc")
#: FreeSurfer aseg structures 8 10 11 12 13 16 17 18 26 28 47 49 50 51 52 53 54 58 60: nodes 401-419
#: of the meta-matching models (CBIG_MM_create_FC419_MNI2mm.m)
METAMATCHING_ASEG = ("Left-Cerebellum-Cortex", "Left-Thalamus", "Left-Caudate", "Left-Putamen", "Left-Pallidum",
                     "Brain-Stem", "Left-Hippocampus", "Left-Amygdala", "Left-Accumbens-area", "Left-VentralDC",
                     "Right-Cerebellum-Cortex", "Right-Thalamus", "Right-Caudate", "Right-Putamen",
                     "Right-Pallidum", "Right-Hippocampus", "Right-Amygdala", "Right-Accumbens-area",
                     "Right-VentralDC")


@dataclass
class Entry:
    """One participant/run (functional) or participant/session (structural) found for the export."""

    entities: dict[str, str]
    source: Path | None = None  #: the relmat TSV (for tangent, the mean time-series TSV)
    reason: str | None = None  #: why it is excluded; None while it is included
    missing_nodes: list[str] | None = None  #: nodes without data; None until its file is read
    filled_entries: int = 0  #: matrix entries replaced by the group mean (``--missing mean``)
    labels: tuple[str, ...] = ()  #: participants.tsv values of the label columns

    @property
    def id(self) -> str:
        """``sub-01_ses-1_task-rest_run-1``: the run's entities in BIDS order."""
        keys = [k for k in ENTITY_ORDER if k in self.entities] + sorted(set(self.entities) - set(ENTITY_ORDER))
        return "_".join(f"{k}-{self.entities[k]}" for k in keys)

    def exclude(self, reason: str) -> None:
        """Exclude with ``reason`` unless an earlier reason already excluded it."""
        self.reason = self.reason or reason


@dataclass
class Cohort:
    """The runs of one atlas × measure, stacked.

    ``entries`` lists every run found, included or not, in export order; ``matrices`` (N, k, k)
    and ``missing`` (N, k) hold the N included ones in that order.
    """

    atlas: str
    measure: str
    datatype: str  #: "func" or "dwi"
    nodes: list[str]
    entries: list[Entry]
    matrices: np.ndarray
    missing: np.ndarray

    @property
    def included(self) -> list[Entry]:
        return [e for e in self.entries if e.reason is None]


def parse_name(name: str) -> tuple[dict[str, str], str]:
    """Entities and suffix of a BIDS file name (``sub-01_task-rest_relmat.tsv`` → ``{...}, "relmat"``)."""
    *pairs, suffix = name.split(".", 1)[0].split("_")
    return dict(p.split("-", 1) for p in pairs if "-" in p), suffix


def _natural(value: str) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", value))


def sort_key(entry: Entry) -> tuple:
    """Subject, session, task, run (digits compared as numbers), then the other entities."""
    ents = entry.entities
    first = ("sub", "ses", "task", "run")
    return (*(_natural(ents.get(k, "")) for k in first), entry.id)


def _derivative_files(output_dir: Path) -> list[tuple[Path, dict[str, str], str, str]]:
    """(path, entities, suffix, datatype) of every func/dwi file of OUTPUT_DIR."""
    found = []
    for datatype in ("func", "dwi"):
        for path in sorted([*output_dir.glob(f"sub-*/{datatype}/*"), *output_dir.glob(f"sub-*/ses-*/{datatype}/*")]):
            entities, suffix = parse_name(path.name)
            if "sub" in entities:
                found.append((path, entities, suffix, datatype))
    return found


def _is_source(entities: dict, suffix: str, path: Path, atlas: str, measure: str | None) -> bool:
    """A matrix of ``atlas`` × ``measure`` (any measure if None), or a mean time series for tangent."""
    if entities.get("seg") != atlas or not path.name.endswith(".tsv"):
        return False
    if measure == TANGENT:
        return suffix == "timeseries" and entities.get("stat") == "mean"
    return suffix == "relmat" and "desc" not in entities and measure in (None, entities.get("meas"))


def find_entries(output_dir: Path, atlas: str, measure: str) -> tuple[list[Entry], str]:
    """Every run of OUTPUT_DIR for ``atlas`` × ``measure``, those that cannot be used excluded.

    Parameters
    ----------
    output_dir
        conntool's output folder.
    atlas, measure
        ``seg-`` and ``meas-`` values of the relmat files (``measure`` "tangent": the runs'
        ``stat-mean_timeseries`` files).

    Returns
    -------
    entries
        Unsorted; a run is excluded when denoising excluded it or its file is missing.
    datatype
        "func" or "dwi", the folder the files are in.

    Raises
    ------
    ConntoolInputError
        OUTPUT_DIR is not a folder of conntool results, or holds nothing for the atlas or measure
        (the message lists what it holds).
    """
    if not Path(output_dir).is_dir():
        raise ConntoolInputError(f"OUTPUT_DIR {output_dir}: not a folder")
    files = _derivative_files(Path(output_dir))
    atlases = sorted({e["seg"] for p, e, s, _ in files if "seg" in e and (
        _is_source(e, s, p, e["seg"], None) or _is_source(e, s, p, e["seg"], TANGENT))})
    if not atlases:
        raise ConntoolInputError(f"OUTPUT_DIR {output_dir}: no connectivity results in it "
                                 "(sub-*/func|dwi/*_relmat.tsv)")
    if atlas not in atlases:
        raise ConntoolInputError(f"--atlas {atlas}: no results for it in {output_dir} (atlases: {', '.join(atlases)})")
    measures = sorted({e["meas"] for p, e, s, _ in files if _is_source(e, s, p, atlas, None) and "meas" in e})
    if any(_is_source(e, s, p, atlas, TANGENT) and d == "func" for p, e, s, d in files):
        measures.append(TANGENT)
    if measure not in measures:
        raise ConntoolInputError(f"--measure {measure}: none for atlas {atlas} in {output_dir} "
                                 f"(measures: {', '.join(measures)})")
    datatype = next(d for p, e, s, d in files if _is_source(e, s, p, atlas, measure))

    runs: dict[str, Entry] = {}
    sources: dict[str, list[Path]] = {}
    qcs: dict[str, Path] = {}
    for path, ents, suffix, folder in files:
        if folder != datatype:
            continue
        is_qc = suffix == "qc" and ents.get("desc") == "denoise"
        if not (is_qc or ents.get("seg") == atlas):
            continue
        entry = Entry({k: v for k, v in ents.items() if k not in _DERIVED_ENTITIES})
        entry = runs.setdefault(entry.id, entry)
        if is_qc:
            qcs[entry.id] = path
        elif _is_source(ents, suffix, path, atlas, measure):
            sources.setdefault(entry.id, []).append(path)
    for run_id, entry in runs.items():
        paths = sources.get(run_id, [])
        if len(paths) > 1:
            raise ConntoolInputError(f"{paths[1]}: a second {measure} file for {run_id} (first: {paths[0].name})")
        entry.source = paths[0] if paths else None
        if run_id in qcs:
            qc = _read_json(qcs[run_id])
            if qc.get("Excluded"):
                entry.exclude(f"excluded by denoising: {qc.get('Reason', 'no reason recorded')}")
        if entry.source is None:
            entry.exclude("no time series found: failed run, or this atlas not computed" if measure == TANGENT
                          else "no matrix found: failed run, or this atlas and measure not computed")
    return list(runs.values()), datatype


def read_participants(path: Path, columns: Sequence[str]) -> dict[str, tuple]:
    """``participants.tsv`` values of ``columns`` by participant label (without ``sub-``).

    Values are the file's text; n/a and empty cells are None.

    Raises
    ------
    ConntoolInputError
        No ``participant_id`` column, a column that is not there, or a participant listed twice.
    """
    if not Path(path).is_file():
        raise ConntoolInputError(f"--participants-tsv {path}: no such file")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, na_values=["n/a", ""], keep_default_na=False)
    except pd.errors.ParserError as err:
        raise ConntoolInputError(f"{path}: not a readable TSV ({str(err).splitlines()[0]})") from err
    if "participant_id" not in table.columns:
        raise ConntoolInputError(f"{path}: no participant_id column")
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise ConntoolInputError(f"--label-column {absent[0]}: not a column of {path} "
                                 f"(columns: {', '.join(table.columns)})")
    ids = table["participant_id"].str.removeprefix("sub-")
    if ids.duplicated().any():
        raise ConntoolInputError(f"{path}: participant sub-{ids[ids.duplicated()].iloc[0]} is listed twice")
    return {label: tuple(None if pd.isna(v) else v for v in row)
            for label, row in zip(ids, table[list(columns)].itertuples(index=False))}


def encode_labels(values: Sequence[tuple], columns: Sequence[str], classes: bool
                  ) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Label columns as numbers.

    Parameters
    ----------
    values
        N tuples of C participants.tsv texts.
    columns
        The C column names.
    classes
        Code every column as classes 0..C-1 (BrainGB). Otherwise only text columns are coded;
        numeric columns keep their values.

    Returns
    -------
    labels
        (N, C) float.
    coding
        Column → {text: code} for each coded column, codes in sorted order of the values
        (numeric values sorted as numbers).
    """
    labels = np.empty((len(values), len(columns)))
    coding = {}
    for c, column in enumerate(columns):
        texts = [v[c] for v in values]
        numbers = pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce").to_numpy(float)
        numeric = bool(np.isfinite(numbers).all())
        if numeric and not classes:
            labels[:, c] = numbers
            continue
        distinct = sorted(set(texts), key=(lambda t: float(t)) if numeric else None)
        coding[column] = {text: code for code, text in enumerate(distinct)}
        labels[:, c] = [coding[column][t] for t in texts]
    return labels, coding


def missing_nodes(values: np.ndarray, nodes: list[str], source: Path, datatype: str, measure: str) -> list[str]:
    """Nodes without data in one run: columns with n/a of a time series, all-n/a rows (the
    diagonal aside) of a functional matrix, the sidecar's ``NodesNotInDwiFieldOfView`` of a
    structural one (whose n/a mean absent edges)."""
    if measure == TANGENT:
        return [n for n, ok in zip(nodes, np.isfinite(values).all(axis=0)) if not ok]
    if datatype == "dwi":
        sidecar = source.with_name(source.name.removesuffix(".tsv") + ".json")
        listed = _read_json(sidecar).get("NodesNotInDwiFieldOfView", []) if sidecar.is_file() else []
        return [n for n in nodes if n in listed]
    empty = (np.isnan(values) | np.eye(len(nodes), dtype=bool)).all(axis=1)
    return [n for n, gone in zip(nodes, empty) if gone]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ConntoolInputError(f"{path}: not valid JSON ({err.msg})") from err


def _read_source(entry: Entry, measure: str) -> tuple[np.ndarray, list[str]]:
    try:
        table = read_tsv(entry.source)
        values, nodes = table.to_numpy(float), [str(c) for c in table.columns]
    except (ValueError, pd.errors.ParserError) as err:  # text where numbers belong, ragged rows
        raise ConntoolInputError(f"{entry.source}: not a numeric TSV ({str(err).splitlines()[0]})") from err
    if measure != TANGENT and values.shape != (len(nodes), len(nodes)):
        raise ConntoolInputError(f"{entry.source}: {values.shape[0]} rows for {len(nodes)} node columns, "
                                 "expected a square matrix")
    return values, nodes


def fill_with_group_mean(matrices: np.ndarray, missing: np.ndarray, nodes: list[str]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Replace every entry of a missing node by that entry's mean over the runs that measured it.

    Parameters
    ----------
    matrices
        (N, k, k).
    missing
        (N, k) bool: the nodes each run has no data for.
    nodes
        The k node names (for the error message).

    Returns
    -------
    filled
        (N, k, k). n/a entries of measured pairs (absent edges of MeanLength, MeanFA) stay n/a
        and do not count towards the mean; a pair no run has an edge for stays n/a.
    replaced
        (N,) number of entries replaced in each run.

    Raises
    ------
    ConntoolInputError
        A node has no data in any run: there is nothing to fill it with.
    """
    measured = ~missing[:, :, None] & ~missing[:, None, :]
    orphans = [n for n, none in zip(nodes, missing.all(axis=0)) if none]
    if orphans:
        raise ConntoolInputError(f"--missing mean: node {orphans[0]} has no data in any exported run "
                                 "(nothing to fill it with)")
    with warnings.catch_warnings():  # a pair whose every measured value is an absent edge
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(np.where(measured, matrices, np.nan), axis=0)
    return np.where(measured, matrices, mean), (~measured).sum(axis=(1, 2))


def tangent_matrices(series: Sequence[np.ndarray], missing: np.ndarray) -> np.ndarray:
    """Group tangent-space connectivity, nilearn's ``ConnectivityMeasure(kind="tangent")``.

    Its defaults (Ledoit-Wolf covariance, standardised series); the reference point is the
    geometric mean of the covariances of exactly these runs.

    Parameters
    ----------
    series
        N arrays (T_i, k): each run's mean time series.
    missing
        (N, k) bool: nodes without data; those missing in any run are left out of the fit.

    Returns
    -------
    (N, k, k); rows and columns of nodes left out are NaN.
    """
    from nilearn.connectome import ConnectivityMeasure

    keep = ~missing.any(axis=0)
    n, k = missing.shape
    out = np.full((n, k, k), np.nan)
    tangent = ConnectivityMeasure(kind="tangent").fit_transform([s[:, keep] for s in series])
    out[:, np.outer(keep, keep)] = tangent.reshape(n, -1)
    return out


def collect(output_dir: Path, atlas: str, measure: str, *, label_columns: Sequence[str] = (),
            participants_tsv: Path | None = None, max_missing_nodes: int | None = None,
            missing: str = "exclude") -> Cohort:
    """Find, check, exclude and stack the runs of ``atlas`` × ``measure``.

    Exclusions, first reason kept: denoising excluded the run; no matrix; no row or an n/a
    value in participants.tsv for a label column; more nodes without data than
    ``max_missing_nodes`` (0 with ``missing="exclude"``, else None = no limit). Participants
    of participants.tsv with no run at all are listed excluded too.

    Raises
    ------
    ConntoolInputError
        Bad OUTPUT_DIR, atlas, measure or participants.tsv; node names that differ between
        files; nothing left to export.
    """
    entries, datatype = find_entries(Path(output_dir), atlas, measure)
    if participants_tsv is not None:
        table = read_participants(participants_tsv, label_columns)
        seen = {e.entities["sub"] for e in entries}
        entries += [Entry({"sub": label}, reason="no matrix found: no outputs for this participant")
                    for label in table if label not in seen]
        for entry in entries:
            row = table.get(entry.entities["sub"])
            if row is None:
                entry.exclude(f"no label: sub-{entry.entities['sub']} is not in participants.tsv")
                continue
            entry.labels = row
            empty = [c for c, v in zip(label_columns, row) if v is None]
            if empty:
                entry.exclude(f"no label: {empty[0]} is n/a in participants.tsv")
    entries.sort(key=sort_key)

    loaded = [(entry, *_read_source(entry, measure)) for entry in entries if entry.reason is None]
    if not loaded:
        raise ConntoolInputError(f"nothing to export for atlas {atlas}, measure {measure}: "
                                 f"{_reason_summary(entries)}")
    first, _, nodes = loaded[0]
    for entry, _, names in loaded[1:]:
        if names != nodes:
            raise ConntoolInputError(f"{entry.source}: node names differ from {first.source.name} "
                                     f"({_first_difference(names, nodes)})")
    limit = 0 if missing == "exclude" else max_missing_nodes
    for entry, values, _ in loaded:
        entry.missing_nodes = missing_nodes(values, nodes, entry.source, datatype, measure)
        if limit is not None and len(entry.missing_nodes) > limit:
            entry.exclude(f"nodes without data: {', '.join(entry.missing_nodes)} ({len(entry.missing_nodes)}, "
                          f"more than --max-missing-nodes {limit})")
    kept = [(entry, values) for entry, values, _ in loaded if entry.reason is None]
    if not kept:
        raise ConntoolInputError(f"nothing to export for atlas {atlas}, measure {measure}: "
                                 f"{_reason_summary(entries)}")
    if measure == TANGENT and len(kept) < 2:
        raise ConntoolInputError(f"--measure tangent: needs at least 2 runs (deviations from their mean), "
                                 f"{len(kept)} left to export; {_reason_summary(entries)}")
    absent = np.array([[n in entry.missing_nodes for n in nodes] for entry, _ in kept], dtype=bool)
    if measure == TANGENT:
        matrices = tangent_matrices([values for _, values in kept], absent)
    else:
        matrices = np.stack([values for _, values in kept])
    if missing == "mean":
        matrices, replaced = fill_with_group_mean(matrices, absent, nodes)
        for (entry, _), count in zip(kept, replaced):
            entry.filled_entries = int(count)
    return Cohort(atlas, measure, datatype, nodes, entries, matrices, absent)


def _first_difference(names: list[str], reference: list[str]) -> str:
    if len(names) != len(reference):
        return f"{len(names)} nodes, not {len(reference)}"
    at = next(i for i, (a, b) in enumerate(zip(names, reference)) if a != b)
    return f"node {at + 1} is {names[at]!r}, not {reference[at]!r}"


def _reason_summary(entries: list[Entry]) -> str:
    counts = Counter(e.reason.split(":")[0] for e in entries if e.reason)
    return "; ".join(f"{n} {reason}" for reason, n in counts.items()) or "no runs found"


def lower_triangle(matrices: np.ndarray) -> np.ndarray:
    """Meta-matching features: (N, k, k) → (N, k(k-1)/2), the strict lower triangle in numpy row
    order (``np.tril_indices(k, -1)``: (1,0), (2,0), (2,1), (3,0), ...)."""
    rows, cols = np.tril_indices(matrices.shape[-1], -1)
    return matrices[:, rows, cols]


def demean_norm(features: np.ndarray) -> np.ndarray:
    """Meta-matching v1.1/v2.0 input scaling of (N, F) features: each row minus its mean, divided by
    its L2 norm (``CBIG_model_pytorch.demean_norm``)."""
    from sklearn.preprocessing import normalize

    return normalize(features - features.mean(axis=1, keepdims=True), axis=1, norm="l2")


def is_metamatching_layout(nodes: Sequence[str]) -> bool:
    """Whether nodes look like the 419 of the pretrained meta-matching models: Schaefer 2018
    400 parcels in 17-network order (left hemisphere first) then the 19 aseg structures of
    ``METAMATCHING_ASEG`` in that order."""
    if len(nodes) != 419:
        return False
    cortex = [n.lower() for n in nodes[:400]]
    schaefer = all("17networks" in n for n in cortex) and all("_lh_" in n for n in cortex[:200]) \
        and all("_rh_" in n for n in cortex[200:])

    def plain(name: str) -> str:
        return re.sub(r"[^a-z]", "", name.lower().replace("-proper", ""))

    return schaefer and [plain(n) for n in nodes[400:]] == [plain(n) for n in METAMATCHING_ASEG]


def parse_sparsify(text: str | None, n_nodes: int) -> tuple[str, float] | None:
    """``topk:K`` (1 ≤ K < k) or ``threshold:T`` (T ≥ 0) → (kind, value); None → None."""
    if text is None:
        return None
    kind, _, value = text.partition(":")
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if kind == "topk" and number.is_integer() and 1 <= number < n_nodes:
        return kind, int(number)
    if kind == "threshold" and number >= 0:
        return kind, number
    raise ConntoolInputError(f"--sparsify {text}: expected topk:K (1 <= K < {n_nodes}) or threshold:T (T >= 0)")


def graph_edges(matrix: np.ndarray, sparsify: tuple[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Edges of one (k, k) matrix as PyG's ``edge_index`` (2, E) int64 and ``edge_attr`` (E,).

    Without ``sparsify``, every entry that is not NaN, diagonal included, in row-major order
    (BrainGB's ``dense_to_ind_val``). ``("topk", K)`` keeps each node's K off-diagonal entries
    of largest absolute value, ``("threshold", T)`` the off-diagonal entries with |w| ≥ T; an
    edge kept for either end is kept in both directions, and there are no self-loops.
    """
    finite = np.isfinite(matrix)
    if sparsify is None:
        keep = finite
    else:
        kind, value = sparsify
        strength = np.where(finite & ~np.eye(len(matrix), dtype=bool), np.abs(matrix), -np.inf)
        if kind == "topk":
            strongest = np.argsort(-strength, axis=1, kind="stable")[:, :int(value)]
            keep = np.zeros_like(finite)
            np.put_along_axis(keep, strongest, True, axis=1)
            keep &= np.isfinite(strength)
        else:
            keep = strength >= value
        keep = keep | keep.T
    rows, cols = np.nonzero(keep)
    return np.stack([rows, cols]).astype(np.int64), matrix[rows, cols]


def _strings(values: Sequence[str]) -> np.ndarray:
    """Text array numpy loads without pickle."""
    return np.array(list(values), dtype=str)


def _cells(values: Sequence[str]) -> np.ndarray:
    """Text as a MATLAB cell array (scipy.io.savemat)."""
    cells = np.empty(len(values), dtype=object)
    cells[:] = list(values)
    return cells


def _save_mat(path: Path, arrays: dict) -> Path:
    from scipy.io import savemat

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: savemat would append .mat to the temporary name
            savemat(f, arrays, do_compression=True)
    return _atomic(path, write)


def _save_npz(path: Path, arrays: dict) -> Path:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return _atomic(path, write)


def _save_pickled_dict(path: Path, data: dict) -> Path:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, data, allow_pickle=True)
    return _atomic(path, write)


def destinations(dest: Path, fmt: str) -> dict[str, Path]:
    """Every file an export writes: DEST, its manifest (TSV, JSON) and, for meta-matching, the
    feature order."""
    dest = Path(dest)
    paths = {"data": dest, "manifest_tsv": dest.with_name(f"{dest.stem}_manifest.tsv"),
             "manifest_json": dest.with_name(f"{dest.stem}_manifest.json")}
    if fmt == "metamatching":
        paths["features"] = dest.with_name(f"{dest.stem}_features.tsv")
    return paths


def check_options(fmt: str, dest: Path, measure: str, label_columns: Sequence[str], missing: str,
                  max_missing_nodes: int | None, sparsify: str | None) -> None:
    """Refuse option combinations before anything is read (one line each)."""
    if fmt not in FORMATS:
        raise ConntoolInputError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    if Path(dest).suffix != FORMATS[fmt]:
        raise ConntoolInputError(f"DEST {dest}: --format {fmt} writes a {FORMATS[fmt]} file")
    if missing not in MISSING_POLICIES:
        raise ConntoolInputError(f"--missing {missing}: choose from {', '.join(MISSING_POLICIES)}")
    if missing == "keep" and fmt != "npz":
        raise ConntoolInputError(f"--missing keep: --format {fmt} cannot carry n/a (its consumers drop or cannot "
                                 "compute with it); use exclude or mean, or --format npz")
    if missing == "exclude" and max_missing_nodes:
        raise ConntoolInputError("--max-missing-nodes: --missing exclude drops every run with a missing node; "
                                 "use --missing mean or keep to allow some")
    if measure == TANGENT and missing == "mean":
        raise ConntoolInputError("--missing mean: not defined for --measure tangent (its reference is fitted on "
                                 "all runs at once); use exclude, or keep with --format npz")
    if fmt == "metamatching" and measure != "PearsonCorrelation":
        raise ConntoolInputError(f"--measure {measure}: meta-matching models take Pearson r "
                                 "(--measure PearsonCorrelation)")
    if fmt.startswith("braingb") and len(label_columns) != 1:
        raise ConntoolInputError(f"--format {fmt}: BrainGB reads one class label per graph; "
                                 "give exactly one --label-column")
    if sparsify is not None and fmt != "pyg":
        raise ConntoolInputError("--sparsify: only --format pyg builds graphs")


@dataclass
class ExportResult:
    """What an export wrote: the files, how many runs went in and out, and notes for the user."""

    files: list[Path]
    included: int
    excluded: int
    notes: list[str]


def export(output_dir: Path, dest: Path, fmt: str, atlas: str, measure: str, *,
           label_columns: Sequence[str] = (), participants_tsv: Path | None = None,
           max_missing_nodes: int | None = None, missing: str = "exclude", sparsify: str | None = None,
           overwrite: bool = False, provenance: dict | None = None) -> ExportResult:
    """Export one atlas × measure of OUTPUT_DIR as ``fmt`` to DEST, with its manifest.

    Parameters
    ----------
    output_dir
        conntool's output folder.
    dest
        File to write; its extension must be the format's (``FORMATS``).
    fmt
        One of ``FORMATS``.
    atlas, measure
        As in the relmat names (``seg-``, ``meas-``), or measure "tangent".
    label_columns
        participants.tsv columns to write as labels (N × C).
    participants_tsv
        Default ``OUTPUT_DIR/participants.tsv`` when it exists; needed with ``label_columns``.
    max_missing_nodes, missing
        See the module's "Missing data".
    sparsify
        ``topk:K`` or ``threshold:T`` (pyg only; see ``graph_edges``).
    overwrite
        Replace existing files.
    provenance
        Recorded in the JSON manifest (e.g. the command line).

    Raises
    ------
    ConntoolInputError
        Any bad input; nothing is written then.
    """
    check_options(fmt, dest, measure, label_columns, missing, max_missing_nodes, sparsify)
    paths = destinations(dest, fmt)
    existing = [p for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise ConntoolInputError(f"{existing[0]}: exists; pass --overwrite to replace")
    if participants_tsv is None and (Path(output_dir) / "participants.tsv").is_file():
        participants_tsv = Path(output_dir) / "participants.tsv"
    if label_columns and participants_tsv is None:
        raise ConntoolInputError("--label-column: give --participants-tsv (participants.tsv is in the raw BIDS "
                                 f"folder; {output_dir} has none)")
    cohort = collect(output_dir, atlas, measure, label_columns=label_columns, participants_tsv=participants_tsv,
                     max_missing_nodes=max_missing_nodes, missing=missing)
    graph = parse_sparsify(sparsify, len(cohort.nodes))
    labels, coding = encode_labels([e.labels for e in cohort.included], label_columns,
                                   classes=fmt.startswith("braingb"))
    notes = _notes(cohort, fmt, coding)
    arrays = _format_arrays(cohort, fmt, labels if label_columns else None, label_columns, graph)
    too_big = [k for k, v in arrays.items() if FORMATS[fmt] == ".mat" and v.nbytes >= MAT_V5_LIMIT]
    if too_big:
        raise ConntoolInputError(f"--format {fmt}: {too_big[0]} is {arrays[too_big[0]].nbytes / 1e9:.1f} GB, over "
                                 "the 4.3 GB a MAT v5 variable can hold; use --format npz or braingb-npy")
    written = [_save_mat(paths["data"], arrays) if FORMATS[fmt] == ".mat"
               else _save_pickled_dict(paths["data"], arrays) if fmt == "braingb-npy"
               else _save_npz(paths["data"], arrays)]
    if fmt == "metamatching":
        rows, cols = np.tril_indices(len(cohort.nodes), -1)
        written.append(write_tsv(paths["features"], pd.DataFrame({
            "feature": np.arange(len(rows)), "row": rows, "column": cols,
            "node_row": [cohort.nodes[i] for i in rows], "node_column": [cohort.nodes[j] for j in cols]})))
    table = manifest_table(cohort, Path(output_dir), label_columns)
    written.append(write_tsv(paths["manifest_tsv"], table))
    written.append(write_json(paths["manifest_json"], {
        "Format": fmt, "Files": [p.name for p in written] + [paths["manifest_json"].name],
        "Atlas": atlas, "Measure": measure, "Datatype": cohort.datatype, "NodeCount": len(cohort.nodes),
        "NodeNames": cohort.nodes, "Included": len(cohort.included),
        "Excluded": len(cohort.entries) - len(cohort.included),
        "Missing": missing, "MaxMissingNodes": 0 if missing == "exclude" else max_missing_nodes,
        "Sparsify": sparsify, "LabelColumns": list(label_columns), "LabelCoding": coding,
        "MetaMatchingLayout": is_metamatching_layout(cohort.nodes) if fmt == "metamatching" else None,
        "Notes": notes, "SourceOutputDir": str(Path(output_dir).absolute()), **(provenance or {}),
        "Runs": json.loads(table.to_json(orient="records")),
    }))
    return ExportResult(written, len(cohort.included), len(cohort.entries) - len(cohort.included), notes)


def _format_arrays(cohort: Cohort, fmt: str, labels: np.ndarray | None, label_columns: Sequence[str],
                   graph: tuple[str, float] | None) -> dict:
    """The arrays of one format (module docstring), from the cohort's (N, k, k) stack and (N, C)
    labels (None: no label columns)."""
    included = cohort.included
    ids = {"subject": [f"sub-{e.entities['sub']}" for e in included], "run_id": [e.id for e in included]}
    matrices = cohort.matrices
    if fmt == "braingb":
        key = "dti" if cohort.datatype == "dwi" else "fmri"
        return {key: np.transpose(matrices, (1, 2, 0)), "label": labels.astype(np.int64),
                "node_names": _cells(cohort.nodes), **{k: _cells(v) for k, v in ids.items()}}
    if fmt == "braingb-npy":
        return {"corr": matrices, "label": labels[:, 0].astype(np.int64), "node_names": list(cohort.nodes), **ids}
    if fmt == "metamatching":
        x = lower_triangle(matrices)
        arrays = {"x": x, "x_demean_norm": demean_norm(x), **{k: _strings(v) for k, v in ids.items()}}
        return arrays if labels is None else {**arrays, "y": labels}
    if fmt == "pyg":
        edges = [graph_edges(m, graph) for m in matrices]
        arrays = {"x": _absent_edges_as_zero(matrices).astype(np.float32),
                  "edge_index": np.concatenate([e for e, _ in edges], axis=1),
                  "edge_attr": np.concatenate([a for _, a in edges]).astype(np.float32),
                  "edge_ptr": np.concatenate([[0], np.cumsum([a.size for _, a in edges])]).astype(np.int64),
                  "node_names": _strings(cohort.nodes), **{k: _strings(v) for k, v in ids.items()}}
        if labels is not None:
            y = labels[:, 0] if labels.shape[1] == 1 else labels
            arrays["y"] = y.astype(np.int64) if np.all(y == np.round(y)) else y.astype(np.float32)
        return arrays
    if fmt == "bct":
        arrays = {"CIJ": np.transpose(_absent_edges_as_zero(matrices), (1, 2, 0)), "node_names": _cells(cohort.nodes),
                  **{k: _cells(v) for k, v in ids.items()}}
        return arrays if labels is None else {**arrays, "label": labels}
    arrays = {"matrices": matrices, "missing_nodes": cohort.missing, "node_names": _strings(cohort.nodes),
              **{k: _strings(v) for k, v in ids.items()},
              **{name: _strings([e.entities.get(key, "") for e in included])
                 for name, key in (("session", "ses"), ("task", "task"), ("run", "run"))}}
    if labels is not None:
        arrays.update(labels=labels, label_columns=_strings(label_columns))
    return arrays


def _absent_edges_as_zero(matrices: np.ndarray) -> np.ndarray:
    """n/a → 0; by the time a format that needs this is written, only absent edges are n/a."""
    return np.where(np.isfinite(matrices), matrices, 0.0)


def _notes(cohort: Cohort, fmt: str, coding: dict[str, dict[str, int]]) -> list[str]:
    notes = [f"--label-column {column}: {len(codes)} classes (BrainGB's models are set up for 2)"
             for column, codes in coding.items() if fmt.startswith("braingb") and len(codes) > 2]
    if fmt == "metamatching" and not is_metamatching_layout(cohort.nodes):
        notes.append(f"atlas {cohort.atlas} ({len(cohort.nodes)} nodes) is not the 419-node layout the pretrained "
                     "meta-matching models expect (Schaefer 2018 400 parcels, 17-network order, then 19 aseg "
                     "structures): use x with models trained on it, not the pretrained ones")
    if fmt == "braingb":
        notes.append("BrainGB reads this layout only as <root>/HIV.mat or <root>/BP.mat (name HIV or BP; view=1 "
                     "reads 'fmri', any other view 'dti'): rename DEST")
    if fmt == "braingb-npy":
        notes.append("BrainGB reads this layout only as <root>/abide.npy (name ABIDE): rename DEST")
    repeated = sum(n > 1 for n in Counter(e.entities["sub"] for e in cohort.included).values())
    if repeated:
        notes.append(f"{repeated} participant(s) contribute more than one run: split training and test sets by "
                     "participant (the subject array), not by row")
    if cohort.measure == TANGENT:
        notes.append("tangent matrices are relative to the geometric mean of exactly the exported runs: "
                     "refit within training folds for held-out evaluation")
    if cohort.measure in NO_EDGE_MEASURES and fmt in ("bct", "pyg"):
        notes.append(f"{cohort.measure} is n/a where no streamline joins two nodes: written as 0 "
                     + ("(no connection)" if fmt == "bct" else "in x, and no edge"))
    return notes


def manifest_table(cohort: Cohort, output_dir: Path, label_columns: Sequence[str]) -> pd.DataFrame:
    """One row per run, in export order: ``index`` (position in the exported arrays, n/a when
    excluded), participant, session, task, run, ``id``, ``status``, ``reason``, the nodes without
    data and entries filled, the label columns' participants.tsv values and the source file."""
    position = {e.id: i for i, e in enumerate(cohort.included)}
    rows = []
    for entry in cohort.entries:
        ents = entry.entities
        rows.append({
            "index": position.get(entry.id), "participant_id": f"sub-{ents['sub']}",
            "session": ents.get("ses"), "task": ents.get("task"), "run": ents.get("run"), "id": entry.id,
            "status": "excluded" if entry.reason else "included", "reason": entry.reason,
            "missing_nodes": None if entry.missing_nodes is None else len(entry.missing_nodes),
            "missing_node_names": ", ".join(entry.missing_nodes or []) or None,
            "filled_entries": entry.filled_entries,
            **{column: value for column, value in zip(label_columns, entry.labels)},
            "source": str(entry.source.relative_to(output_dir)) if entry.source else None,
        })
    table = pd.DataFrame(rows, columns=["index", "participant_id", "session", "task", "run", "id", "status", "reason",
                                        "missing_nodes", "missing_node_names", "filled_entries", *label_columns,
                                        "source"])
    return table.astype({"index": "Int64", "missing_nodes": "Int64"})
