"""The k-NN similarity graph of a set of embeddings, and clustering on it.

No ``N x N`` matrix is ever formed: the ``k`` nearest neighbours of every point come from
faiss (``IndexFlatIP``, exact, or ``IndexIVFFlat``, approximate) or from the chunked exact
top-``k`` of :func:`facemetric.index.search.topk_inner_product` (BLAS matmul in blocks of
at most 16M scores, torch ``topk``); memory is ``O(N k)``.

Graph: ``W[i, j] = cos(x_i, x_j)`` for ``j`` among the ``k`` nearest neighbours of ``i`` (or
``i`` among those of ``j``: symmetrised with ``max``) when ``cos >= threshold``; no self loops.

* :func:`connected_components` -- the components of ``W`` (``scipy.sparse.csgraph``): the
  single-linkage clustering of the graph cut at ``threshold``.
* :func:`chinese_whispers` -- Biemann (2006), the algorithm of dlib's ``chinese_whispers``
  (used by face_recognition): every node starts in its own class and repeatedly takes the
  class with the largest total edge weight among its neighbours (``sum_j W[i, j] [l_j = c]``;
  ties -> smallest label). Biemann's graph has no self loops (``self_weight=0``, the default
  here); dlib's ``chinese_whispers_clustering`` counts every edge as 1 and its ``j >= i``
  edge list includes a self loop (``weighted=False, self_weight=1`` reproduces that rule).
  dlib updates one random node at a time; here an iteration visits all nodes in a random
  order split into ``batches`` groups, each group updated at once from the current labels
  (vectorised over the group's edges with one sort; a few groups avoid the oscillations of
  fully synchronous updates). Stops when an iteration changes nothing, or after ``max_iter``.
* :func:`agglomerative` -- scikit-learn ``AgglomerativeClustering(linkage="average",
  metric="cosine", connectivity=<k-NN graph>, distance_threshold=1 - threshold)``: clusters
  merge only along k-NN edges, the distance between two clusters being sklearn's average of
  the cosine distances on the edges that join them.

  sklearn "completes" a disconnected connectivity graph by computing distances between all
  pairs of components (``O(N^2)`` work and a Python loop over component pairs). To keep a
  connected graph without that, one extra point orthogonal to all data (a new dimension) is
  linked to one node of every component: its cosine distance to everything is exactly 1 >=
  ``1 - threshold`` (``threshold >= 0``), so no merge below the cut ever involves it (an
  average of distances >= the cut stays >= the cut), and it is dropped from the labels.
  Components of the thresholded graph are clustered independently, in batches (see
  :func:`agglomerative`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from facemetric.errors import FacemetricError
from facemetric.index.knn import KNN_BACKENDS, KnnResult, knn_search
from facemetric.index.search import as_embeddings

METHODS = ("chinese-whispers", "components", "agglomerative")


def similarity_graph(knn: KnnResult, threshold: float) -> sp.csr_matrix:
    """Symmetric CSR ``[N, N]`` of the k-NN edges with cosine ``>= threshold`` (no diagonal;
    an edge found from both ends appears once; zero weights are kept as explicit entries)."""
    n = knn.idx.shape[0]
    ok = (knn.idx >= 0) & (knn.sims >= threshold)
    rows = np.broadcast_to(np.arange(n)[:, None], knn.idx.shape)[ok]
    cols = knn.idx[ok]
    w = knn.sims[ok].astype(np.float64)
    r2, c2, w2 = np.r_[rows, cols], np.r_[cols, rows], np.r_[w, w]
    key = r2 * n + c2
    order = np.argsort(key, kind="stable")
    key, w2 = key[order], w2[order]
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, np.int64)
    data = np.maximum.reduceat(w2, start) if key.size else np.zeros(0)
    ukey = key[start]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(ukey // n, minlength=n), out=indptr[1:])
    return sp.csr_matrix((data, ukey % n, indptr), shape=(n, n))


def relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered ``0..C-1`` in order of first appearance."""
    uniq, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(uniq.size)
    return rank[inv.ravel()]


def connected_components(graph: sp.spmatrix) -> np.ndarray:
    """Connected components of the (symmetric) graph: label per node, singletons included."""
    from scipy.sparse.csgraph import connected_components as cc

    _, labels = cc(graph, directed=False)
    return relabel(labels)


def chinese_whispers(graph: sp.spmatrix, seed: int = 0, max_iter: int = 100, batches: int = 8,
                     self_weight: float = 0.0, weighted: bool = True) -> np.ndarray:
    """Chinese whispers on a symmetric weighted graph (see the module docstring).

    ``weighted=False`` counts every edge as 1 (dlib's ``chinese_whispers_clustering``, whose
    edges all have weight 1); ``self_weight`` is the weight of a node's vote for its own label.
    """
    g = sp.coo_matrix(graph)
    n = g.shape[0]
    if max_iter < 1 or batches < 1:
        raise FacemetricError(f"max_iter and batches: expected >= 1, got {max_iter} and {batches}")
    off = g.row != g.col
    row, col = g.row[off].astype(np.int64), g.col[off].astype(np.int64)
    w = g.data[off].astype(np.float64) if weighted else np.ones(int(off.sum()))
    if self_weight > 0:
        row, col = np.r_[row, np.arange(n)], np.r_[col, np.arange(n)]
        w = np.r_[w, np.full(n, float(self_weight))]
    labels = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    group = np.empty(n, dtype=np.int64)
    for _ in range(max_iter):
        perm = rng.permutation(n)
        group[perm] = np.arange(n) * batches // max(n, 1)
        edge_group = group[row]
        by_group = np.argsort(edge_group, kind="stable")
        bounds = np.searchsorted(edge_group[by_group], np.arange(batches + 1))
        changed = 0
        for b in range(batches):
            sel = by_group[bounds[b] : bounds[b + 1]]
            if sel.size == 0:
                continue
            r, lab, ww = row[sel], labels[col[sel]], w[sel]
            key = r * n + lab
            order = np.argsort(key, kind="stable")
            key, ww = key[order], ww[order]
            start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
            seg_key = key[start]
            seg_w = np.add.reduceat(ww, start)
            seg_r = seg_key // n
            seg_lab = seg_key % n
            r_start = np.flatnonzero(np.r_[True, seg_r[1:] != seg_r[:-1]])
            best_w = np.maximum.reduceat(seg_w, r_start)
            best_w = np.repeat(best_w, np.diff(np.r_[r_start, seg_r.size]))
            cand = np.flatnonzero(seg_w == best_w)
            nodes, first = np.unique(seg_r[cand], return_index=True)  # smallest label wins ties
            new = seg_lab[cand[first]]
            changed += int(np.count_nonzero(labels[nodes] != new))
            labels[nodes] = new
        if changed == 0:
            break
    return relabel(labels)


def agglomerative(emb: Any, knn: KnnResult, threshold: float, max_batch_nodes: int = 4096,
                  max_batch_components: int = 64) -> np.ndarray:
    """Average-linkage agglomerative clustering (cosine) restricted to the k-NN graph, cut at
    cosine distance ``1 - threshold`` (see the module docstring).

    Two points can only end in one cluster if a path of edges with cosine ``>= threshold``
    joins them (a merge needs an average edge distance below the cut, so at least one edge
    below it), so the problem splits into the components of the thresholded graph, with the
    k-NN edges inside each (any cosine: they enter the averages). Components are packed into
    batches of at most ``max_batch_nodes`` points / ``max_batch_components`` components, each
    batch one scikit-learn call, made connected by the orthogonal hub point. (One call with one
    hub for everything would make sklearn's full tree merge the hub with every component in
    turn, each merge costing the hub's degree: quadratic in the number of components.)
    """
    from scipy.sparse.csgraph import connected_components as cc
    from sklearn.cluster import AgglomerativeClustering

    if threshold < 0:
        raise FacemetricError(
            f"threshold: agglomerative clustering needs a cosine threshold >= 0, got {threshold}"
        )
    x = as_embeddings(emb, "embeddings").astype(np.float64)
    n, d = x.shape
    _, comp = cc(similarity_graph(knn, threshold), directed=False)
    ok = knn.idx >= 0
    rows = np.broadcast_to(np.arange(n)[:, None], knn.idx.shape)[ok]
    cols = knn.idx[ok]
    inside = comp[rows] == comp[cols]
    rows, cols = rows[inside], cols[inside]
    sizes = np.bincount(comp)
    labels = np.arange(n, dtype=np.int64)  # singletons keep their own label
    multi = np.flatnonzero(sizes >= 2)
    # nodes grouped by component, components in size order, packed greedily into batches
    multi = multi[np.argsort(sizes[multi], kind="stable")]
    order = np.argsort(comp, kind="stable")
    starts = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    by_comp = np.argsort(comp[rows], kind="stable")  # edges grouped by component
    rows, cols = rows[by_comp], cols[by_comp]
    e_starts = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(comp[rows], minlength=sizes.size), out=e_starts[1:])
    local = np.empty(n, dtype=np.int64)
    batch: list[int] = []
    count = 0
    next_label = n
    for pos, c in enumerate(multi):
        batch.append(int(c))
        count += int(sizes[c])
        last = pos == multi.size - 1
        if not (last or count + sizes[multi[pos + 1]] > max_batch_nodes
                or len(batch) >= max_batch_components):
            continue
        nodes = np.concatenate([order[starts[b] : starts[b + 1]] for b in batch])
        m = nodes.size
        local[nodes] = np.arange(m)
        sel = np.concatenate([np.arange(e_starts[b], e_starts[b + 1]) for b in batch])
        r, cl = local[rows[sel]], local[cols[sel]]
        hub_edges = len(batch) > 1
        size = m + 1 if hub_edges else m
        conn = sp.coo_matrix((np.ones(r.size), (r, cl)), shape=(size, size)).tocsr()
        xa = np.zeros((size, d + 1))
        xa[:m, :d] = x[nodes]
        if hub_edges:
            reps = local[np.array([order[starts[b]] for b in batch])]
            hub = sp.coo_matrix((np.ones(reps.size), (np.full(reps.size, m), reps)), shape=(size, size))
            conn = conn + hub
            xa[m, d] = 1.0  # the hub: orthogonal to every point, cosine distance 1
        conn = ((conn + conn.T) > 0).astype(np.float64)
        model = AgglomerativeClustering(
            n_clusters=None,
            metric="cosine",
            linkage="average",
            connectivity=conn,
            distance_threshold=1.0 - float(threshold),
            compute_full_tree=True,
        )
        got = model.fit_predict(xa)[:m]
        labels[nodes] = next_label + got
        next_label += int(got.max()) + 1
        batch, count = [], 0
    return relabel(labels)


def cluster_embeddings(
    emb: Any,
    method: str = "chinese-whispers",
    threshold: float = 0.5,
    k: int = 20,
    seed: int = 0,
    *,
    backend: str = "auto",
    max_iter: int = 100,
    knn: KnnResult | None = None,
) -> np.ndarray:
    """Cluster embeddings ``[N, D]`` without labels: ``labels [N]`` (``0..C-1`` in order of
    first appearance; a point with no edge is its own cluster).

    ``threshold``: cosine similarity an edge needs (``1 - threshold`` is the cosine distance
    cut for ``agglomerative``); for a facemetric card the best-accuracy threshold ``t``
    (squared L2) is ``1 - t / 2`` (:func:`facemetric.inference.model_card.card_similarity_threshold`).
    ``k``: neighbours per point in the k-NN graph (``backend`` as :func:`knn_search`; pass a
    precomputed ``knn`` to reuse one). ``seed`` drives chinese whispers' visiting order.
    """
    if method not in METHODS:
        raise FacemetricError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise FacemetricError(f"threshold: expected a number, got {threshold!r}") from None
    if not -1.0 <= threshold <= 1.0:
        raise FacemetricError(f"threshold: expected a cosine similarity in [-1, 1], got {threshold}")
    if knn is None:
        knn = knn_search(emb, k, backend=backend, seed=seed)
    else:
        n = np.shape(emb)[0]
        if knn.idx.shape[0] != n:
            raise FacemetricError(f"knn: computed for {knn.idx.shape[0]} points, got {n} embeddings")
    if method == "agglomerative":
        return agglomerative(emb, knn, threshold)
    graph = similarity_graph(knn, threshold)
    if method == "components":
        return connected_components(graph)
    return chinese_whispers(graph, seed=seed, max_iter=max_iter)


__all__ = [
    "KNN_BACKENDS",
    "METHODS",
    "KnnResult",
    "agglomerative",
    "chinese_whispers",
    "cluster_embeddings",
    "connected_components",
    "knn_search",
    "relabel",
    "similarity_graph",
]
