"""Nearest vectors and identities by cosine similarity, exact and chunked (never a queries x images matrix
larger than a chunk), with an optional faiss index.

All vectors are L2-normalised, so the inner product is the cosine similarity and the squared
Euclidean distance is ``||q - x||^2 = 2 - 2 cos(q, x)`` (reported beside every score).

Identity scores (``by``):

* ``"max"``: ``S(q, c) = max_{x in c} cos(q, x)``. The top-``k`` identities are exactly the
  first ``k`` distinct identities of the image ranking, so the image index is searched for the
  top ``k'`` images and ``k'`` doubled (only for the queries that need it) until every query
  has ``min(k, identities)`` distinct ones -- exact for the exact index.
* ``"mean"``: ``S(q, c) = mean_{x in c} cos(q, x) = q . m_c`` with ``m_c = mean_{x in c} x``
  (the unnormalised centroid; linearity of the inner product). The centroids come from one
  scatter-add of the image vectors over their identity ids (``index_add_``), so no identities
  x images loop exists; then a chunked top-``k`` over the centroids. ``2 - 2 S`` is the mean
  squared distance from ``q`` to the identity's images.

Indexes: :class:`ExactIndex` (BLAS matmul in chunks + torch ``topk`` merging, exact) and
:class:`FaissIndex` (``IndexFlatIP``, exact; or ``IndexIVFFlat`` on the inner product,
approximate, ``nprobe`` lists visited). Rows marked dead (removed images) are masked out.

This is the low-level vector search every application shares (the gallery's 1:N search,
identification metrics, the clustering k-NN graph); it depends only on numpy, torch, faiss
(optional) and :mod:`facemetric.errors`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from facemetric.errors import FacemetricError

INDEX_KINDS = ("auto", "exact", "faiss", "faiss-ivf")
AGGREGATIONS = ("max", "mean")
CHUNK_ELEMENTS = 1 << 24  # 16M float32 = 64 MiB per score block


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def as_embeddings(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """``x`` as C-contiguous float32 ``[n, D]`` L2-normalised rows (a 1-D vector is one row).

    One-line errors for a wrong shape or dimension, non-finite values and zero vectors.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().float().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):
        raise FacemetricError(f"{name}: expected an array, got {type(x).__name__}") from None
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise FacemetricError(f"{name}: expected a 2-D array [n, dim], got shape {a.shape}")
    if a.shape[0] == 0:
        raise FacemetricError(f"{name}: no embeddings")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise FacemetricError(f"{name}: expected real numbers, got dtype {a.dtype}")
    if dim is not None and a.shape[1] != dim:
        raise FacemetricError(f"{name}: expected dimension {dim}, got {a.shape[1]} (shape {a.shape})")
    a = a.astype(np.float64 if a.dtype == np.float64 else np.float32, copy=False)
    finite = np.isfinite(a).all(axis=1)
    if not finite.all():
        raise FacemetricError(f"{name}: row {int(np.flatnonzero(~finite)[0])} contains NaN or inf")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if (norms == 0).any():
        row = int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise FacemetricError(f"{name}: row {row} is a zero vector (no direction to compare)")
    return np.ascontiguousarray(a / norms, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# exact top-k by chunked matrix products
# --------------------------------------------------------------------------------------------


def topk_inner_product(
    queries: np.ndarray,
    vectors: np.ndarray,
    k: int,
    bias: np.ndarray | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of ``queries @ vectors.T (+ bias)`` per query: ``(scores, rows)`` ``[Q, k]``.

    Sorted by decreasing score. Blocks of at most ``chunk_elements`` scores (queries x rows)
    are computed by one BLAS matrix product (NumPy's ``matmul`` into a reused buffer: on CPU
    it beats ``torch.matmul`` for these thin shapes) and their top-``k`` (``torch.topk``) merged
    with the running top-``k``. ``bias`` (``[N]``, 0 or ``-inf``) masks rows; masked or missing
    entries come back as score ``-inf``, row -1.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    nq, n = q.shape[0], x.shape[0]
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    out_r = np.full((nq, k), -1, dtype=np.int64)
    if n == 0 or k == 0:
        return out_s, out_r
    kk = min(k, n)
    q_rows = max(1, min(nq, chunk_elements // min(n, 65536)))
    x_rows = max(kk, chunk_elements // q_rows)
    buf = np.empty((min(q_rows, nq), min(x_rows, n)), dtype=np.float32)
    with torch.inference_mode():
        for q0 in range(0, nq, q_rows):
            qb = q[q0 : q0 + q_rows]
            best_s = best_r = None
            for r0 in range(0, n, x_rows):
                xb = x[r0 : r0 + x_rows]
                s = buf[: qb.shape[0], : xb.shape[0]]
                if qb.shape[0] == 1:  # one query: gemv is about twice as fast as gemm
                    np.matmul(xb, qb[0], out=s[0])
                else:
                    np.matmul(qb, xb.T, out=s)
                if b is not None:
                    s += b[r0 : r0 + x_rows]
                ts, tr = torch.from_numpy(s).topk(min(kk, s.shape[1]), dim=1)
                tr += r0
                if best_s is None:
                    best_s, best_r = ts, tr
                else:
                    cs, cr = torch.cat([best_s, ts], 1), torch.cat([best_r, tr], 1)
                    best_s, pos = cs.topk(kk, dim=1)
                    best_r = cr.gather(1, pos)
            out_s[q0 : q0 + q_rows, :kk] = best_s.numpy()
            out_r[q0 : q0 + q_rows, :kk] = best_r.numpy()
    out_r[~np.isfinite(out_s)] = -1
    return out_s, out_r


class ExactIndex:
    """Exact inner-product search over ``vectors`` (:func:`topk_inner_product`)."""

    kind = "exact"

    def __init__(self, vectors: np.ndarray, live: np.ndarray | None = None):
        self.vectors = vectors
        self.set_live(live)

    def set_live(self, live: np.ndarray | None) -> None:
        self.bias = None
        if live is not None and not live.all():
            self.bias = np.where(live, 0.0, -np.inf).astype(np.float32)

    @property
    def ntotal(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return topk_inner_product(queries, self.vectors, k, self.bias)


def ivf_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: ``sqrt(n)`` (k-means training stays seconds on a
    small CPU), with at least 39 training points per list."""
    return int(max(1, min(np.sqrt(n), n // 39)))


class FaissIndex:
    """faiss ``IndexFlatIP`` (``kind="flat"``, exact) or ``IndexIVFFlat`` (``kind="ivf"``:
    ``sqrt(N)`` lists trained on at most 64 points per list, ``nprobe`` of them visited per
    query, default 1/8; approximate)."""

    def __init__(self, index: Any, kind: str, live: np.ndarray | None = None, nprobe: int | None = None):
        self.index = index
        self.kind = kind
        self.live = None
        self.set_live(live)
        if kind == "ivf":
            self.index.nprobe = int(min(nprobe or max(1, index.nlist // 8), index.nlist))

    @classmethod
    def build(cls, vectors: np.ndarray, kind: str = "flat", live: np.ndarray | None = None,
              nprobe: int | None = None, seed: int = 0) -> FaissIndex:
        import faiss

        d = vectors.shape[1]
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "ivf":
            nlist = ivf_nlist(vectors.shape[0])
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            n_train = min(vectors.shape[0], 64 * nlist)
            rng = np.random.default_rng(seed)
            sample = vectors[np.sort(rng.choice(vectors.shape[0], n_train, replace=False))]
            index.train(np.ascontiguousarray(sample))
        else:
            raise FacemetricError(f"index: unknown faiss kind {kind!r}; expected flat or ivf")
        if vectors.shape[0]:
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, kind, live, nprobe)

    def set_live(self, live: np.ndarray | None) -> None:
        self.live = None if live is None or live.all() else live

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.ntotal
        kk = min(k, n)
        out_s = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
        out_r = np.full((queries.shape[0], k), -1, dtype=np.int64)
        if kk == 0:
            return out_s, out_r
        s, r = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), kk)
        if self.live is not None:
            dead = (r >= 0) & ~self.live[np.maximum(r, 0)]
            s[dead], r[dead] = -np.inf, -1
            order = np.argsort(-s, axis=1, kind="stable")  # dead entries to the end
            s, r = np.take_along_axis(s, order, 1), np.take_along_axis(r, order, 1)
        r[r < 0] = -1
        s[r < 0] = -np.inf
        out_s[:, :kk], out_r[:, :kk] = s, r
        return out_s, out_r


def build_index(vectors: np.ndarray, live: np.ndarray | None, kind: str, nprobe: int | None = None):
    """An index over ``vectors``: ``exact`` (:class:`ExactIndex`), ``faiss`` (flat), ``faiss-ivf``, or ``auto``
    (faiss flat when faiss is importable, else exact)."""
    if kind not in INDEX_KINDS:
        raise FacemetricError(f"index: expected one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = "faiss" if faiss_available() else "exact"
    if kind == "exact":
        return ExactIndex(vectors, live)
    if not faiss_available():
        raise FacemetricError(f"index: {kind!r} needs faiss (pip install faiss-cpu); use index='exact'")
    return FaissIndex.build(vectors, "ivf" if kind == "faiss-ivf" else "flat", live, nprobe)


# --------------------------------------------------------------------------------------------
# identity aggregation
# --------------------------------------------------------------------------------------------


def first_distinct(ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``ids`` ``[Q, m]`` (-1 = none): the column positions of the first ``k``
    distinct ids, ``[Q, k]`` (-1 padded), and the number of distinct ids ``[Q]``."""
    nq, m = ids.shape
    big = int(ids.max(initial=0)) + 2
    key = (np.arange(nq, dtype=np.int64)[:, None] * big + (ids + 1)).ravel()
    _, first = np.unique(key, return_index=True)  # earliest position of each (row, id)
    mask = np.zeros(nq * m, dtype=bool)
    mask[first] = True
    mask = mask.reshape(nq, m) & (ids >= 0)
    rank = np.cumsum(mask, axis=1)
    take = mask & (rank <= k)
    out = np.full((nq, k), -1, dtype=np.int64)
    qi, col = np.nonzero(take)
    out[qi, rank[qi, col] - 1] = col
    return out, mask.sum(axis=1)


def top_identities_max(
    index: Any, queries: np.ndarray, row_identity: np.ndarray, n_identities: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` identities by max cosine: ``(scores [Q, k], identity ids [Q, k])`` (-1/-inf pad).

    ``row_identity[r]`` = dense identity id of index row ``r`` (-1 = dead row).
    """
    nq = queries.shape[0]
    want = min(k, n_identities)
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    if want == 0:
        return out_s, out_i
    n = index.ntotal
    todo = np.arange(nq)
    kk = min(n, max(4 * k, 32))
    while todo.size:
        s, r = index.search(queries[todo], kk)
        ids = np.where(r >= 0, row_identity[np.maximum(r, 0)], -1)
        pos, count = first_distinct(ids, k)
        done = (count >= want) | (kk >= n)
        rows = todo[done]
        p = pos[done]
        ok = p >= 0
        pc = np.maximum(p, 0)
        out_s[rows] = np.where(ok, np.take_along_axis(s[done], pc, 1), -np.inf)
        out_i[rows] = np.where(ok, np.take_along_axis(ids[done], pc, 1), -1)
        todo = todo[~done]
        kk = min(n, kk * 4)
    return out_s, out_i


def identity_centroids(
    vectors: np.ndarray, row_identity: np.ndarray, n_identities: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(means [M, D] float32, counts [M])``: the mean image vector of every identity, by one
    scatter-add over the live rows (``row_identity >= 0``)."""
    live = row_identity >= 0
    idx = torch.from_numpy(row_identity[live].astype(np.int64))
    x = torch.from_numpy(np.ascontiguousarray(vectors[live], dtype=np.float32)).double()
    sums = torch.zeros(n_identities, vectors.shape[1], dtype=torch.float64)
    sums.index_add_(0, idx, x)
    counts = np.bincount(row_identity[live], minlength=n_identities)
    means = (sums / torch.from_numpy(np.maximum(counts, 1)).double()[:, None]).float().numpy()
    return means, counts


def top_identities_mean(
    queries: np.ndarray, centroids: np.ndarray, counts: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` identities by mean cosine (``q . centroid``); empty identities excluded."""
    bias = None if counts.all() else np.where(counts > 0, 0.0, -np.inf).astype(np.float32)
    return topk_inner_product(queries, centroids, k, bias)


def identity_score_blocks(
    queries: np.ndarray,
    vectors: np.ndarray,
    row_identity: np.ndarray,
    n_identities: int,
    by: str = "max",
    chunk_elements: int = CHUNK_ELEMENTS,
):
    """Yield ``(q0, S)`` with ``S[i, c]`` = score of query ``q0 + i`` for identity ``c``
    (float32 ``[block, M]``; ``-inf`` for an identity without images), block by block.

    ``max``: ``scatter_reduce(amax)`` of each block of image scores onto the image identities;
    ``mean``: ``queries @ centroids.T``. Memory per block: ``chunk_elements`` scores.
    """
    if by not in AGGREGATIONS:
        raise FacemetricError(f"by: expected one of {', '.join(AGGREGATIONS)}, got {by!r}")
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    m = n_identities
    q_rows = max(1, chunk_elements // max(m, 1))
    if by == "mean":
        cent, counts = identity_centroids(vectors, row_identity, m)
        c = torch.from_numpy(cent)
        empty = torch.from_numpy(counts == 0)
        for q0 in range(0, q.shape[0], q_rows):
            s = q[q0 : q0 + q_rows] @ c.T
            s[:, empty] = -np.inf
            yield q0, s.numpy()
        return
    live = row_identity >= 0
    x = torch.from_numpy(np.ascontiguousarray(vectors[live], dtype=np.float32))
    ids = torch.from_numpy(row_identity[live].astype(np.int64))
    n = x.shape[0]
    for q0 in range(0, q.shape[0], q_rows):
        qb = q[q0 : q0 + q_rows]
        s_id = torch.full((qb.shape[0], m), -np.inf)
        x_rows = max(1, chunk_elements // qb.shape[0])
        for r0 in range(0, n, x_rows):
            s = qb @ x[r0 : r0 + x_rows].T
            s_id.scatter_reduce_(1, ids[r0 : r0 + x_rows].expand(qb.shape[0], -1), s, "amax")
        yield q0, s_id.numpy()


__all__ = [
    "AGGREGATIONS",
    "INDEX_KINDS",
    "ExactIndex",
    "FaissIndex",
    "as_embeddings",
    "build_index",
    "faiss_available",
    "first_distinct",
    "identity_centroids",
    "identity_score_blocks",
    "top_identities_max",
    "top_identities_mean",
    "topk_inner_product",
]
