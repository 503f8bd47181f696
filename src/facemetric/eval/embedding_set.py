"""Embeddings of a labelled photo folder, computed once and saved (``facemetric embed``).

An :class:`EmbeddingSet` holds one row per embedded photo -- the embedding (as the model card
gives it), its identity (the folder name) and its path -- plus the photos that were skipped
(with the reason), the model's card and fingerprint (a set made by another model is refused
where a model is given), and how it was made (data root, filters, flip, alignment counts).
Identification (:func:`facemetric.eval.identification.identification_report`) and clustering
(``facemetric cluster --embeddings``) evaluations then reuse one embedding pass.

On disk: one ``.npz`` (NumPy arrays, no pickle) written atomically (temp file + rename)::

    embeddings  float32 [N, D]      identities  str [N]      paths  str [N]
    norms       float64 [N]         meta        str (JSON: card, fingerprint, settings, skipped)
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemetric.data.folder import IdentityFolder, read_people_file
from facemetric.errors import DataError, FacemetricError
from facemetric.inference.batch import embed_files
from facemetric.inference.embedder import load_model
from facemetric.inference.model_card import model_fingerprint, model_label
from facemetric.io import atomic_write_bytes

FORMAT = "facemetric-embeddings/1"


@dataclass
class EmbeddingSet:
    """Labelled embeddings (see the module docstring). ``meta`` keys: ``format``, ``card``,
    ``fingerprint``, ``model`` (the name given), ``data``, ``flip``, ``filters``,
    ``skipped`` (``{path: reason}``), ``alignment`` (counts or None)."""

    embeddings: np.ndarray
    identities: np.ndarray
    paths: np.ndarray
    norms: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        self.identities = np.asarray(self.identities, dtype=str)
        self.paths = np.asarray(self.paths, dtype=str)
        self.norms = np.asarray(self.norms, dtype=np.float64)
        n = self.embeddings.shape[0]
        if self.embeddings.ndim != 2:
            raise FacemetricError(f"embeddings: expected [N, D], got shape {self.embeddings.shape}")
        for name in ("identities", "paths", "norms"):
            if getattr(self, name).shape != (n,):
                raise FacemetricError(f"{name}: expected {n} entries (one per embedding), got {getattr(self, name).shape}")

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def card(self) -> dict[str, Any]:
        return dict(self.meta.get("card") or {})

    @property
    def num_identities(self) -> int:
        return int(np.unique(self.identities).size)

    def unit(self) -> np.ndarray:
        """L2-normalised embeddings (cosine similarity = inner product), float32."""
        e = self.embeddings.astype(np.float64)
        n = np.linalg.norm(e, axis=1, keepdims=True)
        return (e / np.where(n > 0, n, 1.0)).astype(np.float32)

    def subset(self, rows: Any) -> EmbeddingSet:
        rows = np.asarray(rows)
        return EmbeddingSet(self.embeddings[rows], self.identities[rows], self.paths[rows], self.norms[rows], dict(self.meta))

    def select(self, people: Any = None, min_images: int = 1) -> EmbeddingSet:
        """The rows of the identities in ``people`` (an LFW people file or a list of names;
        None: all) that have at least ``min_images`` rows, in their order here."""
        if isinstance(min_images, bool) or not isinstance(min_images, (int, np.integer)) or min_images < 1:
            raise FacemetricError(f"min_images: expected an integer >= 1, got {min_images!r}")
        keep = np.ones(len(self), dtype=bool)
        if people is not None:
            if isinstance(people, (str, os.PathLike)):
                names = read_people_file(people)
            else:
                names = [str(n) for n in people]
            keep &= np.isin(self.identities, np.asarray(names, dtype=str))
        if min_images > 1:
            uniq, inv, counts = np.unique(self.identities, return_inverse=True, return_counts=True)
            keep &= counts[inv.ravel()] >= min_images
        if not keep.any():
            raise FacemetricError(f"embeddings: no identity left after the filters (people, min_images={min_images})")
        return self.subset(np.flatnonzero(keep))

    def summary(self) -> dict[str, Any]:
        _, counts = np.unique(self.identities, return_counts=True)
        return {
            "images": len(self),
            "identities": int(counts.size),
            "identities_with_2_or_more": int((counts >= 2).sum()),
            "dim": self.dim,
            "skipped": len(self.meta.get("skipped") or {}),
            "model": self.meta.get("model"),
            "flip": self.meta.get("flip"),
        }

    def check_model(self, card: dict[str, Any], where: str = "embeddings") -> None:
        """Raise when ``card`` is not the model these embeddings were made with."""
        mine = self.meta.get("fingerprint")
        if mine is not None and mine != model_fingerprint(card):
            raise FacemetricError(
                f"{where}: made by model {model_label(self.card)}, not by {model_label(card)}"
            )

    # ------------------------------------------------------------------ disk
    def save(self, path: str | os.PathLike) -> Path:
        """Write the set to ``path`` (``.npz``) atomically."""
        path = Path(path)
        buf = io.BytesIO()
        np.savez(
            buf,
            embeddings=self.embeddings,
            identities=self.identities,
            paths=self.paths,
            norms=self.norms,
            meta=np.array(json.dumps({**self.meta, "format": FORMAT})),
        )
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> EmbeddingSet:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: embeddings file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("embeddings", "identities", "paths", "norms", "meta")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a facemetric embeddings file ({exc or type(exc).__name__})") from None
        try:
            meta = json.loads(str(arrays.pop("meta")))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: meta is not valid JSON ({exc.msg})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise DataError(f"{path}: expected format {FORMAT!r}, got {got!r}")
        return cls(meta=meta, **arrays)


def embed_identity_folder(
    model: Any,
    data: str | os.PathLike,
    *,
    min_images: int = 1,
    people: Any = None,
    per_identity: int | None = None,
    flip: bool = False,
    batch_size: int = 64,
    skip_failures: bool = True,
    face_select: str | None = None,
    progress: bool = True,
    out: str | os.PathLike | None = None,
) -> EmbeddingSet:
    """Embed every photo of the identity folder ``data`` (``<data>/<identity>/<photo>``);
    paths are stored absolute, so the file can be used from any directory.

    ``model``: a model name/artifact/run directory, or a loaded
    :class:`~facemetric.inference.FaceEmbedder`. Filters: ``min_images`` (identities with at
    least this many photos), ``people`` (an LFW people file or a list of names),
    ``per_identity`` (only the first N photos by name). Photos go through the card's
    preprocessing and alignment step (with its fallback: the verification protocol's
    choice, so every photo counts); unreadable or face-less photos are skipped and listed when
    ``skip_failures`` (else the first one is an error). ``out``: also save the set there.
    """
    if per_identity is not None and (isinstance(per_identity, bool) or int(per_identity) < 1):
        raise FacemetricError(f"per_identity: expected an integer >= 1, got {per_identity!r}")
    folder = IdentityFolder(data, min_images=min_images, identities=people)
    paths: list[str] = []
    labels: list[str] = []
    for name, own in folder.groups(None if per_identity is None else int(per_identity)):
        paths += [os.path.abspath(p) for p in own]
        labels += [name] * len(own)
    embedder = _embedder(model, face_select)
    result = embed_files(embedder, paths, flip=flip, batch_size=batch_size,
                         skip_failures=skip_failures, progress=progress)
    if not result.kept:
        first, why = next(iter(result.skipped.items()))
        raise DataError(f"{data}: none of its {len(paths)} photos could be embedded (first: {first}: {why})")
    label_of = dict(zip(paths, labels, strict=True))
    meta = {
        "card": embedder.card,
        "fingerprint": model_fingerprint(embedder.card),
        "model": str(model) if isinstance(model, (str, os.PathLike)) else embedder.card.get("name"),
        "data": os.path.abspath(data),
        "flip": bool(flip),
        "filters": {"min_images": min_images, "people": None if people is None else (os.fspath(people) if isinstance(people, (str, os.PathLike)) else list(people)),
                    "per_identity": per_identity},
        "skipped": {**folder.skip_report(), **result.skipped},  # listing skips too (links, bad names)
        "alignment": result.alignment,
        "found": result.found,  # per photo: how its face was found (facemetric.align.fallback)
    }
    emb_set = EmbeddingSet(result.embeddings, [label_of[p] for p in result.kept], result.kept,
                           result.norms, meta)
    if out is not None:
        emb_set.save(out)
    return emb_set


def _embedder(model: Any, face_select: str | None) -> Any:
    if isinstance(model, (str, os.PathLike)):
        embedder = load_model(model)
    else:
        embedder = model
    if face_select is not None:
        embedder.set_face_select(face_select)
    return embedder


__all__ = ["EmbeddingSet", "embed_identity_folder"]
