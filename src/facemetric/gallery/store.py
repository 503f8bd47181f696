"""The :class:`Gallery`: a persistent face gallery with 1:N search and open-set identification.

It is assembled from three parts, each in its own module:

* persistence and the commit protocol -- :mod:`facemetric.gallery.storage` (SQLite + append-only
  vector segments, the write lock, crash safety, integrity checks; :class:`Gallery` inherits
  :class:`~facemetric.gallery.storage.GalleryStorage`);
* the vector index -- :mod:`facemetric.gallery.vector_index` (exact / faiss / IVF over the
  committed snapshot, top-``k`` identities by max or mean cosine);
* the threshold policy -- :mod:`facemetric.gallery.thresholds` (explicit threshold, stored
  calibration, the impostor tail's size-aware rule, the card's 1:1 threshold).

Inference stays out: the image-taking conveniences (:meth:`Gallery.enroll_images`,
:meth:`Gallery.search_images`, :meth:`Gallery.identify_images`) delegate to
:mod:`facemetric.gallery.images`, which embeds through the embedder object passed in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from facemetric.errors import FacemetricError
from facemetric.eval.open_set import ThresholdCalibration, calibrate_threshold
from facemetric.gallery import images as _images
from facemetric.gallery.records import UNKNOWN, IdentityRecord, ImageRecord, Snapshot
from facemetric.gallery.storage import FORMAT, GalleryStorage
from facemetric.gallery.thresholds import choose_threshold, default_threshold, given_threshold
from facemetric.gallery.vector_index import GalleryIndex, check_index_kind, own_identity_scores
from facemetric.index.search import as_embeddings
from facemetric.inference.model_card import card_similarity_threshold


class Match(NamedTuple):
    """One search hit: identity name, cosine score, squared L2 distance ``2 - 2 score``."""

    identity: str
    score: float
    distance: float


class Identification(NamedTuple):
    """Open-set decision: ``identity`` is the best candidate if ``score >= threshold``, else
    :data:`UNKNOWN`; ``candidate`` is the best identity either way (None: empty gallery)."""

    identity: str
    known: bool
    candidate: str | None
    score: float
    distance: float
    threshold: float


class Gallery(GalleryStorage):
    """A face gallery directory. Use :meth:`create` / :meth:`open`.

    ``index``: ``auto`` (faiss flat if importable, else exact chunked BLAS), ``exact``,
    ``faiss`` (flat, exact) or ``faiss-ivf`` (approximate, persisted). On a 2-core CPU
    ``exact`` measured faster than faiss flat for one query and for batches
    (benchmarks/bench_gallery_search.py). One object per thread; any number of processes may
    open the same directory.
    """

    def __init__(self, path: Path, conn: Any, index: str = "auto", nprobe: int | None = None):
        check_index_kind(index)
        super().__init__(path, conn)
        self._vector_index = GalleryIndex(path, self.fingerprint, index, nprobe)

    @property
    def index_kind(self) -> str:
        """The default index kind of searches (``index=`` of :meth:`open`)."""
        return self._vector_index.kind

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query (``faiss-ivf``); settable."""
        return self._vector_index.nprobe

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        self._vector_index.nprobe = value
        for index in self._vector_index._indexes.values():
            if getattr(index, "kind", None) == "ivf" and value is not None:
                index.index.nprobe = int(min(value, index.index.nlist))

    @classmethod
    def create(cls, path: str | os.PathLike, model_card: Mapping[str, Any], index: str = "auto",
               nprobe: int | None = None, **kwargs: Any) -> Gallery:
        """A new, empty gallery for the model ``model_card`` (see
        :meth:`GalleryStorage.create <facemetric.gallery.storage.GalleryStorage.create>` for
        ``model_ref``, ``populate`` and ``exist_ok``)."""
        return super().create(path, model_card, index=index, nprobe=nprobe, **kwargs)

    @classmethod
    def open(cls, path: str | os.PathLike, index: str = "auto", nprobe: int | None = None) -> Gallery:
        """Open an existing gallery (``index`` and ``nprobe`` as in the class docstring)."""
        return super().open(path, index=index, nprobe=nprobe)

    # ------------------------------------------------------------------ search
    def _query(self, queries: Any, card: Mapping[str, Any] | str) -> np.ndarray:
        self.check_model(card)
        return as_embeddings(queries, "queries", self.dim)

    def _top(self, q: np.ndarray, k: int, by: str, index: str | None) -> tuple[Snapshot, np.ndarray, np.ndarray]:
        snap = self.snapshot()
        return snap, *self._vector_index.top(snap, q, k, by, index)

    def search(self, queries: Any, k: int = 5, by: str = "max", *, card: Mapping[str, Any] | str,
               index: str | None = None) -> list[list[Match]]:
        """Top-``k`` identities for each query embedding (``[Q, D]`` or one ``[D]``).

        ``by="max"``: best cosine over the identity's images; ``"mean"``: mean cosine over
        them (see :mod:`facemetric.index.search`). ``card``: the querying model's card or
        fingerprint (a mismatch is refused). Each hit is ``Match(identity, score, distance)``
        with ``distance = 2 - 2 score`` (squared L2 of unit vectors; for ``mean`` the mean
        squared distance). Fewer than ``k`` hits when the gallery has fewer identities.
        """
        q = self._query(queries, card)
        snap, scores, ids = self._top(q, k, by, index)
        out = []
        for s_row, i_row in zip(scores.tolist(), ids.tolist(), strict=True):
            out.append([Match(snap.names[i], s, 2.0 - 2.0 * s) for s, i in zip(s_row, i_row, strict=True) if i >= 0])
        return out

    # ------------------------------------------------------------------ thresholds
    def resolve_threshold(self, threshold: float | None, threshold_key: str | None,
                          card: Mapping[str, Any] | str) -> float:
        """A cosine threshold: ``threshold`` as given (a float or a ThresholdCalibration), else
        the card's ``threshold_key`` distance threshold converted by
        :func:`facemetric.inference.model_card.card_similarity_threshold` (the querying card's
        when a dict was passed, else the gallery's)."""
        if threshold is not None:
            return given_threshold(threshold)
        return card_similarity_threshold(card if isinstance(card, Mapping) else self.card, threshold_key)

    def default_threshold(self, card: Mapping[str, Any] | None = None, by: str = "max",
                          far: float = 0.01) -> tuple[float, str]:
        """``(cosine threshold, where it came from)`` for open-set decisions on this gallery:
        the stored calibration (:meth:`set_calibration`) when it was made for ``by``; else the
        model's impostor tail at open-set FAR ``far`` for this gallery's size; else the card's
        1:1 threshold converted to a cosine (:mod:`facemetric.gallery.thresholds`)."""
        return default_threshold(self.card, card, self.calibration, len(self), self.num_identities, by, far)

    def choose_threshold(self, threshold: float | None = None, *, card: Mapping[str, Any] | None = None,
                         threshold_key: str | None = None, by: str = "max",
                         far: float = 0.01) -> tuple[float, str]:
        """The full precedence of :mod:`facemetric.gallery.thresholds`: ``(threshold, source)``."""
        return choose_threshold(threshold, threshold_key, self.card, card, self.calibration,
                                len(self), self.num_identities, by, far)

    def identify(self, queries: Any, *, card: Mapping[str, Any] | str, threshold: float | None = None,
                 threshold_key: str | None = None, by: str = "max", index: str | None = None,
                 far: float = 0.01):
        """Open-set identification: the best identity when its score ``>= threshold``, else
        :data:`UNKNOWN`. One :class:`Identification` for a 1-D query, a list for ``[Q, D]``.

        The threshold is a cosine similarity; by default :meth:`default_threshold` (a stored
        calibration, else the model's impostor tail at open-set FAR ``far`` for this gallery's
        size, else the card's 1:1 threshold converted); ``threshold_key`` picks a card
        threshold instead. A 1:N search with max-over-images accepts more impostors than 1:1
        at the same threshold as the gallery grows, hence the size-aware default.
        """
        single = np.ndim(queries) == 1
        if threshold is None and threshold_key is None:
            t = self.default_threshold(card if isinstance(card, Mapping) else None, by, far)[0]
        else:
            t = self.resolve_threshold(threshold, threshold_key, card)
        q = self._query(queries, card)
        snap, scores, ids = self._top(q, 1, by, index)
        out = []
        for s, i in zip(scores[:, 0].tolist(), ids[:, 0].tolist(), strict=True):
            cand = snap.names[i] if i >= 0 else None
            known = cand is not None and s >= t
            out.append(Identification(cand if known else UNKNOWN, known, cand, s, 2.0 - 2.0 * s, t))
        return out[0] if single else out

    def calibrate(self, queries: Any, labels: Sequence[str], *, card: Mapping[str, Any] | str,
                  far: float = 1e-3, by: str = "max") -> ThresholdCalibration:
        """A threshold at ``far`` from labelled probes against this gallery.

        Impostor score of a probe = its best score over the identities other than its own
        label (for a probe of an identity not in the gallery: its top score), genuine score =
        its own identity's score (probes whose identity is enrolled). Returns
        :class:`~facemetric.eval.open_set.ThresholdCalibration` (see
        :func:`~facemetric.eval.open_set.calibrate_threshold`).
        """
        q = self._query(queries, card)
        labels = [str(x) for x in labels]
        if len(labels) != q.shape[0]:
            raise FacemetricError(f"labels: expected {q.shape[0]} (one per query), got {len(labels)}")
        snap, scores, ids = self._top(q, 2, by, index=None)
        dense = {name: i for i, name in enumerate(snap.names) if snap.counts[i] > 0}
        own = np.array([dense.get(x, -1) for x in labels], dtype=np.int64)
        top_is_own = ids[:, 0] == own
        impostor = np.where(top_is_own, scores[:, 1], scores[:, 0]).astype(np.float64)
        impostor = impostor[np.isfinite(impostor)]
        mated = own >= 0
        genuine = own_identity_scores(q[mated], own[mated], snap, by)
        return calibrate_threshold(genuine, impostor, far)

    # ------------------------------------------------------------------ with an embedder
    def enroll_images(self, identity: str, images: Any, embedder: Any, *, flip: bool = False,
                      metadata: Any = None, identity_metadata: Mapping[str, Any] | None = None,
                      batch_size: int = 64) -> list[int]:
        """:func:`facemetric.gallery.images.enroll_images` on this gallery."""
        return _images.enroll_images(self, identity, images, embedder, flip=flip, metadata=metadata,
                                     identity_metadata=identity_metadata, batch_size=batch_size)

    def search_images(self, images: Any, embedder: Any, k: int = 5, by: str = "max", *,
                      flip: bool = False, index: str | None = None) -> list[list[Match]]:
        """:func:`facemetric.gallery.images.search_images` on this gallery."""
        return _images.search_images(self, images, embedder, k, by, flip=flip, index=index)

    def identify_images(self, images: Any, embedder: Any, *, threshold: float | None = None,
                        threshold_key: str | None = None, by: str = "max", flip: bool = False,
                        far: float = 0.01):
        """:func:`facemetric.gallery.images.identify_images` on this gallery."""
        return _images.identify_images(self, images, embedder, threshold=threshold,
                                       threshold_key=threshold_key, by=by, flip=flip, far=far)


__all__ = ["FORMAT", "UNKNOWN", "Gallery", "Identification", "IdentityRecord", "ImageRecord", "Match",
           "own_identity_scores"]
