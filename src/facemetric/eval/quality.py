"""Feature norm as face quality (L2-softmax, Ranjan et al. 2017; MagFace and AdaFace build on it).

The norm ``||x||`` of the *un-normalised* embedding tends to be small for blurred, occluded or
badly aligned faces. :func:`quality_analysis` measures how well that signal predicts
verification errors on a pair protocol: its correlation with per-pair correctness, and an
error-versus-reject curve (reject the lowest-quality pairs, re-measure) against random rejection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facemetric.errors import FacemetricError
from facemetric.eval.verification import (
    _check_far,
    _check_folds,
    _check_issame,
    _consecutive_folds,
    _far_key,
    _max_accepted,
    _to_numpy,
    kfold_accuracy,
    pair_scores,
)

PAIR_QUALITIES = ("min", "mean", "product")
REJECT_FRACTIONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


def _check_norms(x: Any, name: str, n: int) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 1:
        raise FacemetricError(f"{name}: expected a 1-D array [num_pairs], got shape {a.shape}")
    if a.size != n:
        raise FacemetricError(f"{name}: length {a.size} does not match the {n} pairs")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise FacemetricError(f"{name}: expected real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        row = int(np.flatnonzero(~np.isfinite(a))[0])
        raise FacemetricError(f"{name}: entry {row} is NaN or inf; norms must be finite")
    if (a < 0).any():
        row = int(np.flatnonzero(a < 0)[0])
        raise FacemetricError(f"{name}: entry {row} is negative ({a[row]!r}); norms are >= 0")
    return a


def _check_fractions(values: Any) -> list[float]:
    try:
        fr = [float(v) for v in values]
    except (TypeError, ValueError):
        raise FacemetricError(
            f"reject_fractions: expected a sequence of numbers in [0, 1), got {values!r}"
        ) from None
    if not fr:
        raise FacemetricError("reject_fractions: expected at least one fraction")
    for v in fr:
        if not 0.0 <= v < 1.0:
            raise FacemetricError(f"reject_fractions: expected numbers in [0, 1), got {v!r}")
    return sorted(set(fr))


def _stats(x: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(x.mean()),
        "std": float(x.std()),
        "min": float(x.min()),
        "median": float(np.median(x)),
        "max": float(x.max()),
    }


def _correlations(q: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Spearman and point-biserial correlation of quality with correctness (None if undefined)."""
    from scipy import stats

    out: dict[str, Any] = {
        "spearman": None,
        "spearman_p": None,
        "point_biserial": None,
        "point_biserial_p": None,
    }
    if np.ptp(q) == 0 or correct.all() or not correct.any():
        return out  # a constant variable: both correlations are undefined
    rho = stats.spearmanr(q, correct.astype(np.float64))
    pb = stats.pointbiserialr(correct.astype(np.float64), q)
    out["spearman"], out["spearman_p"] = float(rho.statistic), float(rho.pvalue)
    out["point_biserial"], out["point_biserial_p"] = float(pb.statistic), float(pb.pvalue)
    return out


def _fnmr_at_fmr(d: np.ndarray, g: np.ndarray, levels: Sequence[float]) -> dict[str, float | None]:
    """FNMR at each FMR level on all given pairs (no folds); None when too few impostors."""
    imp = np.sort(d[~g])
    gen = d[g]
    out: dict[str, float | None] = {}
    for lv in levels:
        if imp.size * lv < 1.0 - 1e-9:
            out[_far_key(lv)] = None
            continue
        thr = imp[_max_accepted(lv, imp.size)]
        out[_far_key(lv)] = float(1.0 - np.count_nonzero(gen < thr) / gen.size)
    return out


def _point(
    d: np.ndarray, g: np.ndarray, f: np.ndarray, keep: np.ndarray, r: float, what: str, levels
) -> dict[str, Any]:
    """k-fold accuracy and FNMR@FMR of the kept pairs (a one-line error if undefined)."""
    k = int(keep.sum())
    if k < 2:
        raise FacemetricError(
            f"reject_fractions: rejecting {r:g} ({what}) leaves {k} pair(s); need at least 2"
        )
    dk, gk, fk = d[keep], g[keep], f[keep]
    try:
        _check_issame(gk, k)
        _check_folds(fk, gk)
    except FacemetricError as exc:
        raise FacemetricError(
            f"reject_fractions: after rejecting {r:g} ({what}, {k} pairs kept) {exc}"
        ) from None
    acc = kfold_accuracy(dk, gk, fk)
    return {
        "accuracy": acc["accuracy_mean"],
        "accuracy_std": acc["accuracy_std"],
        "fnmr": _fnmr_at_fmr(dk, gk, levels),
        "num_genuine": int(np.count_nonzero(gk)),
        "num_impostor": int(k - np.count_nonzero(gk)),
    }


def quality_analysis(
    emb1: Any,
    emb2: Any,
    issame: Any,
    norms1: Any,
    norms2: Any,
    folds: Any = None,
    distance: str = "cosine",
    reject_fractions: Sequence[float] = REJECT_FRACTIONS,
    far_target: float = 1e-3,
    pair_quality: str = "min",
    n_folds: int = 10,
    n_random: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """How well the feature norm predicts verification errors (a JSON-serialisable dict).

    Inputs: pair embeddings ``emb1``/``emb2`` ``[N, D]`` (scored by :func:`pair_scores` with
    ``distance``; for ``"cosine"`` they need not be normalised), ``issame`` ``[N]``, the
    *pre-normalisation* norms ``norms1``/``norms2`` ``[N]`` of each side, ``folds`` (fold id per
    pair; default ``n_folds`` consecutive blocks, as in :func:`evaluate_verification`).

    Definitions (``d_i`` pair distance, ``g_i`` genuine, ``q_i`` pair quality):

    * ``q_i = min(norms1_i, norms2_i)`` (``pair_quality="min"``, default: a pair is as good as
      its worse image); ``"mean"``: ``(n1 + n2) / 2``; ``"product"``: ``n1 * n2``.
    * ``correct_i = (d_i < t_{fold_i}) == g_i`` with ``t_k`` the per-fold best-accuracy
      threshold of :func:`kfold_accuracy` (chosen on the other folds; listed in
      ``thresholds``). ``accuracy`` = mean of ``correct`` over all pairs.
    * ``spearman`` = ``scipy.stats.spearmanr(q, correct)``; ``point_biserial`` =
      ``scipy.stats.pointbiserialr(correct, q)`` (the Pearson r of ``q`` with 0/1); both with
      their p-values, None when ``q`` or ``correct`` is constant. Positive = higher norm, more
      often right. ``mean_quality_correct``/``_wrong`` = mean ``q`` over those pairs (None if
      none); ``mean_quality_genuine``/``_impostor`` likewise.
    * ``norms``: mean/std/min/median/max over the ``2N`` pair sides (an image in several pairs
      counts several times); ``quality``: the same over ``q``.
    * ``curve[j]``, ``r`` = the ``j``-th sorted distinct ``reject_fractions``:
      ``num_rejected = floor(r * N)``.
      ``norm``: the ``num_rejected`` pairs with the lowest ``q`` are dropped (stable sort on
      ``q``: on ties the earlier pair goes first); ``quality_threshold`` = the smallest kept
      ``q``. ``random``: a uniformly random ``num_rejected`` pairs are dropped, for each of
      ``n_random`` seeds (``numpy.random.default_rng([seed, i])``), and the numbers averaged
      (``accuracy_std`` = std over seeds). On the kept pairs, with their original fold ids:
      ``accuracy`` = :func:`kfold_accuracy` ``accuracy_mean`` (thresholds re-chosen);
      ``fnmr[f"{fmr:.0e}"]`` for ``fmr`` in ``far_target`` and 1e-2: threshold ``t`` = the
      ``(k+1)``-th smallest kept impostor distance, ``k = floor(fmr * n_impostor)`` (so at most
      a fraction ``fmr`` of impostors has ``d < t``), ``FNMR = #{genuine: d >= t} / n_genuine``
      = 1 - TAR; None when ``n_impostor < 1 / fmr``. ``norm`` also counts the kept
      ``num_genuine``/``num_impostor``.

    Raises FacemetricError for mismatched lengths, non-finite or negative norms, and a reject
    fraction that leaves fewer than 2 pairs, no pair of one class, or a fold split without both.
    """
    if pair_quality not in PAIR_QUALITIES:
        raise FacemetricError(
            f"pair_quality: expected one of {', '.join(PAIR_QUALITIES)}, got {pair_quality!r}"
        )
    if isinstance(n_random, bool) or not isinstance(n_random, int | np.integer) or n_random < 1:
        raise FacemetricError(f"n_random: expected an integer >= 1, got {n_random!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise FacemetricError(f"seed: expected an integer >= 0, got {seed!r}")
    far_target = _check_far(far_target, "far_target")
    fractions = _check_fractions(reject_fractions)

    d = pair_scores(emb1, emb2, distance)
    n = d.size
    g = _check_issame(issame, n)
    n1 = _check_norms(norms1, "norms1", n)
    n2 = _check_norms(norms2, "norms2", n)
    if folds is None:
        folds = _consecutive_folds(n, n_folds)
    f, ids = _check_folds(folds, g)
    levels = sorted({far_target, 1e-2})

    if pair_quality == "min":
        q = np.minimum(n1, n2)
    elif pair_quality == "mean":
        q = (n1 + n2) / 2.0
    else:
        q = n1 * n2

    # correctness at the per-fold best-accuracy thresholds of the full set
    acc = kfold_accuracy(d, g, f)
    thr_of_fold = dict(zip(ids.tolist(), acc["thresholds"], strict=True))
    thr = np.array([thr_of_fold[k] for k in f.tolist()])
    correct = (d < thr) == g

    def mean_or_none(mask: np.ndarray) -> float | None:
        return float(q[mask].mean()) if mask.any() else None

    # error-versus-reject curves
    order = np.argsort(q, kind="stable")
    perms = [np.random.default_rng([seed, i]).permutation(n) for i in range(n_random)]
    curve = []
    for r in fractions:
        k = int(np.floor(r * n + 1e-9))
        keep = np.ones(n, dtype=bool)
        keep[order[:k]] = False
        by_norm = _point(d, g, f, keep, r, "lowest quality", levels)
        by_norm["quality_threshold"] = float(q[keep].min()) if keep.any() else None
        runs = []
        for i, perm in enumerate(perms):
            keep_r = np.ones(n, dtype=bool)
            keep_r[perm[:k]] = False
            runs.append(_point(d, g, f, keep_r, r, f"random, seed [{seed}, {i}]", levels))
        accs = np.array([x["accuracy"] for x in runs])
        fnmr: dict[str, float | None] = {}
        for key in runs[0]["fnmr"]:
            vals = [x["fnmr"][key] for x in runs]
            fnmr[key] = None if any(v is None for v in vals) else float(np.mean(vals))
        curve.append(
            {
                "reject_fraction": r,
                "num_rejected": k,
                "num_kept": n - k,
                "norm": by_norm,
                "random": {
                    "accuracy": float(accs.mean()),
                    "accuracy_std": float(accs.std()),
                    "fnmr": fnmr,
                },
            }
        )

    return {
        "pair_quality": pair_quality,
        "distance": distance,
        "num_pairs": int(n),
        "num_folds": int(ids.size),
        "correctness": "per-fold best-accuracy threshold of kfold_accuracy",
        "thresholds": acc["thresholds"],
        "accuracy": float(correct.mean()),
        "num_correct": int(correct.sum()),
        "num_wrong": int(n - correct.sum()),
        **_correlations(q, correct),
        "mean_quality_correct": mean_or_none(correct),
        "mean_quality_wrong": mean_or_none(~correct),
        "mean_quality_genuine": mean_or_none(g),
        "mean_quality_impostor": mean_or_none(~g),
        "norms": _stats(np.concatenate([n1, n2])),
        "quality": _stats(q),
        "fmr_levels": [_far_key(lv) for lv in levels],
        "random_seeds": [[int(seed), i] for i in range(n_random)],
        "curve": curve,
    }


__all__ = ["quality_analysis", "PAIR_QUALITIES", "REJECT_FRACTIONS"]
