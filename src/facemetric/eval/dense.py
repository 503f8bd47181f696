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

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.progress import track

from facemetric.data.face_parts import FaceParts
from facemetric.dense.targets import boundaries, skeletons
from facemetric.errors import FacemetricError
from facemetric.io import atomic_write_bytes
from facemetric.report.dense_html import colorize, figure_grid, grey

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
        "iou": {n: float(v) for n, v in zip(names, iou, strict=False)},
        "f1": {n: float(v) for n, v in zip(names, f1, strict=False)},
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
    if np.isin(prob, (0.0, 1.0)).all():  # a binary map: the same counts at every threshold in (0, 1]
        b = prob > 0
        b = thin_fn(b) if thin and b.any() else b
        mp, mt = match_pixels(b, truth, d)
        out[:] = (mt.sum(), truth.sum(), mp.sum(), b.sum())
        return out
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


def edge_nms(prob: np.ndarray) -> np.ndarray:
    """Non-maximum suppression of a soft edge map, as HED's evaluation does before the BSDS
    benchmark (Dollar & Zitnick's ``edgesNms``): the orientation ``theta = atan(d2/dy2 * sign /
    d2/dxdy)`` of a triangle-smoothed map (radius 4), and a pixel is kept only when it is not below
    both neighbours one pixel away along the normal (bilinear samples); a 5-pixel border is
    damped linearly to zero as there. Returns the suppressed map (same value where kept, else 0)."""
    from scipy import ndimage

    e = np.asarray(prob, dtype=np.float64)
    r = 4
    tri = np.concatenate([np.arange(1, r + 2), np.arange(r, 0, -1)]).astype(np.float64)
    tri /= tri.sum()
    sm = ndimage.convolve1d(ndimage.convolve1d(e, tri, axis=0, mode="nearest"), tri, axis=1, mode="nearest")
    oy, ox = np.gradient(sm)
    oxy = np.gradient(ox, axis=0)
    oxx = np.gradient(ox, axis=1)
    oyy = np.gradient(oy, axis=0)
    sign = np.where(oxy > 0, -1.0, 1.0)  # sign(-oxy), with sign(0) = 1 (exactly axis-aligned edges)
    theta = np.mod(np.arctan(oyy * sign / (oxx + 1e-5)), np.pi)
    h, w = e.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cos, sin = np.cos(theta), np.sin(theta)
    keep = np.ones_like(e, dtype=bool)
    for d in (-1.0, 1.0):
        nb = ndimage.map_coordinates(e, [yy + d * sin, xx + d * cos], order=1, mode="nearest")
        keep &= e >= nb
    out = np.where(keep, e, 0.0)
    b = 5
    ramp = np.minimum(np.minimum(yy, h - 1 - yy), np.minimum(xx, w - 1 - xx))
    return out * np.clip(ramp / b, 0, 1)


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


# ---------------------------------------------------------------------- the evaluation
def _rows(model: Any) -> tuple[list[str], list[str]]:
    heads = list(model.heads)
    edge_rows, skel_rows = [], []
    if "hed" in heads:
        edge_rows += ["hed_fuse"] + [f"hed_side{k + 1}" for k in range(len(model.net.hed_stages))]
    if "fcn" in heads:
        edge_rows.append("fcn_label_boundaries")
    edge_rows.append("sobel_baseline")
    if "fsds" in heads:
        skel_rows += ["fsds_fuse"] + [f"fsds_side{k + 1}" for k in range(len(model.net.fsds_stages))]
    if "skel_hed" in heads:
        skel_rows.append("hed_skeleton_fuse")
    return edge_rows, skel_rows


def _edge_maps(pred: dict[str, Any], photo: np.ndarray) -> dict[str, np.ndarray]:
    maps: dict[str, np.ndarray] = {}
    if "edges" in pred:
        maps["hed_fuse"] = pred["edges"]
        for k, side in enumerate(pred["edge_sides"]):
            maps[f"hed_side{k + 1}"] = side
    if "labels" in pred:
        maps["fcn_label_boundaries"] = boundaries(pred["labels"]).astype(np.float64)
    maps["sobel_baseline"] = sobel_edges(photo)
    return maps


def _skeleton_maps(pred: dict[str, Any]) -> dict[str, np.ndarray]:
    maps: dict[str, np.ndarray] = {}
    if "skeleton" in pred:
        maps["fsds_fuse"] = pred["skeleton"]
        for k, side in enumerate(pred["skeleton_sides"]):
            maps[f"fsds_side{k + 1}"] = side
    if "skeleton_hed" in pred:
        maps["hed_skeleton_fuse"] = pred["skeleton_hed"]
    return maps


def _soft(prob: np.ndarray, nms: bool) -> np.ndarray:
    """:func:`edge_nms` for soft maps (binary maps, the parser's label boundaries, stay)."""
    if not nms or np.isin(prob, (0.0, 1.0)).all():
        return prob
    return edge_nms(prob)


def evaluate_dense(model: Any, root: Any, split: str = "test", num_thresholds: int = 25,
                   limit: int | None = None, out: Any = None, figure: Any = None,
                   figure_rows: int = 4, progress: bool = False, nms: bool = True,
                   flip: bool = False) -> dict[str, Any]:
    """Evaluate a :class:`~facemetric.dense.predict.DenseModel` on a split of LFW Part Labels.

    Returns (and writes to ``out``, atomically) ``{"split", "images", "parsing": {...},
    "boundaries": {"rows": {name: {ods, ois, ap, ...}}, ...}, "skeletons": {...}}``. Truth:
    parsing, the label maps; boundaries, :func:`facemetric.dense.targets.boundaries` of the maps;
    skeletons, :func:`facemetric.dense.targets.skeletons` (medial axes of skin and hair), all at
    the photos' own size. Boundary rows: HED fused and each side output, the parser's label
    boundaries (binary), the Sobel baseline; skeleton rows: FSDS fused and each side, the
    HED-style skeleton head. Soft maps go through :func:`edge_nms` first (``nms``, as HED's
    evaluation), then the BSDS thinning and matching at ``num_thresholds`` thresholds evenly
    spaced in [0.02, 0.98]. ``flip``: mirror test-time augmentation of every map. ``figure``: a PNG
    grid of the first ``figure_rows`` photos.
    """
    if int(num_thresholds) < 2:
        raise FacemetricError(f"thresholds: expected at least 2, got {num_thresholds}")
    thresholds = tuple(np.round(np.linspace(0.02, 0.98, int(num_thresholds)), 4))
    parts = FaceParts(root, split, limit=limit)
    preds = model.predict_arrays(list(parts.images), flip=flip)
    edge_rows, skel_rows = _rows(model)
    names = list(model.class_names)
    conf = np.zeros((len(names), len(names)), dtype=np.int64)
    edge_counts: dict[str, list[np.ndarray]] = {r: [] for r in edge_rows}
    skel_counts: dict[str, list[np.ndarray]] = {r: [] for r in skel_rows}
    items = list(zip(parts.images, parts.labels, preds, strict=True))
    for photo, truth, pred in track(items, description=f"scoring {split}", disable=not progress):
        if "labels" in pred:
            conf += confusion_matrix(truth, pred["labels"], len(names))
        edge_truth = boundaries(truth)
        for name, prob in _edge_maps(pred, photo).items():
            edge_counts[name].append(match_counts(_soft(prob, nms), edge_truth, thresholds))
        if skel_rows:
            skel_truth = skeletons(truth)[0]
            for name, prob in _skeleton_maps(pred).items():
                skel_counts[name].append(match_counts(_soft(prob, nms), skel_truth, thresholds))
    report: dict[str, Any] = {
        "split": split, "images": len(parts), "data": str(root), "heads": list(model.heads), "flip": bool(flip),
        "matching": {"tolerance": BSDS_TOLERANCE, "max_dist_px": max_distance(parts.labels.shape[1:]),
                     "rule": "one-to-one, maximum bipartite matching within max_dist; predictions thinned",
                     "nms": bool(nms),
                     "thresholds": len(thresholds)},
    }
    if "fcn" in model.heads:
        report["parsing"] = parsing_metrics(conf, names)
    report["boundaries"] = {"truth": "label-map boundaries", "rows": {
        r: {k: v for k, v in pr_summary(c, thresholds).items()} for r, c in edge_counts.items()}}
    if skel_rows:
        report["skeletons"] = {"truth": "medial axes of skin and hair", "rows": {
            r: pr_summary(c, thresholds) for r, c in skel_counts.items()}}
    if figure is not None:
        cols, grid = ["photo", "truth"], []
        for i in range(min(figure_rows, len(parts))):
            p, row = preds[i], [parts.images[i], colorize(parts.labels[i])]
            if "labels" in p:
                row.append(colorize(p["labels"]))
            row.append(grey(boundaries(parts.labels[i])))
            if "edges" in p:
                row += [grey(p["edges"])] + [grey(s) for s in p["edge_sides"]]
            if "skeleton" in p:
                row.append(grey(p["skeleton"]))
            grid.append(row)
        if "labels" in preds[0]:
            cols.append("parse")
        cols.append("true edges")
        if "edges" in preds[0]:
            cols += ["HED fuse"] + [f"side {k + 1}" for k in range(len(preds[0]["edge_sides"]))]
        if "skeleton" in preds[0]:
            cols.append("FSDS skel")
        figure_grid(grid, cols, figure)
        report["figure"] = str(figure)
    if out is not None:
        atomic_write_bytes(out, json.dumps(report, indent=2).encode())
    return report


def dense_summary(report: dict[str, Any]) -> str:
    """The report as a few text lines (parsing; one line per boundary/skeleton row)."""
    lines = []
    if "parsing" in report:
        p = report["parsing"]
        ious = ", ".join(f"{k} {v:.4f}" for k, v in p["iou"].items())
        lines.append(f"parsing ({report['split']}, {report['images']} photos): pixel accuracy "
                     f"{p['pixel_accuracy']:.4f}, mean IoU {p['mean_iou']:.4f} ({ious})")
    for section in ("boundaries", "skeletons"):
        for name, r in report.get(section, {}).get("rows", {}).items():
            lines.append(f"{section[:-1].replace('ie', 'y'):9s} {name:22s} ODS {r['ods']:.4f}  OIS {r['ois']:.4f}  AP {r['ap']:.4f}")
    return "\n".join(lines)


__all__ = [
    "BSDS_TOLERANCE", "dense_summary", "edge_nms", "evaluate_dense", "DEFAULT_THRESHOLDS", "confusion_matrix", "match_counts", "match_pixels",
    "max_distance", "parsing_metrics", "pr_summary", "sobel_edges",
]
