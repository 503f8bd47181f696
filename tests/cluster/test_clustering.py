"""k-NN graph and clustering: references on small data, separable clusters, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components as scipy_cc
from sklearn.cluster import AgglomerativeClustering

from facemetric.cluster import (
    agglomerative,
    chinese_whispers,
    cluster_embeddings,
    clustering_metrics,
    connected_components,
    knn_search,
    similarity_graph,
)
from facemetric.cluster.graph import relabel
from facemetric.errors import FacemetricError


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = ["exact"] + (["faiss"] if _has_faiss() else [])


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(n_ids=30, per=8, dim=32, noise=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_ids, dim)))
    y = np.repeat(np.arange(n_ids), per)
    x = unit(centres[y] + noise * rng.normal(size=(y.size, dim)) / np.sqrt(dim))
    return x, y


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_matches_brute_force_and_excludes_self(backend):
    rng = np.random.default_rng(1)
    x = unit(rng.normal(size=(200, 12)))
    x[5] = x[4]  # a duplicate: self must still be excluded, the twin kept
    knn = knn_search(x, 6, backend=backend)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    ref = -np.sort(-s, axis=1)[:, :6]
    np.testing.assert_allclose(knn.sims, ref, atol=1e-5)
    assert (knn.idx != np.arange(200)[:, None]).all()
    assert knn.idx[4, 0] == 5 and knn.idx[5, 0] == 4
    small = knn_search(x[:4], 10, backend=backend)  # fewer points than k
    assert (small.idx[:, 3:] == -1).all() and (small.idx[:, :3] >= 0).all()


def test_similarity_graph_is_symmetric_thresholded():
    x, _ = blobs(10, 5)
    knn = knn_search(x, 4, backend="exact")
    g = similarity_graph(knn, 0.3)
    assert (abs(g - g.T)).max() == 0 and g.diagonal().sum() == 0
    r, c = g.nonzero()
    np.testing.assert_allclose(np.asarray(g[r, c]).ravel(), np.sum(x[r] * x[c], 1), atol=1e-5)
    assert (np.sum(x[r] * x[c], 1) >= 0.3 - 1e-6).all()
    # every kept k-NN edge is in the graph
    ok = knn.sims >= 0.3
    rows = np.repeat(np.arange(len(x)), 4).reshape(-1, 4)[ok]
    assert (np.asarray(g[rows, knn.idx[ok]]).ravel() > 0).all()


def test_components_equal_threshold_graph_components_with_all_neighbours():
    rng = np.random.default_rng(2)
    x = unit(rng.normal(size=(60, 6)))
    labels = cluster_embeddings(x, "components", threshold=0.6, k=59, backend="exact")
    adj = (x @ x.T) >= 0.6
    _, ref = scipy_cc(adj.astype(int), directed=False)
    np.testing.assert_array_equal(labels, relabel(ref))


def chinese_whispers_sequential(n, edges, seed, max_iter=100, weighted=True, self_weight=0.0):
    """Biemann's sequential algorithm, one node at a time, in the order the vectorised version
    draws with batches=n (each batch one node)."""
    nbrs = [dict() for _ in range(n)]
    for i, j, w in edges:
        nbrs[i][j] = w if weighted else 1.0
        nbrs[j][i] = w if weighted else 1.0
    labels = list(range(n))
    rng = np.random.default_rng(seed)
    for _ in range(max_iter):
        perm = rng.permutation(n)
        changed = 0
        for i in perm:
            votes = {}
            if self_weight > 0:
                votes[labels[i]] = self_weight
            for j, w in nbrs[i].items():
                votes[labels[j]] = votes.get(labels[j], 0.0) + w
            if not votes:
                continue
            best = max(votes.values())
            new = min(lab for lab, v in votes.items() if v == best)
            changed += new != labels[i]
            labels[i] = new
        if changed == 0:
            break
    return relabel(np.array(labels))


@pytest.mark.parametrize("weighted,self_weight", [(True, 0.0), (False, 1.0)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chinese_whispers_equals_sequential_reference(seed, weighted, self_weight):
    x, _ = blobs(6, 6, dim=8, noise=1.2, seed=seed)  # overlapping: nontrivial votes
    knn = knn_search(x, 5, backend="exact")
    g = similarity_graph(knn, 0.2)
    gc = g.tocoo()
    edges = [(i, j, w) for i, j, w in zip(gc.row, gc.col, gc.data, strict=True) if i < j]
    ref = chinese_whispers_sequential(len(x), edges, seed, weighted=weighted, self_weight=self_weight)
    got = chinese_whispers(g, seed=seed, batches=len(x), weighted=weighted, self_weight=self_weight)
    np.testing.assert_array_equal(got, ref)


def test_agglomerative_equals_full_average_linkage_with_all_neighbours():
    x, _ = blobs(8, 6, dim=16, noise=1.0, seed=3)
    thr = 0.35
    labels = cluster_embeddings(x, "agglomerative", threshold=thr, k=len(x) - 1, backend="exact")
    ref = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                  distance_threshold=1 - thr).fit_predict(x.astype(np.float64))
    np.testing.assert_array_equal(labels, relabel(ref))


def test_agglomerative_batching_does_not_change_the_result():
    x, _ = blobs(20, 6, dim=16, noise=0.8, seed=5)
    knn = knn_search(x, 8, backend="exact")
    assert connected_components(similarity_graph(knn, 0.6)).max() + 1 == 10  # 10 components
    one = agglomerative(x, knn, 0.6, max_batch_nodes=10**6, max_batch_components=10**6)
    many = agglomerative(x, knn, 0.6, max_batch_nodes=12, max_batch_components=3)
    np.testing.assert_array_equal(one, many)
    assert one.max() + 1 == 41


def test_agglomerative_never_merges_across_disconnected_parts():
    x, y = blobs(12, 5, dim=64, noise=0.3, seed=4)
    labels = cluster_embeddings(x, "agglomerative", threshold=0.5, k=4, backend="exact")
    knn = knn_search(x, 4, backend="exact")
    comp = connected_components(similarity_graph(knn, -1.0))
    for c in np.unique(labels):
        assert np.unique(comp[labels == c]).size == 1
    assert clustering_metrics(y, labels)["pairwise_f1"] == 1.0


@pytest.mark.parametrize("method", ["chinese-whispers", "components", "agglomerative"])
def test_separable_clusters_recovered(method):
    x, y = blobs(25, 8, dim=64, noise=0.5)
    outlier = unit(np.random.default_rng(7).normal(size=(1, 64)))
    xs, ys = np.r_[x, outlier], np.r_[y, 999]
    labels = cluster_embeddings(xs, method, threshold=0.5, k=10, seed=0)
    m = clustering_metrics(ys, labels)
    assert m["pairwise_f1"] == 1.0 and m["bcubed_f1"] == 1.0 and m["num_clusters"] == 26
    assert np.count_nonzero(labels == labels[-1]) == 1  # the outlier is its own cluster
    assert labels.dtype == np.int64 and labels.min() == 0 and labels.max() == 25
    np.testing.assert_array_equal(labels, cluster_embeddings(xs, method, threshold=0.5, k=10, seed=0))


def test_errors():
    x, _ = blobs(3, 3)
    with pytest.raises(FacemetricError):
        cluster_embeddings(x, "kmeans")
    with pytest.raises(FacemetricError):
        cluster_embeddings(x, threshold=2.0)
    with pytest.raises(FacemetricError):
        cluster_embeddings(x, k=0)
    with pytest.raises(FacemetricError):
        cluster_embeddings(x, "agglomerative", threshold=-0.1)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(FacemetricError) as e:
        cluster_embeddings(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(FacemetricError):
        knn_search(x, 3, backend="annoy")
