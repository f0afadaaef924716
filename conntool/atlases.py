"""Atlas registry: nilearn's shipped coordinate atlases and label images found on disk.

Every atlas becomes, on the grid of the data it is applied to, one integer label
image plus an ordered table of (label id, name); downstream code sees nothing else,
so spheres and label maps share one parcellation path.

A label image must say what it is: a 3D image of non-negative integer labels (a
``dseg``), described by its label table when it has one. Probabilistic atlases (4D
maps, or 3D maps of fractions) are refused rather than rounded into labels.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import datasets, image

from conntool.errors import ConntoolInputError

SPHERE_RADIUS_MM = 5.0  # Power 2011 and Dosenbach 2010 use 5 mm spheres; Seitzman ships radii
_ATLAS_FILE = re.compile(r"^atlas-(?P<name>[A-Za-z0-9]+)(?P<entities>(_[a-z]+-[A-Za-z0-9]+)*)_dseg\.nii(\.gz)?$")
_SHOWN = 5  # labels named in a message before "..."
logger = logging.getLogger("conntool")


@dataclass(frozen=True)
class Atlas:
    """An atlas: ordered node ids and names, and either a label image or sphere centres.

    Attributes
    ----------
    name : str
        Atlas name, as used in output file names (``seg-<name>``).
    space : str
        Template space the atlas is drawn in (``"unknown"`` when not stated).
    label_ids : tuple of int
        Label value of each node, in node order.
    label_names : tuple of str
        Name of each node, in node order.
    image_path : Path or None
        The label image; None for a sphere atlas.
    centres_mm, radii_mm : tuple or None
        Sphere centres and radii (mm) of a sphere atlas; None for a label image.
    source : str
        Where the nodes come from (label table, image or publication).
    labels_not_in_image : tuple of str
        Names of nodes whose label the table lists but the image does not draw: they are
        kept as nodes (coverage 0, ``n/a`` rows), never dropped.
    atlas_map : str
        Coordinate map carrying world coordinates of the data's template into the atlas's
        (:func:`alignment_map`) when the two differ; "" takes them as they are.
    """

    name: str
    space: str
    label_ids: tuple[int, ...]
    label_names: tuple[str, ...]
    image_path: Path | None = None
    centres_mm: tuple[tuple[float, float, float], ...] | None = None
    radii_mm: tuple[float, ...] | None = None
    source: str = ""
    labels_not_in_image: tuple[str, ...] = ()
    atlas_map: str = ""

    @property
    def n_nodes(self) -> int:
        return len(self.label_ids)

    def labels_on_grid(self, reference: nib.Nifti1Image) -> nib.Nifti1Image:
        """Integer label image on ``reference``'s 3D grid (nearest-neighbour, no overlap)."""
        shape, affine = reference.shape[:3], reference.affine
        if self.image_path is None or self.atlas_map:
            ijk = np.moveaxis(np.indices(shape), 0, -1)
            return nib.Nifti1Image(self.labels_at(nib.affines.apply_affine(affine, ijk)), affine)
        resampled = image.resample_img(nib.load(self.image_path), target_affine=affine, target_shape=shape,
                                       interpolation="nearest", force_resample=True, copy_header=True)
        return nib.Nifti1Image(np.rint(np.asarray(resampled.dataobj)).astype(np.int32), affine)

    def labels_at(self, points_mm: np.ndarray) -> np.ndarray:
        """Label at each point (..., 3), world mm of the data's template (nearest neighbour;
        0 outside), carried into the atlas's template by ``atlas_map`` when it is set."""
        if self.atlas_map:
            from conntool.steps.registration import map_points

            points_mm = map_points(nib.load(self.atlas_map), points_mm)
        if self.image_path is None:
            return _sphere_labels(points_mm, np.asarray(self.centres_mm), np.asarray(self.radii_mm),
                                  np.asarray(self.label_ids))
        from scipy import ndimage

        atlas_img = nib.load(self.image_path)
        ijk = nib.affines.apply_affine(np.linalg.inv(atlas_img.affine), np.nan_to_num(points_mm, nan=-1e6))
        values = ndimage.map_coordinates(np.asarray(atlas_img.dataobj, float), np.moveaxis(ijk, -1, 0), order=0,
                                         mode="constant", cval=0.0)
        return np.rint(values).astype(np.int32)


def _sphere_labels(points_mm: np.ndarray, centres, radii, ids) -> np.ndarray:
    """Points within a sphere get its id; where spheres overlap the nearest centre wins."""
    shape = points_mm.shape[:-1]
    xyz = points_mm.reshape(-1, 3)
    best = np.full(len(xyz), np.inf)
    labels = np.zeros(len(xyz), dtype=np.int32)
    for centre, radius, label in zip(centres, radii, ids):
        dist = np.linalg.norm(xyz - centre, axis=1)
        take = (dist <= radius) & (dist < best)
        best[take] = dist[take]
        labels[take] = label
    return labels.reshape(shape)


def _coordinate_atlas(name: str) -> Atlas:
    if name == "Power264":
        rois = datasets.fetch_coords_power_2011().rois
        centres = rois[["x", "y", "z"]].to_numpy(float)
        names = [f"Power_{int(r)}" for r in rois["roi"]]
        radii = np.full(len(centres), SPHERE_RADIUS_MM)
        source = "Power et al. 2011, coordinates shipped with nilearn"
    elif name == "Dosenbach160":
        bunch = datasets.fetch_coords_dosenbach_2010()
        centres = bunch.rois[["x", "y", "z"]].to_numpy(float)
        names = [str(n) for n in bunch.labels]
        radii = np.full(len(centres), SPHERE_RADIUS_MM)
        source = "Dosenbach et al. 2010, coordinates shipped with nilearn"
    else:
        bunch = datasets.fetch_coords_seitzman_2018()
        centres = bunch.rois[["x", "y", "z"]].to_numpy(float)
        names = [f"Seitzman_{i + 1}_{r}" for i, r in enumerate(bunch.regions)]
        radii = np.asarray(bunch.radius, float)
        source = "Seitzman et al. 2018, coordinates shipped with nilearn"
    ids = tuple(range(1, len(centres) + 1))
    return Atlas(name=name, space="MNI152", label_ids=ids, label_names=tuple(names),
                 centres_mm=tuple(map(tuple, centres)), radii_mm=tuple(map(float, radii)), source=source)


BUILTIN = ("Power264", "Dosenbach160", "Seitzman300")


def read_label_table(path: Path) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Read a label table: BIDS ``dseg.tsv``, ``index,name`` CSV, or FSL/Workbench text.

    Background (index 0) rows are dropped; order is ascending label index. A table that
    lists a label twice is refused (``ConntoolInputError``), as is one it cannot parse.
    """
    text = path.read_text().splitlines()
    rows: list[tuple[int, str]] = []
    try:
        if path.suffix == ".tsv":
            table = pd.read_csv(path, sep="\t")
            rows = list(zip(table["index"].astype(int), table["name"].astype(str)))
        elif path.suffix == ".csv":
            table = pd.read_csv(path, header=None)
            rows = list(zip(table[0].astype(int), table[1].astype(str)))
        else:  # FSL / Workbench label list: a name line, then "index R G B A"
            lines = [ln.strip() for ln in text if ln.strip()]
            rows = [(int(lines[i + 1].split()[0]), lines[i]) for i in range(0, len(lines) - 1, 2)]
    except (KeyError, ValueError, IndexError) as err:
        raise ConntoolInputError(f"{path}: cannot read label table ({err})") from err
    rows = sorted((i, n) for i, n in rows if i != 0)
    if not rows:
        raise ConntoolInputError(f"{path}: label table lists no labels")
    ids, names = zip(*rows)
    repeated = sorted({a for a, b in zip(ids, ids[1:]) if a == b})
    if repeated:
        raise ConntoolInputError(f"{path}: label table lists label {_first(repeated)} more than once")
    return tuple(ids), tuple(names)


def _first(items: list[int] | list[str]) -> str:
    """The first few items, comma-separated, with "..." when there are more."""
    return ", ".join(map(str, items[:_SHOWN])) + (", ..." if len(items) > _SHOWN else "")


def image_labels(image_path: Path) -> tuple[int, ...]:
    """Labels drawn in a label (dseg) image, ascending, background 0 excluded.

    Parameters
    ----------
    image_path : Path
        A 3D NIfTI of non-negative integer labels; integer-valued floats (labels stored
        as float32) are accepted.

    Returns
    -------
    tuple of int
        The distinct non-zero labels.

    Raises
    ------
    ConntoolInputError
        If the file is not a readable NIfTI, is not 3D (a 4D image is usually a
        probabilistic atlas), holds NaN/inf, non-integer values (a probabilistic atlas:
        conntool does not implement ``NiftiMapsMasker``-style maps) or negative labels,
        or draws no label at all.
    """
    try:
        img = nib.load(image_path)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise ConntoolInputError(f"{image_path}: not a readable NIfTI ({err})") from err
    if len(img.shape) != 3:  # checked before the data are read: a 4D atlas can be large
        raise ConntoolInputError(f"{image_path}: atlas image has shape {img.shape}, not 3D (a 4D image is usually "
                                 "a probabilistic atlas, one map per region); conntool reads 3D label (dseg) "
                                 "images only")
    try:
        values = np.unique(np.asarray(img.dataobj))
    except Exception as err:  # a truncated or corrupt data block
        raise ConntoolInputError(f"{image_path}: not a readable NIfTI ({err})") from err
    if not np.isfinite(values).all():
        raise ConntoolInputError(f"{image_path}: atlas image holds NaN or infinite values; "
                                 "conntool reads label (dseg) images only")
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise ConntoolInputError(f"{image_path}: atlas image holds non-integer values (e.g. {fractional[0]:g}): "
                                 "a probabilistic atlas? conntool reads label (dseg) images only")
    if values[0] < 0:
        raise ConntoolInputError(f"{image_path}: atlas image holds negative labels "
                                 f"({_first(values[values < 0].astype(np.int64).tolist())}); labels must be >= 0")
    labels = tuple(int(v) for v in values if v != 0)
    if not labels:
        raise ConntoolInputError(f"{image_path}: atlas image holds no label (every voxel is background 0)")
    return labels


def _table_beside(image_path: Path, name: str) -> Path | None:
    for candidate in (f"atlas-{name}_dseg.tsv", f"atlas-{name}_labels.csv", f"atlas-{name}_labels.txt",
                      f"atlas-{name}_labels.tsv"):
        if (image_path.parent / candidate).exists():
            return image_path.parent / candidate
    stem = image_path.name.split(".nii")[0]
    for suffix in (".tsv", ".csv", ".txt"):
        if (image_path.parent / (stem + suffix)).exists():
            return image_path.parent / (stem + suffix)
    return None


def atlas_from_image(image_path: Path, name: str | None = None, space: str | None = None) -> Atlas:
    """Atlas from a label NIfTI, checked against the label table beside it.

    Parameters
    ----------
    image_path : Path
        A 3D label (dseg) image (see `image_labels` for what is refused).
    name : str, optional
        Atlas name; default from the BIDS-style file name (``atlas-<name>_...``).
    space : str, optional
        Atlas space; default the file name's ``space-`` entity, else ``"unknown"``.

    Returns
    -------
    Atlas
        With a table, one node per table row, in label order; without one, one node per
        label drawn in the image, named ``<name>_<label>``.

    Raises
    ------
    ConntoolInputError
        If the image is missing or not a label image, or if the image draws labels its
        table does not list (a table that does not describe its image is not trusted).

    Notes
    -----
    Table rows whose label the image does not draw stay nodes (coverage 0, ``n/a`` in
    every matrix, so every atlas node is in every matrix); they are recorded in
    ``Atlas.labels_not_in_image`` and logged as a warning on the ``"conntool"`` logger.
    AAL's table, for one, lists Vermis_7 to Vermis_10 (117-120) that its image lacks.
    """
    image_path = Path(image_path)
    if not image_path.is_file():
        raise ConntoolInputError(f"{image_path}: atlas image not found")
    match = _ATLAS_FILE.match(image_path.name)
    entities = dict(e.split("-", 1) for e in match["entities"].strip("_").split("_") if e) if match else {}
    name = name or (match["name"] if match else image_path.name.split(".nii")[0])
    drawn = image_labels(image_path)
    table = _table_beside(image_path, name)
    if table is None:
        return Atlas(name=name, space=space or entities.get("space", "unknown"), label_ids=drawn,
                     label_names=tuple(f"{name}_{i}" for i in drawn), image_path=image_path,
                     source=str(image_path))
    ids, names = read_label_table(table)
    in_image = set(drawn)
    unlisted = sorted(in_image - set(ids))
    if unlisted:
        raise ConntoolInputError(f"{table}: does not describe {image_path.name}: {len(unlisted)} of the "
                                 f"{len(drawn)} labels in the image are not in the table ({_first(unlisted)})")
    absent = tuple(n for i, n in zip(ids, names) if i not in in_image)
    if absent:
        logger.warning("%s: %d of its labels are not in %s; kept as nodes (coverage 0, n/a in every matrix): %s",
                       table, len(absent), image_path.name, ", ".join(absent))
    return Atlas(name=name, space=space or entities.get("space", "unknown"), label_ids=ids, label_names=names,
                 image_path=image_path, source=str(table), labels_not_in_image=absent)


def check_overlap(atlas: Atlas) -> None:
    """Refuse an atlas none of whose labels fall in the template brain (wrong space or file)."""
    from conntool.templates import NILEARN

    grid = NILEARN.grid(3.0)
    labels = np.asarray(atlas.labels_on_grid(grid).dataobj)
    inside = np.isin(labels, atlas.label_ids) & NILEARN.brain(grid)
    if not inside.any():
        raise ConntoolInputError(f"{atlas.source or atlas.name}: atlas has no label inside the template brain "
                                 "(no overlap; wrong space or empty image?)")


def list_atlases(atlas_dir: Path | None = None) -> dict[str, str]:
    """Names of all atlases available: built-ins plus label images in ``atlas_dir``."""
    found = {name: "built-in spheres" for name in BUILTIN}
    if atlas_dir is not None:
        for path in sorted(Path(atlas_dir).glob("atlas-*_dseg.nii*")):
            match = _ATLAS_FILE.match(path.name)
            if match:
                found[match["name"]] = str(path)
    return found


def resolve_atlas(spec: str, atlas_dir: Path | None = None, atlas_map: str = "") -> Atlas:
    """Atlas for a name (built-in or in ``atlas_dir``) or a path to a label NIfTI, with its
    ``atlas_map`` (:func:`alignment_map`) when the data are in another template."""
    available = list_atlases(atlas_dir)
    if spec in BUILTIN:
        found = _coordinate_atlas(spec)
    elif spec.endswith((".nii", ".nii.gz")):
        found = atlas_from_image(Path(spec))
    elif spec in available:
        found = atlas_from_image(Path(available[spec]), name=spec)
    else:
        where = f" or in {atlas_dir}" if atlas_dir else " (pass --atlas-dir to search a folder)"
        raise ConntoolInputError(f"--atlas {spec}: not a built-in atlas{where}; known: {', '.join(available)}")
    return dataclasses.replace(found, atlas_map=atlas_map)


def space_mismatch(atlas: Atlas, space: str) -> bool | None:
    """Whether the atlas is drawn in a named template other than ``space``, the one the data are
    registered to (True), in it (False), or in an unnamed one ("MNI152", "unknown": None).

    The MNI152 templates (NLin6Asym, NLin2009cAsym, NLin2009aSym) differ by a few millimetres.
    """
    if atlas.space in ("MNI152", "unknown"):
        return None
    return atlas.space != space


def alignment_map(atlas: Atlas, space: str) -> str:
    """The coordinate map bringing data in template ``space`` into the atlas's template
    (:func:`conntool.templates.cross_template_map`, computed once per pair), when the two
    differ and both templates are at hand; else "" (the atlas is used as it is)."""
    from conntool.templates import cross_template_map, find_template

    if not space_mismatch(atlas, space):
        return ""
    atlas_template, data_template = find_template(atlas.space), find_template(space)
    if atlas_template is None or data_template is None:
        return ""
    return str(cross_template_map(atlas_template, data_template))


def report_alignment(atlas: Atlas, space: str) -> None:
    """One line saying how an atlas drawn in another template is used: brought across by its
    ``atlas_map``, or as it is, with a warning."""
    if atlas.atlas_map:
        logger.info(f"atlas {atlas.name} is drawn in {atlas.space}, the data are in {space}: brought across by "
                    f"registering the two templates ({Path(atlas.atlas_map).name})")
    elif space_mismatch(atlas, space):
        logger.warning(
            f"atlas {atlas.name} is drawn in {atlas.space}, the data are in {space}: used as it is (the templates "
            "differ by a few millimetres, and $TEMPLATEFLOW_HOME does not hold both to register them); "
            "AtlasSpaceMismatch is recorded in every sidecar")
