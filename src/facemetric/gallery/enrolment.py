"""The gallery jobs behind ``facemetric enroll``, ``identify`` and ``gallery calibrate``: which
photos, embedding them (:func:`facemetric.inference.batch.embed_files`, the one embedding
function, through the embedder passed in), duplicates, and the gallery calls. The command
modules only parse arguments, call these and print.

Enrolment (:func:`enrol_files`)
-------------------------------
* Photos that cannot be embedded (no face, unreadable, a name that is not valid UTF-8, ...)
  are skipped with their reason; the others are committed together (one transaction).
* A first enrolment creates the gallery *with* its images in one step
  (:meth:`~facemetric.gallery.storage.GalleryStorage.create` with ``populate``): killed
  part-way, it leaves no gallery at all; racing another first enrolment, it joins the
  winner's gallery (same model) or fails with one line.
* Duplicates: a photo of identity ``c`` whose content key (sha256 of its bytes + its resolved
  path, :func:`~facemetric.gallery.files.content_key`, stored in the image's
  ``metadata["key"]``) or whose embedding (bit for bit) is already enrolled for ``c`` -- or
  appears earlier in the same command -- is skipped and counted (``allow_duplicates=True``
  enrols it anyway).
* The gallery records how the model was named (``model_ref``: a pretrained name or the
  artifact's absolute path) so ``identify`` and ``calibrate`` default to it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemetric.data.folder import IdentityFolder
from facemetric.data.image_io import display_path, is_valid_name, path_problem
from facemetric.errors import FacemetricError
from facemetric.eval.open_set import ThresholdCalibration
from facemetric.gallery.files import content_key
from facemetric.gallery.store import UNKNOWN, Gallery
from facemetric.index.search import as_embeddings
from facemetric.inference.batch import embed_files

DEFAULT_MODEL = "dlib-resnet-v1"
BY = ("max", "mean")


def people_path(people: Path | None, root: Path) -> Path | None:
    """An LFW people file as given, or relative to the data folder ``root`` when only there."""
    if people is None or people.is_file() or not (root / people).is_file():
        return people
    return root / people


def model_reference(model: str) -> str:
    """What a gallery records about the model it was made with: the absolute path of an
    artifact (or run directory) that exists, else the name as given (a pretrained name)."""
    p = Path(model)
    return str(p.resolve()) if p.exists() else model


def gallery_model(model: str | None, gallery: Gallery | str | os.PathLike) -> str:
    """The model to load for an existing gallery (an open :class:`Gallery`, or its path, then
    opened once here): ``model`` when given, else the one recorded in the gallery
    (:attr:`~facemetric.gallery.storage.GalleryStorage.model_reference`), else
    :data:`DEFAULT_MODEL`."""
    if model:
        return model
    if isinstance(gallery, Gallery):
        return gallery.model_reference or DEFAULT_MODEL
    with Gallery.open(gallery) as g:
        return g.model_reference or DEFAULT_MODEL


def embed_paths(embedder: Any, paths: Sequence[Path], batch_size: int = 32,
                progress: bool = False, found: dict[Path, dict] | None = None,
                ) -> tuple[np.ndarray, list[Path], dict[Path, str]]:
    """:func:`~facemetric.inference.batch.embed_files` keyed by the given ``Path`` objects:
    ``(embeddings [n, D], kept paths, {skipped path: reason})``; ``found`` (a dict, filled in)
    receives how each kept photo's face was found (``{"how", "why", "faces", "box"}``)."""
    r = embed_files(embedder, list(paths), batch_size=batch_size, progress=progress)
    by_name = {os.fspath(p): Path(p) for p in paths}
    if found is not None:
        found.update({by_name[k]: v for k, v in r.found.items()})
    return r.embeddings, [by_name[k] for k in r.kept], {by_name[k]: why for k, why in r.skipped.items()}


@dataclass
class EnrolmentPlan:
    """Which photos to enrol as whom: ``names[i]`` is the identity of ``paths[i]``;
    ``skipped``: ``{printable path: reason}`` of folders/photos left out while listing."""

    names: list[str]
    paths: list[Path]
    skipped: dict[str, str] = field(default_factory=dict)


def folder_plan(folder: Path, min_images: int = 1, people: Path | None = None,
                per_identity: int | None = None) -> EnrolmentPlan:
    """Every identity of the identity folder ``folder`` (``ROOT/<name>/<photo>``): only those
    with ``min_images`` photos, of the LFW ``people`` file, the first ``per_identity`` photos
    (by name) of each. Folders and photos the listing skips (bad names, links, ...) are
    reported in ``skipped``."""
    if per_identity is not None and per_identity < 1:
        raise FacemetricError(f"--per-identity: expected an integer >= 1, got {per_identity}")
    data = IdentityFolder(folder, min_images=min_images, identities=people_path(people, folder))
    names: list[str] = []
    paths: list[Path] = []
    for name, own in data.groups(per_identity):
        paths += own
        names += [name] * len(own)
    return EnrolmentPlan(names, paths, dict(data.skip_report()))


def images_plan(identity: str, images: Sequence[Path]) -> EnrolmentPlan:
    """The photos ``images`` of one ``identity``."""
    paths = list(images)
    return EnrolmentPlan([str(identity)] * len(paths), paths)


@dataclass
class EnrolmentResult:
    """What :func:`enrol_files` did: ``counts`` (images enrolled per requested identity, in
    order, 0 included), ``skipped`` (``{printable path: reason}``), ``duplicates`` (photos
    already enrolled, left out), the gallery's totals after the command; ``found``
    (``{printable path: how its face was found}``, see :mod:`facemetric.align.fallback`) and
    ``found_counts`` (photos per way) for the enrolled photos."""

    gallery: Path
    created: bool
    counts: dict[str, int]
    skipped: dict[str, str]
    duplicates: int
    num_identities: int
    num_images: int
    found: dict[str, dict] = field(default_factory=dict)
    found_counts: dict[str, int] = field(default_factory=dict)

    @property
    def enrolled(self) -> int:
        return sum(self.counts.values())


def _keys(paths: Sequence[Path]) -> list[str | None]:
    keys: list[str | None] = []
    for p in paths:
        if path_problem(p) is not None:  # not a readable regular file (a FIFO would block)
            keys.append(None)
            continue
        try:
            keys.append(content_key(p))
        except OSError:
            keys.append(None)  # unreadable: the embedder reports why
    return keys


def _mark_duplicates(names: Sequence[str], keys: Sequence[str | None], emb: np.ndarray | None,
                     gallery: Gallery | None) -> np.ndarray:
    if gallery is not None:
        return gallery.duplicates(names, emb, keys)
    dup = np.zeros(len(names), dtype=bool)
    seen: set[tuple[str, Any]] = set()
    vecs = None if emb is None else as_embeddings(emb, "embeddings")
    for i, name in enumerate(names):
        marks = [("k", keys[i])] if keys[i] else []
        if vecs is not None:
            marks.append(("v", vecs[i].tobytes()))
        if any((name, m) in seen for m in marks):
            dup[i] = True
        else:
            seen.update((name, m) for m in marks)
    return dup


def enrol_files(gallery: str | os.PathLike, embedder: Any, plan: EnrolmentPlan, *,
                model: str | None = None, allow_duplicates: bool = False, batch_size: int = 32,
                progress: bool = False) -> EnrolmentResult:
    """Enrol ``plan``'s photos, embedded with ``embedder``, into the gallery directory
    ``gallery`` (created for the embedder's model if it does not exist; ``model`` is the name
    the model was given, recorded at creation). See the module docstring."""
    path = Path(gallery)
    skipped: dict[str, str] = dict(plan.skipped)
    names: list[str] = []
    paths: list[Path] = []
    for name, p in zip(plan.names, plan.paths, strict=True):
        if not is_valid_name(p):
            skipped[display_path(p)] = "file name is not valid UTF-8"
        elif not is_valid_name(name):
            skipped[display_path(p)] = "identity name is not valid UTF-8"
        elif name == UNKNOWN:
            skipped[display_path(p)] = f"identity {UNKNOWN!r} is reserved for open-set rejections"
        else:
            names.append(name)
            paths.append(p)
    existing = Gallery.open(path) if path.exists() else None
    try:
        if existing is not None:
            existing.check_model(embedder.card)
        keys = _keys(paths)
        n_dup = 0
        if not allow_duplicates:
            dup = _mark_duplicates(names, keys, None, existing)
            n_dup += int(dup.sum())
            names = [n for n, d in zip(names, dup, strict=True) if not d]
            keys = [k for k, d in zip(keys, dup, strict=True) if not d]
            paths = [p for p, d in zip(paths, dup, strict=True) if not d]
        how: dict[Path, dict] = {}
        emb, kept, failed = embed_paths(embedder, paths, batch_size=batch_size, progress=progress,
                                        found=how)
        for p, why in failed.items():
            skipped[display_path(p)] = why
        index = {p: i for i, p in enumerate(paths)}
        rows = [index[p] for p in kept]
        kept_names = [names[i] for i in rows]
        kept_keys = [keys[i] for i in rows]
        if kept and not allow_duplicates:
            dup = _mark_duplicates(kept_names, kept_keys, emb, existing)
            if dup.any():
                n_dup += int(dup.sum())
                emb = emb[~dup]
                kept = [p for p, d in zip(kept, dup, strict=True) if not d]
                kept_names = [n for n, d in zip(kept_names, dup, strict=True) if not d]
                kept_keys = [k for k, d in zip(kept_keys, dup, strict=True) if not d]
        sources = [os.fspath(p) for p in kept]
        metadata = [{"key": k} if k else {} for k in kept_keys]

        def populate(g: Gallery) -> None:
            if kept:
                g.enroll_many(kept_names, emb, sources, metadata, card=embedder.card)

        if existing is not None:
            populate(existing)
            g, created = existing, False
        else:
            ref = model_reference(model) if model else None
            g = Gallery.create(path, embedder.card, model_ref=ref, populate=populate, exist_ok=True)
            created = True
        try:
            counts = dict.fromkeys(plan.names, 0)
            for n in kept_names:
                counts[n] = counts.get(n, 0) + 1
            found = {display_path(p): how[p] for p in kept if p in how}
            found_counts: dict[str, int] = {}
            for v in found.values():
                found_counts[v["how"]] = found_counts.get(v["how"], 0) + 1
            return EnrolmentResult(path, created, counts, skipped, n_dup, g.num_identities, len(g),
                                   found, found_counts)
        finally:
            if g is not existing:
                g.close()
    finally:
        if existing is not None:
            existing.close()


# --------------------------------------------------------------------------- identify
@dataclass
class IdentifyResult:
    """``rows``: one dict per probe, in input order -- ``image``, ``identity`` (the decision:
    a name, ``unknown``, or None when skipped), ``known``, ``score`` (cosine of the best
    match), ``matches`` (``[{identity, score}]``, best first), ``threshold``, ``found`` (how
    the photo's face was found, with an alignment step) and ``error`` for a skipped photo;
    ``threshold`` and ``source`` (where it came from)."""

    rows: list[dict[str, Any]]
    threshold: float
    source: str


def identify_files(gallery: Gallery, embedder: Any, images: Sequence[Path], *, k: int = 5,
                   by: str = "max", threshold: float | None = None, far: float = 0.01,
                   progress: bool = False) -> IdentifyResult:
    """Top-``k`` identities and the open-set decision for each photo. The threshold follows
    :meth:`Gallery.choose_threshold <facemetric.gallery.Gallery.choose_threshold>` (given,
    stored calibration, impostor tail for the gallery's size, card)."""
    if by not in BY:
        raise FacemetricError(f"--by: expected max or mean, got {by!r}")
    if isinstance(k, bool) or k < 1:
        raise FacemetricError(f"--k: expected an integer >= 1, got {k}")
    gallery.check_model(embedder.card)
    t, source = gallery.choose_threshold(threshold, card=embedder.card, by=by, far=far)
    if threshold is not None:
        source = "--threshold"
    how: dict[Path, dict] = {}
    emb, kept, skipped = embed_paths(embedder, list(images), progress=progress, found=how)
    found: dict[Path, list] = {}
    if kept and len(gallery) > 0:
        found = dict(zip(kept, gallery.search(emb, k=k, by=by, card=embedder.card), strict=True))
    rows = []
    for p in images:
        if p in skipped:
            row = {"image": str(p), "identity": None, "known": False, "error": skipped[p], "matches": []}
        else:
            matches = found.get(p) or []
            best = matches[0] if matches else None
            known = best is not None and best.score >= t
            row = {
                "image": str(p),
                "identity": best.identity if known else UNKNOWN,
                "known": known,
                "score": None if best is None else best.score,
                "matches": [{"identity": m.identity, "score": m.score} for m in matches],
            }
            if p in how:
                row["found"] = how[p]
        row["threshold"] = t
        rows.append(row)
    return IdentifyResult(rows, t, source)


# --------------------------------------------------------------------------- calibrate
@dataclass
class CalibrationResult:
    calibration: ThresholdCalibration
    skipped: dict[str, str]


def calibrate_folder(gallery: Gallery, embedder: Any, folder: Path, *, far: float = 1e-2,
                     by: str = "max", progress: bool = False, store: bool = True) -> CalibrationResult:
    """Calibrate the open-set threshold on the labelled probes of the identity folder
    ``folder`` (not enrolled: photos of enrolled people give genuine scores, the others
    impostor scores) at ``far`` and, with ``store``, keep it in the gallery
    (:meth:`~facemetric.gallery.storage.GalleryStorage.set_calibration`)."""
    if by not in BY:
        raise FacemetricError(f"--by: expected max or mean, got {by!r}")
    data = IdentityFolder(folder)
    gallery.check_model(embedder.card)
    emb, kept, failed = embed_paths(embedder, list(data.paths), progress=progress)
    skipped = dict(data.skip_report())
    skipped.update({display_path(p): why for p, why in failed.items()})
    if not kept:
        raise FacemetricError(f"{folder}: no probe photo could be embedded")
    cal = gallery.calibrate(emb, [p.parent.name for p in kept], card=embedder.card, far=far, by=by)
    if store:
        gallery.set_calibration(cal, by=by)
    return CalibrationResult(cal, skipped)


__all__ = [
    "DEFAULT_MODEL",
    "CalibrationResult",
    "EnrolmentPlan",
    "EnrolmentResult",
    "IdentifyResult",
    "calibrate_folder",
    "embed_paths",
    "enrol_files",
    "folder_plan",
    "gallery_model",
    "identify_files",
    "images_plan",
    "model_reference",
    "people_path",
]
