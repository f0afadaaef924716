"""Standard-space templates: nilearn's MNI152 2009a, or a TemplateFlow copy of another.

nilearn ships the ICBM 2009a nonlinear symmetric MNI152 template (T1w, GM, WM, brain mask),
so ``MNI152NLin2009aSym`` is always at hand. Other templates (fMRIPrep's
``MNI152NLin2009cAsym``, FSL's ``MNI152NLin6Asym``) are used when ``$TEMPLATEFLOW_HOME``
holds their skull-stripped 1 mm T1w and brain mask; nothing is downloaded. Such a template
takes its tissue priors from its own ``label-GM/WM/CSF_probseg`` files, or else from
nilearn's, carried across by registering the two templates (:func:`cross_template_map`),
done once per pair and cached.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn import datasets, image

NILEARN_SPACE = "MNI152NLin2009aSym"
_REGISTRATION = {"backend": "dipy", "seed": 0, "resolution_mm": 2.0, "affine_sampling": 0.2}  # reproducible, once
logger = logging.getLogger("conntool")


@dataclasses.dataclass(frozen=True)
class Template:
    """A standard space and where its images are.

    Attributes
    ----------
    name : str
        TemplateFlow identifier, the ``space-`` entity of outputs in it.
    folder : str
        Folder of its ``tpl-<name>_res-01_desc-brain_{T1w,mask}`` files; "" for nilearn's.
    priors_map : str
        Coordinate map (this template's grid → world mm of nilearn's template) through which
        nilearn's tissue priors are sampled; "" when the template has priors of its own.
    """

    name: str
    folder: str = ""
    priors_map: str = ""

    def _file(self, resolution: int, desc: str, suffix: str) -> Path | None:
        """The TemplateFlow file of that resolution, ``desc``/``label`` and suffix, if present."""
        if not self.folder:
            return None
        path = Path(self.folder) / f"tpl-{self.name}_res-{resolution:02d}_{desc}_{suffix}.nii.gz"
        return path if path.is_file() else None

    def own_priors(self) -> list[Path] | None:
        """The template's GM, WM and CSF ``probseg`` files (1 mm), or None when it lacks any."""
        found = [self._file(1, f"label-{t}", "probseg") for t in ("GM", "WM", "CSF")]
        return found if all(found) else None

    def grid(self, resolution_mm: float) -> nib.Nifti1Image:
        """An empty image defining the output grid of ``resolution_mm`` isotropic voxels: the
        template's own grid of that resolution when it has one (fMRIPrep's ``res-02``)."""
        own = self._file(int(resolution_mm), "desc-brain", "mask") if float(resolution_mm).is_integer() else None
        if own is not None and np.allclose(nib.load(own).header.get_zooms()[:3], resolution_mm):
            ref = nib.load(own)
        else:
            ref = _on_grid(self._t1w_image(), resolution_mm, "continuous")
        return nib.Nifti1Image(np.zeros(ref.shape[:3], np.uint8), ref.affine)

    def t1w(self, resolution_mm: float) -> nib.Nifti1Image:
        """Skull-stripped template T1w on :meth:`grid` (``resolution_mm``), float32."""
        if not self.folder:
            return _on_grid(self._t1w_image(), resolution_mm, "continuous")
        return image.resample_to_img(self._t1w_image(), self.grid(resolution_mm), interpolation="continuous",
                                     force_resample=True, copy_header=True)

    def _t1w_image(self) -> nib.Nifti1Image:
        if not self.folder:
            return datasets.load_mni152_template(resolution=2)
        img = nib.load(self._file(1, "desc-brain", "T1w"))
        return nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine)

    def brain(self, reference: nib.Nifti1Image) -> np.ndarray:
        """The template's brain mask on ``reference``'s grid, (X, Y, Z) bool (nearest neighbour)."""
        mask = nib.load(self._file(1, "desc-brain", "mask")) if self.folder else \
            datasets.load_mni152_brain_mask(resolution=2)
        return _on_reference(mask, reference, "nearest") > 0.5

    def tissue_probabilities(self, reference: nib.Nifti1Image) -> dict[str, np.ndarray]:
        """GM, WM and CSF probability maps and the brain mask on ``reference``'s grid.

        nilearn ships GM and WM priors only; CSF is what the brain mask leaves over.
        """
        brain = self.brain(reference)
        own = self.own_priors()
        if own:
            gm, wm, csf = (np.clip(_on_reference(nib.load(p), reference, "continuous"), 0, 1) for p in own)
        else:
            gm, wm = (np.clip(prior, 0, 1) for prior in self._nilearn_priors(reference))
            csf = np.where(brain, np.clip(1 - gm - wm, 0, 1), 0.0)
        return {"gm": gm, "wm": wm, "csf": csf, "brain": brain.astype(float)}

    def _nilearn_priors(self, reference: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
        """nilearn's GM and WM priors on ``reference``'s grid, through ``priors_map`` when this
        is another template."""
        priors = (datasets.load_mni152_gm_template(resolution=2), datasets.load_mni152_wm_template(resolution=2))
        if not self.folder:
            return tuple(_on_reference(p, reference, "continuous") for p in priors)
        from conntool.steps.dwi_space import values_at_points
        from conntool.steps.registration import map_points
        from conntool.steps.resample import grid_world_coords

        points = map_points(nib.load(self.priors_map), grid_world_coords(reference))
        return tuple(values_at_points(np.asarray(p.dataobj, float), p.affine, points) for p in priors)


NILEARN = Template(NILEARN_SPACE)


def _on_grid(img: nib.Nifti1Image, resolution_mm: float, interpolation: str) -> nib.Nifti1Image:
    if np.allclose(img.header.get_zooms()[:3], resolution_mm):
        return img
    return image.resample_img(img, target_affine=np.diag([resolution_mm] * 3), interpolation=interpolation,
                              force_resample=True, copy_header=True)


def _on_reference(img: nib.Nifti1Image, reference: nib.Nifti1Image, interpolation: str) -> np.ndarray:
    return np.asarray(image.resample_to_img(img, reference, interpolation=interpolation, force_resample=True,
                                            copy_header=True).dataobj, float)


def find_template(name: str) -> Template | None:
    """The template ``name``: nilearn's for ``MNI152NLin2009aSym``, else a TemplateFlow copy in
    ``$TEMPLATEFLOW_HOME`` (its ``tpl-<name>/`` folder, or the folder itself), else None."""
    if name == NILEARN_SPACE:
        return NILEARN
    home = os.environ.get("TEMPLATEFLOW_HOME", "")
    for folder in (Path(home) / f"tpl-{name}", Path(home)) if home else ():
        found = Template(name, str(folder.absolute()))
        if found._file(1, "desc-brain", "T1w") and found._file(1, "desc-brain", "mask"):
            return found
    return None


def output_template(name: str) -> Template:
    """The template outputs are in: ``name`` when at hand (:func:`find_template`), else nilearn's.

    Its ``priors_map`` is not set here (see :func:`with_priors`), so this is cheap enough for
    naming outputs.
    """
    return find_template(name) or NILEARN


def with_priors(template: Template) -> Template:
    """``template`` able to give tissue priors: nilearn's own, the template's own
    ``probseg`` files, or nilearn's carried across (:func:`cross_template_map`)."""
    if not template.folder or template.own_priors():
        return template
    return dataclasses.replace(template, priors_map=str(cross_template_map(NILEARN, template)))


def cache_dir() -> Path:
    """Where template-pair registrations are kept: ``$CONNTOOL_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/conntool`` (``~/.cache/conntool``)."""
    if os.environ.get("CONNTOOL_CACHE_DIR"):
        return Path(os.environ["CONNTOOL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "conntool"


@functools.lru_cache(maxsize=None)  # every participant's workflow asks for the same pair's path
def _digest(template: Template) -> str:
    source = template._file(1, "desc-brain", "T1w")
    content = source.read_bytes() if source else np.asarray(template.t1w(2.0).dataobj).tobytes()
    return hashlib.sha256(content).hexdigest()[:12]


def _cache_path(on: Template, into: Template) -> Path:
    settings = hashlib.sha256(json.dumps(_REGISTRATION, sort_keys=True).encode()).hexdigest()[:6]
    return cache_dir() / f"from-{on.name}_to-{into.name}_{_digest(on)}-{_digest(into)}-{settings}_coordmap.nii.gz"


def _write_atomically(path: Path, write) -> None:
    """``write(temporary path)``, then rename: concurrent runs never see half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix="".join(path.suffixes))
    os.close(handle)
    write(temporary)
    os.replace(temporary, path)


def cross_template_map(moving: Template, fixed: Template) -> Path:
    """Coordinate map from ``fixed``'s 2 mm grid to ``moving``'s world coordinates (mm).

    The two skull-stripped T1w templates are registered (DIPY affine + SyN, seed 0, 2 mm) the
    first time a pair is asked for, in either order; both directions of the map are cached under
    :func:`cache_dir`, named by the pair and the digests of both T1w images, each with a JSON
    sidecar (the similarity reached).
    """
    from conntool.steps.registration import normalize

    path = _cache_path(fixed, moving)
    if path.is_file():
        return path
    first, second = sorted((moving, fixed), key=lambda t: t.name)
    logger.info("registering %s to %s (once; cached in %s)", first.name, second.name, cache_dir())
    res = _REGISTRATION["resolution_mm"]
    on_second, on_first, similarity = normalize(first.t1w(res), second.t1w(res), _REGISTRATION["backend"],
                                                _REGISTRATION["seed"], _REGISTRATION["affine_sampling"])
    cache_dir().mkdir(parents=True, exist_ok=True)
    for on, into, coordmap in ((second, first, on_second), (first, second, on_first)):
        target = _cache_path(on, into)
        sidecar = {"Grid": on.name, "Into": into.name, "Registration": {**_REGISTRATION, "moving": first.name},
                   "Similarity": similarity, "Sources": [t.folder or "nilearn" for t in (first, second)]}
        _write_atomically(target.with_name(target.name.replace(".nii.gz", ".json")),
                          lambda p: Path(p).write_text(json.dumps(sidecar, indent=2)))
        _write_atomically(target, lambda p: nib.save(coordmap, p))
    return path
