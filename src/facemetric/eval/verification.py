"""Face verification on pairs (the LFW protocol of davidsandberg/facenet), sort-based.

Convention everywhere: a pair is predicted *same* when ``distance < threshold`` (strict), as in
facenet. ``folds`` is a 1-D integer array giving each pair's fold id; every fold in turn is the
test fold and the other folds are the training folds on which its threshold is chosen.
No function here loops over a threshold grid: thresholds come from the sorted distances (the
continuous limit of facenet's ``np.arange`` grids; see each function).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from facemetric.data.protocols import consecutive_folds
from facemetric.distances import DISTANCES, pair_scores  # noqa: F401  (public re-export)
from facemetric.distances import to_numpy as _to_numpy
from facemetric.errors import FacemetricError

PLACEMENTS = ("midpoint", "lowest")
FAR_LEVELS = (1e-1, 1e-2, 1e-3, 1e-4)


# --------------------------------------------------------------------------------------------
# input checks (shared with reference.py)
# --------------------------------------------------------------------------------------------


def _check_distances(distances: Any, name: str = "distances") -> np.ndarray:
    d = _to_numpy(distances, name)
    if d.ndim != 1:
        raise FacemetricError(f"{name}: expected a 1-D array [num_pairs], got shape {d.shape}")
    if d.size == 0:
        raise FacemetricError(f"{name}: no pairs")
    if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise FacemetricError(f"{name}: expected real numbers, got dtype {d.dtype}")
    d = d.astype(np.float64)
    if not np.isfinite(d).all():
        entry = int(np.flatnonzero(~np.isfinite(d))[0])
        raise FacemetricError(f"{name}: pair {entry} is NaN or inf")
    return d


def _check_issame(issame: Any, n: int) -> np.ndarray:
    g = _to_numpy(issame, "issame")
    if g.ndim != 1:
        raise FacemetricError(f"issame: expected a 1-D array [num_pairs], got shape {g.shape}")
    if g.size != n:
        raise FacemetricError(f"issame: length {g.size} does not match the {n} pairs")
    if g.dtype != np.bool_:
        if not (np.issubdtype(g.dtype, np.integer) or np.issubdtype(g.dtype, np.floating)):
            raise FacemetricError(f"issame: expected booleans or 0/1, got dtype {g.dtype}")
        bad = g[(g != 0) & (g != 1)]
        if bad.size:
            raise FacemetricError(f"issame: expected booleans or 0/1, got the value {bad[0]!r}")
        g = g == 1
    n_gen = int(np.count_nonzero(g))
    if n_gen == 0 or n_gen == n:
        raise FacemetricError(
            f"issame: needs at least one genuine and one impostor pair, got {n_gen} genuine "
            f"and {n - n_gen} impostor"
        )
    return g


def _check_folds(folds: Any, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold id per pair and the sorted distinct ids; every training split has both classes."""
    f = _to_numpy(folds, "folds")
    if f.ndim != 1 or f.size != g.size:
        raise FacemetricError(
            f"folds: expected one fold id per pair (length {g.size}), got shape {f.shape}"
        )
    if not np.issubdtype(f.dtype, np.integer):
        raise FacemetricError(f"folds: expected integer fold ids, got dtype {f.dtype}")
    ids = np.unique(f)
    if ids.size < 2:
        raise FacemetricError(f"folds: expected at least 2 folds, got {ids.size}")
    pos = np.searchsorted(ids, f)
    n_gen = np.bincount(pos[g], minlength=ids.size)
    n_all = np.bincount(pos, minlength=ids.size)
    gen_out = n_gen.sum() - n_gen
    imp_out = (g.size - n_gen.sum()) - (n_all - n_gen)
    for fid, go, io in zip(ids, gen_out, imp_out, strict=True):
        if go == 0 or io == 0:
            cls = "genuine" if go == 0 else "impostor"
            raise FacemetricError(
                f"folds: the pairs outside fold {fid} contain no {cls} pair; every training "
                "split needs both classes"
            )
    return f, ids


def _check_test_folds(f: np.ndarray, ids: np.ndarray, g: np.ndarray) -> None:
    """VAL and FAR of a test fold need both classes in it."""
    for fid in ids:
        gt = g[f == fid]
        n_gen = int(np.count_nonzero(gt))
        if n_gen == 0 or n_gen == gt.size:
            cls = "genuine" if n_gen == 0 else "impostor"
            raise FacemetricError(
                f"folds: fold {fid} has no {cls} pair, so its VAL/FAR is undefined"
            )


def _check_far(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise FacemetricError(f"{name}: expected a number in (0, 1), got {value!r}") from exc
    if not 0.0 < v < 1.0:
        raise FacemetricError(f"{name}: expected a number in (0, 1), got {value!r}")
    return v


def _prepare(distances: Any, issame: Any, folds: Any):
    d = _check_distances(distances)
    g = _check_issame(issame, d.size)
    f, ids = _check_folds(folds, g)
    return d, g, f, ids


def _consecutive_folds(n: int, n_folds: Any) -> np.ndarray:
    """Default fold ids: :func:`facemetric.data.protocols.consecutive_folds` (the one
    splitter: sklearn ``KFold(shuffle=False)`` sizes), after the evaluator's own checks
    (at least 2 folds, and no more folds than pairs)."""
    if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise FacemetricError(f"n_folds: expected an integer >= 2, got {n_folds!r}")
    if n_folds > n:
        raise FacemetricError(f"n_folds: {n_folds} folds need at least as many pairs, got {n}")
    return consecutive_folds(n, int(n_folds))


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _accuracy_threshold(s: np.ndarray, gen: np.ndarray, placement: str) -> float:
    """Threshold of maximal accuracy on sorted training distances ``s`` (smallest cut on ties).

    A cut after position ``j`` predicts the ``j`` smallest pairs as same; it is correct for
    ``G[j] + (n_imp - (j - G[j]))`` pairs with ``G`` the cumulative genuine count. Cuts inside a
    run of equal distances are not allowed.
    """
    n = s.size
    cum_gen = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(gen, out=cum_gen[1:])
    n_imp = n - int(cum_gen[-1])
    correct = 2 * cum_gen - np.arange(n + 1) + n_imp
    splittable = np.ones(n + 1, dtype=bool)
    splittable[1:n] = s[1:] > s[:-1]
    correct[~splittable] = -1
    j = int(np.argmax(correct))  # first maximum = smallest threshold, like facenet's argmax
    if j == 0:
        return min(0.0, float(s[0]))  # rejects every pair (facenet's grid starts at 0)
    lo = float(s[j - 1])
    if j == n or placement == "lowest":
        return float(np.nextafter(lo, np.inf))
    hi = float(s[j])
    mid = lo + (hi - lo) / 2
    return mid if lo < mid <= hi else hi


def kfold_accuracy(
    distances: Any, issame: Any, folds: Any, placement: str = "midpoint"
) -> dict[str, Any]:
    """k-fold verification accuracy (facenet ``calculate_roc``).

    For each test fold, the threshold maximising ``(TP + TN) / n`` on the other folds is chosen
    among all cuts of the sorted training distances (O(n log n), cumulative sums), the smallest
    cut on ties (facenet's ``argmax`` over an ascending grid); equal distances are never split.
    The threshold lies between the last accepted and the first rejected training distance:
    ``placement="midpoint"`` halfway, ``"lowest"`` just above the last accepted one (the limit
    of facenet's grid as its step -> 0; reproduces it exactly on data quantised to its cells).
    Accepting none gives ``min(0, d_min)``, accepting all just above ``d_max``. Returns
    ``accuracy_mean``, ``accuracy_std`` (``np.std``, population), ``fold_accuracies``,
    ``thresholds`` (one per fold, folds in sorted id order).
    """
    if placement not in PLACEMENTS:
        raise FacemetricError(
            f"placement: expected one of {', '.join(PLACEMENTS)}, got {placement!r}"
        )
    d, g, f, ids = _prepare(distances, issame, folds)
    order = np.argsort(d, kind="stable")
    ds, gs, fs = d[order], g[order], f[order]
    accs: list[float] = []
    thrs: list[float] = []
    for fid in ids:
        train = fs != fid
        thr = _accuracy_threshold(ds[train], gs[train], placement)
        test = f == fid
        accs.append(float(np.count_nonzero((d[test] < thr) == g[test]) / np.count_nonzero(test)))
        thrs.append(thr)
    return {
        "accuracy_mean": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "fold_accuracies": accs,
        "thresholds": thrs,
    }


def _max_accepted(far_target: float, n_imp: int) -> int:
    """Largest ``k`` with ``k / n_imp <= far_target`` (the float comparison facenet makes)."""
    k = int(np.floor(far_target * n_imp))
    while k + 1 <= n_imp and (k + 1) / n_imp <= far_target:
        k += 1
    while k > 0 and k / n_imp > far_target:
        k -= 1
    return k


def val_at_far(
    distances: Any, issame: Any, folds: Any, far_target: float = 1e-3
) -> dict[str, Any]:
    """k-fold VAL at a target FAR (facenet ``calculate_val``).

    ``FAR(t)`` = fraction of training impostor pairs with ``d < t``. facenet interpolates
    (``interp1d(far, thresholds, 'slinear')``) between the last grid threshold with
    ``FAR <= far_target`` and the next one; both tend to the ``(k+1)``-th smallest training
    impostor distance, ``k = floor(far_target * n_imp_train)``, as the grid step -> 0 (below it
    at most ``k`` impostors are accepted, just above it more). That order statistic is the
    threshold (with strict ``<`` it accepts exactly ``k`` impostors when there are no ties).
    facenet's fallback (threshold 0 when the maximal training FAR is below the target) cannot
    occur since ``0 < far_target < 1``. On the test fold: ``VAL = TA / n_genuine`` and
    ``FAR = FA / n_impostor``. Returns ``val_mean``, ``val_std``, ``far_mean``, ``far_target``,
    ``fold_vals``, ``fold_fars``, ``thresholds``.
    """
    far_target = _check_far(far_target, "far_target")
    d, g, f, ids = _prepare(distances, issame, folds)
    _check_test_folds(f, ids, g)
    imp = np.flatnonzero(~g)
    imp = imp[np.argsort(d[imp], kind="stable")]
    s_all, f_imp = d[imp], f[imp]
    vals: list[float] = []
    fars: list[float] = []
    thrs: list[float] = []
    for fid in ids:
        s = s_all[f_imp != fid]
        thr = float(s[_max_accepted(far_target, s.size)])
        test = f == fid
        pred, gt = d[test] < thr, g[test]
        vals.append(float(np.count_nonzero(pred & gt) / np.count_nonzero(gt)))
        fars.append(float(np.count_nonzero(pred & ~gt) / np.count_nonzero(~gt)))
        thrs.append(thr)
    return {
        "val_mean": float(np.mean(vals)),
        "val_std": float(np.std(vals)),
        "far_mean": float(np.mean(fars)),
        "far_target": far_target,
        "fold_vals": vals,
        "fold_fars": fars,
        "thresholds": thrs,
    }


def _far_key(level: float) -> str:
    return f"{level:.0e}"


def _roc_distance_thresholds(thr: np.ndarray, d: np.ndarray) -> np.ndarray:
    """sklearn's score thresholds (accept ``-d >= s``) as strict distance thresholds."""
    out = np.nextafter(-thr, np.inf)  # accept -d >= s  <=>  d <= -s  <=>  d < nextafter(-s)
    out[0] = d.min()  # sklearn's first point (inf) accepts nothing
    return out


def roc_metrics(
    distances: Any, issame: Any, far_levels: Sequence[float] = FAR_LEVELS
) -> dict[str, Any]:
    """ROC metrics over all pairs (no folds), via scikit-learn on ``score = -distance``.

    ``auc`` = P(d_genuine < d_impostor) + P(tie) / 2. ``eer``: the FPR where FPR = 1 - TPR,
    linearly interpolated on the ROC curve; ``eer_threshold``: the distance there.
    ``tar_at_far[f"{level:.0e}"]`` = max TPR with FPR <= level, only for levels with at least
    ``1 / level`` impostor pairs (the others are listed in ``tar_at_far_skipped``).
    ``roc``: ``fpr``, ``tpr``, ``thresholds`` (strict distance thresholds; the first point,
    which accepts nothing, gets the minimum distance).
    """
    d = _check_distances(distances)
    g = _check_issame(issame, d.size)
    levels = [_check_far(lv, "far_levels") for lv in far_levels]
    score = -d
    auc = float(roc_auc_score(g, score))
    fpr, tpr, thr = roc_curve(g, score, drop_intermediate=False)
    dthr = _roc_distance_thresholds(thr, d)

    gap = fpr + tpr - 1.0  # FPR - FNR, strictly increasing along the curve, from -1 to 1
    i = int(np.argmax(gap >= 0))
    if gap[i] == 0 or i == 0:
        eer, eer_thr = float(fpr[i]), float(dthr[i])
    else:
        w = gap[i - 1] / (gap[i - 1] - gap[i])
        eer = float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))
        eer_thr = float(dthr[i - 1] + w * (dthr[i] - dthr[i - 1]))

    n_imp = int(np.count_nonzero(~g))
    tar: dict[str, float] = {}
    skipped: list[str] = []
    for lv in levels:
        if n_imp * lv < 1.0 - 1e-9:
            skipped.append(_far_key(lv))
        else:
            tar[_far_key(lv)] = float(tpr[fpr <= lv].max())

    cfpr, ctpr, cthr = roc_curve(g, score)  # compact curve (collinear points dropped)
    return {
        "auc": auc,
        "eer": eer,
        "eer_threshold": eer_thr,
        "tar_at_far": tar,
        "tar_at_far_skipped": skipped,
        "roc": {
            "fpr": cfpr.tolist(),
            "tpr": ctpr.tolist(),
            "thresholds": _roc_distance_thresholds(cthr, d).tolist(),
        },
    }


def evaluate_verification(
    emb1: Any = None,
    emb2: Any = None,
    issame: Any = None,
    folds: Any = None,
    distances: Any = None,
    distance: str = "squared_l2",
    far_target: float = 1e-3,
    n_folds: int = 10,
    placement: str = "midpoint",
) -> dict[str, Any]:
    """The LFW verification protocol: k-fold accuracy, VAL@FAR and ROC metrics in one dict.

    Give either ``emb1``/``emb2`` (scored with :func:`pair_scores` and ``distance``) or
    precomputed ``distances`` (``distance`` then only labels them). ``folds`` (fold id per
    pair) defaults to ``n_folds`` consecutive blocks, like facenet's ``KFold(shuffle=False)``;
    ``placement`` is passed to :func:`kfold_accuracy`.
    Keys: those of :func:`kfold_accuracy`; ``val``, ``val_std``, ``far``, ``far_target``,
    ``fold_vals``, ``fold_fars``, ``val_thresholds`` (:func:`val_at_far`); ``auc``, ``eer``,
    ``eer_threshold``, ``tar_at_far``, ``tar_at_far_skipped``, ``roc`` (:func:`roc_metrics`);
    ``num_pairs``, ``num_genuine``, ``num_impostor``, ``num_folds``, ``distance``. All values
    are plain Python (JSON-serialisable).
    """
    if distance not in DISTANCES:
        raise FacemetricError(f"distance: expected one of {', '.join(DISTANCES)}, got {distance!r}")
    have_emb = emb1 is not None or emb2 is not None
    if have_emb == (distances is not None):
        raise FacemetricError("distances: give either emb1 and emb2, or distances (exactly one)")
    if have_emb:
        if emb1 is None or emb2 is None:
            missing = "emb2" if emb2 is None else "emb1"
            raise FacemetricError(f"{missing}: is required when the other embeddings are given")
        d = pair_scores(emb1, emb2, distance)
    else:
        d = _check_distances(distances)
    g = _check_issame(issame, d.size)
    if folds is None:
        folds = _consecutive_folds(d.size, n_folds)
    f, ids = _check_folds(folds, g)

    acc = kfold_accuracy(d, g, f, placement)
    val = val_at_far(d, g, f, far_target)
    roc = roc_metrics(d, g)
    n_gen = int(np.count_nonzero(g))
    return {
        **acc,
        "val": val["val_mean"],
        "val_std": val["val_std"],
        "far": val["far_mean"],
        "far_target": val["far_target"],
        "fold_vals": val["fold_vals"],
        "fold_fars": val["fold_fars"],
        "val_thresholds": val["thresholds"],
        "auc": roc["auc"],
        "eer": roc["eer"],
        "eer_threshold": roc["eer_threshold"],
        "tar_at_far": roc["tar_at_far"],
        "tar_at_far_skipped": roc["tar_at_far_skipped"],
        "num_pairs": int(d.size),
        "num_genuine": n_gen,
        "num_impostor": int(d.size) - n_gen,
        "num_folds": int(ids.size),
        "distance": distance,
        "roc": roc["roc"],
    }
