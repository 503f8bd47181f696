"""Benchmark: sort-based verification evaluator vs the facenet-style loop reference.

Run as ``python benchmarks/bench_verification.py``. Builds 6,000 synthetic LFW-like pairs in 10
folds of 300 genuine + 300 impostor pairs (128-d, L2-normalised embeddings, genuine pairs
closer), times k-fold accuracy + VAL@FAR of both implementations on the same squared-L2
distances (best of a few repeats) and checks that they agree within the reference grids'
resolution. Exits 1 when a check fails or the speed-up is below 50x.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from facemetric.eval import evaluate_verification, kfold_accuracy, pair_scores, val_at_far
from facemetric.eval.reference import (
    ACCURACY_THRESHOLDS,
    VAL_THRESHOLDS,
    reference_kfold_accuracy,
    reference_val_at_far,
)

N_FOLDS, PER_CLASS, DIM, FAR = 10, 300, 128, 1e-3
TARGET_SPEEDUP = 50.0


def make_pairs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """emb1, emb2 (L2-normalised), issame and consecutive fold ids, genuine pairs closer."""
    rng = np.random.default_rng(seed)
    n = 2 * PER_CLASS * N_FOLDS
    issame = np.tile(np.arange(2 * PER_CLASS) < PER_CLASS, N_FOLDS)
    a = rng.normal(size=(n, DIM))
    b = rng.normal(size=(n, DIM))
    noise = np.exp(rng.normal(np.log(1.5), 0.6, size=(int(issame.sum()), 1)))  # difficulty
    b[issame] = a[issame] + noise * rng.normal(size=(int(issame.sum()), DIM))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    folds = np.repeat(np.arange(N_FOLDS), 2 * PER_CLASS)
    return a, b, issame, folds


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    emb1, emb2, issame, folds = make_pairs()
    d = pair_scores(emb1, emb2)

    def fast():
        return kfold_accuracy(d, issame, folds), val_at_far(d, issame, folds, FAR)

    def reference():
        return reference_kfold_accuracy(d, issame, folds), reference_val_at_far(
            d, issame, folds, FAR
        )

    t_fast, (acc, val) = best_time(fast, 7)
    t_ref, (racc, rval) = best_time(reference, 3)
    t_full, full = best_time(lambda: evaluate_verification(emb1, emb2, issame, folds), 5)
    failures: list[str] = []

    # accuracy: the reference only sees the 0.01-grid cell of each distance, so the fast
    # evaluator ("lowest" placement) on the cell indices must reproduce it exactly
    cell = np.searchsorted(ACCURACY_THRESHOLDS, d, side="right") - 1
    qacc = kfold_accuracy(cell, issame, folds, placement="lowest")
    if qacc["fold_accuracies"] != racc["fold_accuracies"]:
        failures.append("accuracy on 0.01-grid cells differs from the reference")
    if abs(acc["accuracy_mean"] - racc["accuracy_mean"]) > 0.005:
        failures.append("mean accuracy differs from the reference by more than 0.5%")

    # VAL: per fold, the reference threshold lies in the 0.001-grid cell of the fast one, so
    # the accepted pairs differ at most by the test pairs inside that cell
    for i, fid in enumerate(np.unique(folds)):
        tf, tr = val["thresholds"][i], rval["thresholds"][i]
        lo = VAL_THRESHOLDS[np.searchsorted(VAL_THRESHOLDS, tf, side="right") - 1]
        if not lo - 1e-12 <= tr <= lo + 0.001 + 1e-12:
            failures.append(f"fold {fid}: VAL threshold {tf:.6f} vs reference {tr:.6f}")
        dt, gt = d[folds == fid], issame[folds == fid]
        in_cell = (dt >= lo) & (dt <= lo + 0.001)
        d_ta = round(abs(val["fold_vals"][i] - rval["fold_vals"][i]) * gt.sum())
        d_fa = round(abs(val["fold_fars"][i] - rval["fold_fars"][i]) * (~gt).sum())
        if d_ta > (in_cell & gt).sum() or d_fa > (in_cell & ~gt).sum():
            failures.append(f"fold {fid}: VAL/FAR differ by more than one grid cell's pairs")

    speedup = t_ref / t_fast
    print(f"pairs: {d.size} in {N_FOLDS} folds, dim {DIM}, squared L2 on normalised embeddings")
    print(
        f"accuracy: fast {acc['accuracy_mean']:.4f} +- {acc['accuracy_std']:.4f} (midpoint), "
        f"reference {racc['accuracy_mean']:.4f} +- {racc['accuracy_std']:.4f}, fast on grid "
        f"cells {qacc['accuracy_mean']:.4f}"
    )
    print(
        f"VAL@FAR={FAR:g}: fast {val['val_mean']:.4f} +- {val['val_std']:.4f} "
        f"(FAR {val['far_mean']:.5f}), reference {rval['val_mean']:.4f} +- "
        f"{rval['val_std']:.4f} (FAR {rval['far_mean']:.5f})"
    )
    print(
        f"full evaluate_verification (scores + accuracy + VAL + ROC): {t_full:.4f} s; "
        f"AUC {full['auc']:.4f}, EER {full['eer']:.4f}"
    )
    print(f"agreement checks: {'ok' if not failures else 'FAILED'}")
    for msg in failures:
        print(f"  - {msg}")
    ok = speedup >= TARGET_SPEEDUP
    print(
        f"verification: fast {t_fast:.4f} s, loop reference {t_ref:.2f} s, "
        f"speed-up {speedup:.0f}x (target >= {TARGET_SPEEDUP:.0f}x: {'ok' if ok else 'MISSED'})"
    )
    return 0 if ok and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
