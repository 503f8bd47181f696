"""Plain-loop reference of the LFW verification protocol, in the style of davidsandberg/facenet.

A Python loop over a threshold grid and over the folds, as in facenet's ``calculate_roc`` /
``calculate_val``: slow (O(folds x grid x n)) and only meant to check
:mod:`facemetric.eval.verification` in tests and benchmarks. Same convention (same when
``distance < threshold``), same inputs and return keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facemetric.eval.verification import _check_far, _check_test_folds, _prepare

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)


def _rates_at(threshold: float, dist: np.ndarray, actual: np.ndarray) -> tuple[float, float, float]:
    """``(TPR, FPR, accuracy)`` with pairs predicted same when ``dist < threshold``."""
    predict = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict, actual))
    fp = np.sum(np.logical_and(predict, np.logical_not(actual)))
    tn = np.sum(np.logical_and(np.logical_not(predict), np.logical_not(actual)))
    fn = np.sum(np.logical_and(np.logical_not(predict), actual))
    tpr = 0.0 if tp + fn == 0 else float(tp) / float(tp + fn)
    fpr = 0.0 if fp + tn == 0 else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def _val_far_at(threshold: float, dist: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """``(TA / n_same, FA / n_diff)`` with pairs predicted same when ``dist < threshold``."""
    predict = np.less(dist, threshold)
    true_accept = np.sum(np.logical_and(predict, actual))
    false_accept = np.sum(np.logical_and(predict, np.logical_not(actual)))
    n_same = np.sum(actual)
    n_diff = np.sum(np.logical_not(actual))
    return float(true_accept) / float(n_same), float(false_accept) / float(n_diff)


def _threshold_for_far(far_train: np.ndarray, thresholds: np.ndarray, far_target: float) -> float:
    """facenet's ``interp1d(far_train, thresholds, kind='slinear')(far_target)``, explicitly.

    Threshold 0 when no grid threshold reaches the target FAR; otherwise linear interpolation
    between the last threshold with FAR <= target and the next one.
    """
    if np.max(far_train) < far_target:
        return 0.0
    last = -1
    for i in range(len(far_train)):
        if far_train[i] <= far_target:
            last = i
    if last < 0:  # FAR above the target already at the first threshold
        return float(thresholds[0])
    if last == len(far_train) - 1 or far_train[last + 1] == far_train[last]:
        return float(thresholds[last])
    w = (far_target - far_train[last]) / (far_train[last + 1] - far_train[last])
    return float(thresholds[last] + w * (thresholds[last + 1] - thresholds[last]))


def reference_kfold_accuracy(
    distances: Any, issame: Any, folds: Any, thresholds: np.ndarray = ACCURACY_THRESHOLDS
) -> dict[str, Any]:
    """k-fold accuracy: per test fold, ``argmax`` of the training accuracy over ``thresholds``."""
    d, g, f, ids = _prepare(distances, issame, folds)
    accs: list[float] = []
    thrs: list[float] = []
    for fid in ids:
        train, test = f != fid, f == fid
        acc_train = np.zeros(len(thresholds))
        for t_idx, t in enumerate(thresholds):
            _, _, acc_train[t_idx] = _rates_at(t, d[train], g[train])
        best = float(thresholds[int(np.argmax(acc_train))])
        accs.append(_rates_at(best, d[test], g[test])[2])
        thrs.append(best)
    return {
        "accuracy_mean": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "fold_accuracies": accs,
        "thresholds": thrs,
    }


def reference_val_at_far(
    distances: Any,
    issame: Any,
    folds: Any,
    far_target: float = 1e-3,
    thresholds: np.ndarray = VAL_THRESHOLDS,
) -> dict[str, Any]:
    """k-fold VAL@FAR: training FAR on the grid, threshold by interpolation at ``far_target``."""
    far_target = _check_far(far_target, "far_target")
    d, g, f, ids = _prepare(distances, issame, folds)
    _check_test_folds(f, ids, g)
    vals: list[float] = []
    fars: list[float] = []
    thrs: list[float] = []
    for fid in ids:
        train, test = f != fid, f == fid
        far_train = np.zeros(len(thresholds))
        for t_idx, t in enumerate(thresholds):
            _, far_train[t_idx] = _val_far_at(t, d[train], g[train])
        thr = _threshold_for_far(far_train, thresholds, far_target)
        val, far = _val_far_at(thr, d[test], g[test])
        vals.append(val)
        fars.append(far)
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
