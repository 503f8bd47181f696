"""The ``k`` nearest neighbours of every vector of a set among the others (cosine), without an
``N x N`` matrix: faiss (``IndexFlatIP``, exact, or ``IndexIVFFlat``, approximate) or the
chunked exact top-``k`` of :func:`facemetric.index.search.topk_inner_product` (BLAS matmul in
blocks of at most 16M scores, torch ``topk``); memory is ``O(N k)``. The clustering graph of
:mod:`facemetric.cluster.graph` is built on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facemetric.errors import FacemetricError
from facemetric.index.search import FaissIndex, as_embeddings, faiss_available, topk_inner_product

KNN_BACKENDS = ("auto", "exact", "faiss", "faiss-ivf")


@dataclass(frozen=True)
class KnnResult:
    """``sims[i, j]``, ``idx[i, j]``: the ``j``-th nearest neighbour of ``i`` (self excluded;
    ``idx = -1`` where fewer than ``k`` exist)."""

    sims: np.ndarray  # float32 [N, k]
    idx: np.ndarray  # int64 [N, k]

    @property
    def k(self) -> int:
        return int(self.idx.shape[1])


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise FacemetricError(f"k: expected an integer >= 1, got {k!r}")
    return int(k)


def knn_search(emb: Any, k: int = 20, backend: str = "auto", nprobe: int | None = None,
               seed: int = 0) -> KnnResult:
    """The ``k`` nearest neighbours (cosine) of every row of ``emb`` ``[N, D]`` among the others.

    ``backend``: ``exact`` (chunked BLAS + torch topk), ``faiss`` (``IndexFlatIP``, exact), ``faiss-ivf``
    (``IndexIVFFlat``, approximate: ``nprobe`` of ``4 sqrt(N)`` lists, default 1/8 of them),
    ``auto`` (faiss when importable, else exact).
    """
    k = check_k(k)
    if backend not in KNN_BACKENDS:
        raise FacemetricError(f"backend: expected one of {', '.join(KNN_BACKENDS)}, got {backend!r}")
    x = as_embeddings(emb, "embeddings")
    n = x.shape[0]
    kq = min(k + 1, n)
    if backend == "auto":
        backend = "faiss" if faiss_available() else "exact"
    if backend == "exact":
        s, r = topk_inner_product(x, x, kq)
    else:
        if not faiss_available():
            raise FacemetricError(f"backend: {backend!r} needs faiss (pip install faiss-cpu); use 'exact'")
        kind = "ivf" if backend == "faiss-ivf" and n >= 39 * 2 else "flat"
        index = FaissIndex.build(x, kind, nprobe=nprobe, seed=seed)
        s, r = [], []
        for q0 in range(0, n, 8192):
            a, b = index.search(x[q0 : q0 + 8192], kq)
            s.append(a)
            r.append(b)
        s, r = np.concatenate(s), np.concatenate(r)
    # drop self (wherever ties put it), keep the first k others
    keep = (r != np.arange(n)[:, None]) & (r >= 0)
    rank = np.cumsum(keep, axis=1)
    keep &= rank <= k
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    idx = np.full((n, k), -1, dtype=np.int64)
    qi, col = np.nonzero(keep)
    dst = rank[qi, col] - 1
    sims[qi, dst] = s[qi, col]
    idx[qi, dst] = r[qi, col]
    return KnnResult(sims, idx)


__all__ = ["KNN_BACKENDS", "KnnResult", "check_k", "knn_search"]
