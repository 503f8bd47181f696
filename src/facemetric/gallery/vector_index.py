"""The gallery's vector index: which :mod:`facemetric.index` index serves a committed
snapshot, the top-``k`` identities of queries, and the own-identity scores of calibration.

Indexes are derived data, cached per snapshot ``generation`` (removals only change the mask
of live rows, so they keep the index). ``exact`` (chunked BLAS) and ``faiss`` (flat) are built
in memory; ``faiss-ivf`` is persisted beside the vectors as ``index-<generation>-ivf.faiss``
with a JSON sidecar ``{"generation", "num_rows", "dim", "fingerprint", "nlist"}`` (both written
with :func:`facemetric.io.atomic_write`). An IVF file whose sidecar does not match the current
generation, row count, dimension and model fingerprint is stale and rebuilt, never used.

Identity scores (``by``): ``max`` -- best cosine over the identity's images (the first ``k``
distinct identities of the image ranking, :func:`facemetric.index.search.top_identities_max`);
``mean`` -- ``q . m_c`` with ``m_c`` the mean of the identity's vectors (centroids cached per
revision, :func:`facemetric.index.search.top_identities_mean`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from facemetric.errors import FacemetricError
from facemetric.gallery.records import Snapshot
from facemetric.index.search import (
    AGGREGATIONS,
    INDEX_KINDS,
    ExactIndex,
    FaissIndex,
    build_index,
    faiss_available,
    identity_centroids,
    top_identities_max,
    top_identities_mean,
)
from facemetric.inference.model_card import canonical_json
from facemetric.io import atomic_write_bytes


def check_index_kind(kind: str) -> str:
    if kind not in INDEX_KINDS:
        raise FacemetricError(f"index: expected one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    return kind


class GalleryIndex:
    """Search structures over a gallery's snapshots (one per gallery object and thread).

    ``kind``: ``auto`` (faiss flat if importable, else exact chunked BLAS), ``exact``,
    ``faiss`` (flat, exact) or ``faiss-ivf`` (approximate, persisted in ``path``).
    """

    def __init__(self, path: Path, fingerprint: str, kind: str = "auto", nprobe: int | None = None):
        self.path = path
        self.fingerprint = fingerprint
        self.kind = check_index_kind(kind)
        self.nprobe = nprobe
        self._indexes: dict[tuple[int, str], Any] = {}
        self._centroids: tuple[int, np.ndarray, np.ndarray] | None = None

    def index_for(self, snap: Snapshot, kind: str | None = None):
        """The index of ``kind`` (default: this object's) over ``snap``, live rows masked."""
        kind = check_index_kind(kind or self.kind)
        if kind == "auto":
            kind = "faiss" if faiss_available() else "exact"
        key = (snap.generation, kind)
        index = self._indexes.get(key)
        if index is None:
            self._indexes = {k: v for k, v in self._indexes.items() if k[0] == snap.generation}
            if kind == "faiss-ivf":
                index = self._ivf_index(snap)
            elif kind == "exact":
                index = ExactIndex(snap.vectors, snap.live)
            else:
                index = build_index(snap.vectors, snap.live, kind, self.nprobe)
            self._indexes[key] = index
        index.set_live(snap.live)
        return index

    def _ivf_index(self, snap: Snapshot):
        """Load the persisted IVF index of this generation, or build and persist it."""
        if not faiss_available():
            build_index(snap.vectors, None, "faiss-ivf")  # raises the one-line error
        if snap.vectors.shape[0] == 0:
            return FaissIndex.build(snap.vectors, "flat", snap.live)
        import faiss  # optional dependency

        stem = self.path / f"index-{snap.generation:08d}-ivf"
        n, d = snap.vectors.shape
        expect = {"generation": snap.generation, "num_rows": n, "dim": d, "fingerprint": self.fingerprint}
        sidecar, file = stem.with_suffix(".json"), stem.with_suffix(".faiss")
        try:
            info = json.loads(sidecar.read_text())
            if all(info.get(k) == v for k, v in expect.items()):
                index = faiss.read_index(str(file))
                if index.ntotal == n and index.d == d:
                    return FaissIndex(index, "ivf", snap.live, self.nprobe)
        except (OSError, ValueError, RuntimeError):
            pass  # missing, partial or foreign: rebuild
        built = FaissIndex.build(snap.vectors, "ivf", snap.live, self.nprobe)
        try:
            atomic_write_bytes(file, faiss.serialize_index(built.index).tobytes())
            atomic_write_bytes(sidecar, canonical_json({**expect, "nlist": int(built.index.nlist)}).encode())
        except OSError:
            pass  # read-only gallery: the in-memory index still serves
        return built

    def top(self, snap: Snapshot, q: np.ndarray, k: int, by: str, kind: str | None = None):
        """``(scores [Q, k], dense identity ids [Q, k])`` of the best identities (-inf / -1
        padded when the gallery has fewer)."""
        if by not in AGGREGATIONS:
            raise FacemetricError(f"by: expected one of {', '.join(AGGREGATIONS)}, got {by!r}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise FacemetricError(f"k: expected an integer >= 1, got {k!r}")
        if by == "max":
            n_live = int(np.count_nonzero(snap.counts))
            return top_identities_max(self.index_for(snap, kind), q, snap.row_identity, n_live, int(k))
        if self._centroids is None or self._centroids[0] != snap.revision:
            self._centroids = (snap.revision, *identity_centroids(snap.vectors, snap.row_identity, len(snap.names)))
        _, cent, counts = self._centroids
        return top_identities_mean(q, cent, counts, int(k))


def own_identity_scores(q: np.ndarray, own: np.ndarray, snap: Snapshot, by: str,
                        max_pairs: int = 1 << 22) -> np.ndarray:
    """Score of each query for its own dense identity ``own[i]`` (all ``>= 0``), vectorised:
    the (query, image-of-its-identity) pairs are gathered through a CSR of identity -> rows,
    their cosines computed in blocks of ``max_pairs`` and reduced per query (max or mean)."""
    if q.shape[0] == 0:
        return np.zeros(0)
    live = np.flatnonzero(snap.row_identity >= 0)
    order = live[np.argsort(snap.row_identity[live], kind="stable")]
    starts = np.zeros(len(snap.names) + 1, dtype=np.int64)
    np.cumsum(snap.counts, out=starts[1:])
    n_pairs = snap.counts[own]
    out = np.empty(q.shape[0])
    lo = 0
    while lo < q.shape[0]:
        cum = np.cumsum(n_pairs[lo:])
        hi = lo + max(1, int(np.searchsorted(cum, max_pairs, side="right")))
        cnt = n_pairs[lo:hi]
        qi = np.repeat(np.arange(lo, hi), cnt)
        first = np.repeat(np.cumsum(cnt) - cnt, cnt)
        rows = order[np.repeat(starts[own[lo:hi]], cnt) + np.arange(qi.size) - first]
        cos = np.einsum("ij,ij->i", q[qi], snap.vectors[rows], dtype=np.float64)
        seg = np.cumsum(cnt) - cnt
        if by == "max":
            out[lo:hi] = np.maximum.reduceat(cos, seg)
        else:
            out[lo:hi] = np.add.reduceat(cos, seg) / cnt
        lo = hi
    return out


__all__ = ["GalleryIndex", "check_index_kind", "own_identity_scores"]
