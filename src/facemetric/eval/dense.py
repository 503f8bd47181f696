"""Pixel-level evaluation: parsing metrics, boundary/skeleton precision-recall with the BSDS
correspondence rule, and the one evaluation behind ``facemetric eval-dense``.

Parsing (:func:`parsing_metrics`, from a confusion matrix ``M[true, pred]`` summed over all
test pixels): pixel accuracy ``sum_c M_cc / sum M``; per-class IoU ``M_cc / (sum_j M_cj +
sum_i M_ic - M_cc)``; mean IoU the mean over classes; per-class F1 ``2 M_cc / (sum_j M_cj +
sum_i M_ic)``. Pixels labelled ``ignore_index`` are left out.

Boundaries and skeletons (:func:`match_counts`, :func:`pr_summary`), after the BSDS benchmark
(Martin, Fowlkes, Malik, PAMI 2004; Arbelaez et al., PAMI 2011): at each threshold ``t`` the
prediction ``p >= t`` is thinned to one pixel (``skimage.morphology.thin``, BSDS's
``bwmorph(.., 'thin', inf)``), then predicted and true pixels are matched **one-to-one**, a pair
being allowed when the two are within ``max_dist = 0.0075 x image diagonal`` pixels. Counts per
image: matched true pixels / all true pixels (recall) and matched predicted / all predicted
(precision). The matching is a maximum-cardinality bipartite matching over the allowed pairs
(``scipy.sparse.csgraph.maximum_bipartite_matching``). BSDS's ``correspondPixels`` solves a
min-cost assignment (Goldberg's CSA) with an outlier cost far above any allowed distance, so
it first maximises the number of matches too; the counts are the same, only the choice among
equally many matchings (which BSDS makes by distance) differs, and it does not change precision
or recall. ODS: the F-measure at the single best threshold for the whole set (counts summed over
images); OIS: each image at its own best threshold (its counts summed, then F); AP: the area
under the precision-recall curve of the summed counts (precision interpolated to be
non-increasing in recall, rectangles in recall, recall 0 to the largest reached).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facemetric.errors import FacemetricError

BSDS_TOLERANCE = 0.0075
DEFAULT_THRESHOLDS = tuple(np.round(np.linspace(0.02, 0.98, 25), 4))


# ------------------------------------------------------------------------------ parsing
def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_classes: int,
                     ignore_index: int = 255) -> np.ndarray:
    """``M[true, pred]`` counts (int64 ``[C, C]``) over pixels whose truth is not ignored."""
    t = np.asarray(truth).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    if t.shape != p.shape:
        raise FacemetricError(f"prediction: {p.size} pixels, truth has {t.size}")
    keep = t != ignore_index
    t, p = t[keep], p[keep]
    if t.size and (t.max() >= num_classes or p.max() >= num_classes or min(t.min(), p.min()) < 0):
        raise FacemetricError(f"labels: expected values 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def parsing_metrics(conf: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Pixel accuracy, per-class IoU and F1, mean IoU (module docstring) from ``conf``."""
    m = np.asarray(conf, dtype=np.float64)
    c = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    tp = np.diag(m)
    true_n, pred_n = m.sum(1), m.sum(0)
    union = true_n + pred_n - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        f1 = np.where(true_n + pred_n > 0, 2 * tp / (true_n + pred_n), np.nan)
    return {
        "pixel_accuracy": float(tp.sum() / max(m.sum(), 1)),
        "mean_iou": float(np.nanmean(iou)),
        "iou": {n: float(v) for n, v in zip(names, iou)},
        "f1": {n: float(v) for n, v in zip(names, f1)},
        "pixels": int(m.sum()),
    }


# ------------------------------------------------------------------- BSDS correspondence
def max_distance(shape: Sequence[int], tolerance: float = BSDS_TOLERANCE) -> float:
    """``tolerance x diagonal`` in pixels."""
    return float(tolerance * np.hypot(shape[0], shape[1]))


def match_pixels(pred: np.ndarray, truth: np.ndarray, max_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of the ``True`` pixels of two binary maps within ``max_dist``
    (maximum cardinality); returns boolean maps of the matched predicted and true pixels."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    pred = np.asarray(pred, bool)
    truth = np.asarray(truth, bool)
    mp = np.zeros_like(pred)
    mt = np.zeros_like(truth)
    py, px = np.nonzero(pred)
    if py.size == 0 or not truth.any():
        return mp, mt
    index = -np.ones(truth.shape, dtype=np.int64)
    ty, tx = np.nonzero(truth)
    index[ty, tx] = np.arange(ty.size)
    r = int(np.floor(max_dist))
    rows, cols = [], []
    h, w = truth.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx > max_dist * max_dist:
                continue
            yy, xx = py + dy, px + dx
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            j = np.full(py.shape, -1, dtype=np.int64)
            j[ok] = index[yy[ok], xx[ok]]
            hit = j >= 0
            rows.append(np.nonzero(hit)[0])
            cols.append(j[hit])
    rows_a = np.concatenate(rows)
    cols_a = np.concatenate(cols)
    if rows_a.size == 0:
        return mp, mt
    graph = coo_matrix((np.ones(rows_a.size), (rows_a, cols_a)), shape=(py.size, ty.size)).tocsr()
    match = maximum_bipartite_matching(graph, perm_type="column")  # pred i -> truth j or -1
    got = match >= 0
    mp[py[got], px[got]] = True
    mt[ty[match[got]], tx[match[got]]] = True
    return mp, mt


def match_counts(prob: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 tolerance: float = BSDS_TOLERANCE, thin: bool = True) -> np.ndarray:
    """Per threshold ``[cntR, sumR, cntP, sumP]`` (int64 ``[T, 4]``): matched true pixels, true
    pixels, matched predicted pixels, predicted pixels (module docstring)."""
    from skimage.morphology import thin as thin_fn

    prob = np.asarray(prob, dtype=np.float64)
    truth = np.asarray(truth) > 0
    if prob.shape != truth.shape:
        raise FacemetricError(f"prediction: shape {prob.shape}, truth {truth.shape}")
    d = max_distance(truth.shape, tolerance)
    out = np.zeros((len(thresholds), 4), dtype=np.int64)
    for k, t in enumerate(thresholds):
        b = prob >= t
        if thin and b.any():
            b = thin_fn(b)
        mp, mt = match_pixels(b, truth, d)
        out[k] = (mt.sum(), truth.sum(), mp.sum(), b.sum())
    return out


def _f(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)


def _pr(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(c[..., 1] > 0, c[..., 0] / c[..., 1], 0.0)
        p = np.where(c[..., 3] > 0, c[..., 2] / c[..., 3], 1.0)
    return p, r


def pr_summary(per_image: Sequence[np.ndarray], thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """ODS, OIS and AP (module docstring) from :func:`match_counts` of each image."""
    stack = np.stack([np.asarray(c) for c in per_image])  # [N, T, 4]
    total = stack.sum(0)
    p, r = _pr(total)
    f = _f(p, r)
    k = int(np.argmax(f))
    # OIS: each image's best threshold
    pi, ri = _pr(stack)
    best = np.argmax(_f(pi, ri), axis=1)
    ois_counts = stack[np.arange(stack.shape[0]), best].sum(0)
    po, ro = _pr(ois_counts)
    # AP: interpolated precision over recall, from high threshold (low recall) to low
    order = np.argsort(r)
    rs, ps = r[order], p[order]
    ps_interp = np.maximum.accumulate(ps[::-1])[::-1]
    widths = np.diff(np.concatenate([[0.0], rs]))
    ap = float(np.sum(widths * ps_interp))
    return {
        "ods": float(f[k]), "ods_threshold": float(thresholds[k]),
        "ods_precision": float(p[k]), "ods_recall": float(r[k]),
        "ois": float(_f(po, ro)), "ap": ap,
        "curve": {"threshold": [float(t) for t in thresholds], "precision": p.tolist(), "recall": r.tolist()},
    }


# -------------------------------------------------------------------------- baselines
def sobel_edges(image: np.ndarray) -> np.ndarray:
    """The Sobel gradient magnitude of the grey image (Gaussian-smoothed, sigma 1.5), scaled to
    0..1 by its maximum: the classical baseline scored with the same rule."""
    from scipy import ndimage

    g = np.asarray(image, dtype=np.float64)
    if g.ndim == 3:
        g = g @ np.array([0.299, 0.587, 0.114])
    g = ndimage.gaussian_filter(g, 1.5)
    mag = np.hypot(ndimage.sobel(g, 0), ndimage.sobel(g, 1))
    return mag / max(float(mag.max()), 1e-12)


__all__ = [
    "BSDS_TOLERANCE", "DEFAULT_THRESHOLDS", "confusion_matrix", "match_counts", "match_pixels",
    "max_distance", "parsing_metrics", "pr_summary", "sobel_edges",
]
