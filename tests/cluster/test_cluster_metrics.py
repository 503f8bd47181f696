"""Clustering metrics from the contingency table against pair enumeration / per-element loops."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from facemetric.cluster import bcubed_scores, clustering_metrics, pairwise_scores
from facemetric.errors import FacemetricError


def pairs_reference(t, p):
    tp = fp = fn = 0
    for i, j in combinations(range(len(t)), 2):
        same_t, same_p = t[i] == t[j], p[i] == p[j]
        tp += same_t and same_p
        fp += same_p and not same_t
        fn += same_t and not same_p
    prec = tp / (tp + fp) if tp + fp else 1.0
    rec = tp / (tp + fn) if tp + fn else 1.0
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def bcubed_reference(t, p):
    precs, recs = [], []
    for e in range(len(t)):
        cluster = [x for x in range(len(t)) if p[x] == p[e]]
        klass = [x for x in range(len(t)) if t[x] == t[e]]
        both = [x for x in cluster if t[x] == t[e]]
        precs.append(len(both) / len(cluster))
        recs.append(len(both) / len(klass))
    prec, rec = float(np.mean(precs)), float(np.mean(recs))
    return prec, rec, 2 * prec * rec / (prec + rec)


@pytest.mark.parametrize("seed", range(8))
def test_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    t = rng.integers(0, int(rng.integers(1, 10)), size=n)
    p = rng.integers(0, int(rng.integers(1, 12)), size=n) * 7 - 3  # arbitrary label values
    if seed % 3 == 0:
        p = np.where(rng.random(n) < 0.7, t, p)  # mostly right
    pw = pairwise_scores(t, p)
    assert (pw["precision"], pw["recall"], pw["f1"]) == pytest.approx(pairs_reference(t, p))
    bc = bcubed_scores(t, p)
    assert (bc["precision"], bc["recall"], bc["f1"]) == pytest.approx(bcubed_reference(t, p))
    m = clustering_metrics([f"c{x}" for x in t], p)
    assert m["nmi"] == pytest.approx(normalized_mutual_info_score(t, p))
    assert m["num_clusters"] == len(set(p)) and m["num_classes"] == len(set(t))
    assert m["num_singletons"] == sum(list(p).count(x) == 1 for x in set(p))


def test_edge_cases():
    t = np.array([0, 0, 1, 1])
    perfect = clustering_metrics(t, [5, 5, 9, 9])
    assert perfect["pairwise_f1"] == perfect["bcubed_f1"] == perfect["nmi"] == 1.0
    singletons = pairwise_scores(t, [0, 1, 2, 3])
    assert singletons == {"precision": 1.0, "recall": 0.0, "f1": 0.0}
    one = bcubed_scores(t, [0, 0, 0, 0])
    assert one["recall"] == 1.0 and one["precision"] == 0.5
    all_single = pairwise_scores([0, 1, 2], [0, 1, 2])
    assert all_single["f1"] == 1.0
    with pytest.raises(FacemetricError):
        pairwise_scores([0, 1], [0, 1, 2])
    with pytest.raises(FacemetricError):
        bcubed_scores([], [])
