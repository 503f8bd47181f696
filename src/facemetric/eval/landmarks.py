"""Landmark accuracy: normalised mean error (NME) by inter-ocular distance, failure rate, per
point, and the comparison of ``"arcface5"`` predictions with dlib's 5-point model.

Definitions (for ``N`` faces, ground truth ``g[n, p]`` and prediction ``y[n, p]`` in pixels,
``"arcface5"`` order, points ``p`` of a chosen subset ``P``):

* inter-ocular distance ``d[n] = |g[n, 0] - g[n, 1]|`` (the two *eye centres* of the ground
  truth; for lfw-5590 the labelled eye points);
* normalised error ``e[n, p] = |y[n, p] - g[n, p]| / d[n]``;
* per face ``NME[n] = mean_{p in P} e[n, p]``; reported ``nme = mean_n NME[n]``;
* ``failure_rate = mean_n [NME[n] > threshold]`` (``threshold = 0.1``);
* per point ``p``: ``nme = mean_n e[n, p]`` and ``failure_rate = mean_n [e[n, p] > threshold]``.

Comparing with dlib's 5-point predictor (layout ``"dlib5"``: two corners per eye and the
*bottom* of the nose): its eye centre is the mean of the eye's two corners
(:func:`dlib5_eye_centres`), so both models are compared on the two eye centres (points 0 and
1). The nose is left out: dlib's point 4 is the nose base (subnasale), not the tip labelled
here (about 8 px apart in the 112 ArcFace frame); dlib has no mouth points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facemetric.errors import FacemetricError

#: names of the ``"arcface5"`` points (image left/right)
POINT_NAMES = ("left_eye", "right_eye", "nose_tip", "left_mouth", "right_mouth")
#: the points both ``"arcface5"`` and ``"dlib5"`` define (as eye centres)
EYES = (0, 1)
FAILURE_THRESHOLD = 0.1


def _points(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 2:
        raise FacemetricError(f"{name}: expected landmarks of shape [N, P, 2], got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise FacemetricError(f"{name}: face {int(np.flatnonzero(~np.isfinite(arr).all(axis=(1, 2)))[0])} has NaN or infinite points")
    return arr


def inter_ocular(truth: np.ndarray) -> np.ndarray:
    """``[N]`` distances between the ground truth's eye centres (points 0 and 1)."""
    g = _points("truth", truth)
    d = np.linalg.norm(g[:, 0] - g[:, 1], axis=1)
    if (d <= 0).any():
        raise FacemetricError(f"truth: face {int(np.flatnonzero(d <= 0)[0])} has both eyes at one point")
    return d


def normalised_errors(pred: Any, truth: Any, points: Sequence[int] | None = None) -> np.ndarray:
    """``e[n, p]`` (see the module docstring) for ``points`` (default all) of ``pred``
    ``[N, P', 2]`` against ``truth`` ``[N, P, 2]``: ``pred`` holds either all ``P`` points or
    just the chosen ones, in that order."""
    g = _points("truth", truth)
    y = _points("pred", pred)
    idx = list(range(g.shape[1])) if points is None else [int(p) for p in points]
    if len(y) != len(g):
        raise FacemetricError(f"pred: {len(y)} faces, truth: {len(g)}")
    if y.shape[1] == g.shape[1]:
        y = y[:, idx]
    elif y.shape[1] != len(idx):
        raise FacemetricError(f"pred: {y.shape[1]} points per face, expected {g.shape[1]} or {len(idx)}")
    return np.linalg.norm(y - g[:, idx], axis=2) / inter_ocular(g)[:, None]


def landmark_metrics(
    pred: Any,
    truth: Any,
    points: Sequence[int] | None = None,
    threshold: float = FAILURE_THRESHOLD,
    names: Sequence[str] = POINT_NAMES,
) -> dict[str, Any]:
    """``{"faces", "points", "nme", "failure_rate", "threshold", "per_point": {name: {"nme",
    "failure_rate"}}}`` (JSON-ready floats) over the chosen ``points``."""
    idx = list(range(np.asarray(truth).shape[1])) if points is None else [int(p) for p in points]
    e = normalised_errors(pred, truth, idx)
    if len(e) == 0:
        raise FacemetricError("landmark metrics: no faces")
    per_face = e.mean(axis=1)
    return {
        "faces": int(len(e)),
        "points": [names[p] for p in idx],
        "nme": float(per_face.mean()),
        "failure_rate": float((per_face > threshold).mean()),
        "threshold": float(threshold),
        "per_point": {
            names[p]: {"nme": float(e[:, j].mean()), "failure_rate": float((e[:, j] > threshold).mean())}
            for j, p in enumerate(idx)
        },
    }


def dlib5_eye_centres(dlib5: Any) -> np.ndarray:
    """``[N, 2, 2]`` eye centres in ``"arcface5"`` order (image-left eye first) from dlib's
    5 points ``[N, 5, 2]``: image-left eye = mean of points 2 and 3, image-right eye = mean of
    points 0 and 1."""
    d = _points("dlib5", dlib5)
    if d.shape[1] != 5:
        raise FacemetricError(f"dlib5: expected 5 points per face, got {d.shape[1]}")
    return np.stack([d[:, 2:4].mean(axis=1), d[:, 0:2].mean(axis=1)], axis=1)


def eye_metrics(eyes: Any, truth: Any, threshold: float = FAILURE_THRESHOLD) -> dict[str, Any]:
    """:func:`landmark_metrics` on the eye centres only (``eyes``: ``[N, 2, 2]`` or all five
    ``"arcface5"`` points)."""
    return landmark_metrics(eyes, truth, points=EYES, threshold=threshold)


__all__ = [
    "EYES",
    "FAILURE_THRESHOLD",
    "POINT_NAMES",
    "dlib5_eye_centres",
    "eye_metrics",
    "inter_ocular",
    "landmark_metrics",
    "normalised_errors",
]
