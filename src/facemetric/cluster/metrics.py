"""Clustering quality against known identities, from the contingency table (no pair loops).

With ``n_ij`` = points of class ``i`` in cluster ``j``, class sizes ``a_i = sum_j n_ij``,
cluster sizes ``b_j = sum_i n_ij`` and ``N`` points:

* pairwise (pairs of points put together): ``TP = sum_ij C(n_ij, 2)``,
  ``precision = TP / sum_j C(b_j, 2)``, ``recall = TP / sum_i C(a_i, 2)``, F1 their harmonic
  mean. A side with no pairs at all (every cluster, or every class, a singleton) has nothing
  to get wrong and scores 1.
* BCubed (Bagga & Baldwin 1998; Amigo et al. 2009), averaged over points ``e``:
  ``P(e) = |C(e) & L(e)| / |C(e)|``, ``R(e) = |C(e) & L(e)| / |L(e)|`` with ``C(e)`` its
  cluster and ``L(e)`` its class; summing over the ``n_ij`` points of each cell,
  ``precision = (1/N) sum_ij n_ij^2 / b_j``, ``recall = (1/N) sum_ij n_ij^2 / a_i``.
* ``nmi``: scikit-learn's ``normalized_mutual_info_score`` (arithmetic normalisation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facemetric.errors import FacemetricError


def _labels(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise FacemetricError(f"{name}: expected a 1-D array of labels, got shape {a.shape}")
    if a.size == 0:
        raise FacemetricError(f"{name}: no labels")
    return a


def _contingency(labels_true: Any, labels_pred: Any):
    from sklearn.metrics.cluster import contingency_matrix

    t = _labels(labels_true, "labels_true")
    p = _labels(labels_pred, "labels_pred")
    if t.size != p.size:
        raise FacemetricError(f"labels_pred: length {p.size} does not match labels_true length {t.size}")
    c = contingency_matrix(t, p, sparse=True).tocoo()  # rows: classes, columns: clusters
    nij = c.data.astype(np.float64)
    a = np.bincount(c.row, weights=nij, minlength=c.shape[0])
    b = np.bincount(c.col, weights=nij, minlength=c.shape[1])
    return c.row, c.col, nij, a, b


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def pairwise_scores(labels_true: Any, labels_pred: Any) -> dict[str, float]:
    """Pairwise precision, recall and F1 (see the module docstring)."""
    _, _, nij, a, b = _contingency(labels_true, labels_pred)
    tp = float(np.sum(nij * (nij - 1) / 2))
    pred_pairs = float(np.sum(b * (b - 1) / 2))
    true_pairs = float(np.sum(a * (a - 1) / 2))
    p = tp / pred_pairs if pred_pairs else 1.0
    r = tp / true_pairs if true_pairs else 1.0
    return {"precision": p, "recall": r, "f1": _f1(p, r)}


def bcubed_scores(labels_true: Any, labels_pred: Any) -> dict[str, float]:
    """BCubed precision, recall and F1 (see the module docstring)."""
    rows, cols, nij, a, b = _contingency(labels_true, labels_pred)
    n = float(nij.sum())
    p = float(np.sum(nij**2 / b[cols]) / n)
    r = float(np.sum(nij**2 / a[rows]) / n)
    return {"precision": p, "recall": r, "f1": _f1(p, r)}


def clustering_metrics(labels_true: Any, labels_pred: Any) -> dict[str, Any]:
    """Pairwise and BCubed precision/recall/F1, NMI and cluster counts, as plain floats/ints."""
    from sklearn.metrics import normalized_mutual_info_score

    pw = pairwise_scores(labels_true, labels_pred)
    bc = bcubed_scores(labels_true, labels_pred)
    t, p = np.asarray(labels_true), np.asarray(labels_pred)
    _, sizes = np.unique(p, return_counts=True)
    return {
        "pairwise_precision": pw["precision"],
        "pairwise_recall": pw["recall"],
        "pairwise_f1": pw["f1"],
        "bcubed_precision": bc["precision"],
        "bcubed_recall": bc["recall"],
        "bcubed_f1": bc["f1"],
        "nmi": float(normalized_mutual_info_score(t, p)),
        "num_clusters": int(sizes.size),
        "num_singletons": int(np.count_nonzero(sizes == 1)),
        "num_classes": int(np.unique(t).size),
        "num_points": int(t.size),
    }


__all__ = ["bcubed_scores", "clustering_metrics", "pairwise_scores"]
