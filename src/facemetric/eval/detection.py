"""Face-detection accuracy against labelled boxes, with ignore regions for unlabelled faces.

Inputs per photo: detections ``[M, 5]`` rows ``(score, xmin, ymin, xmax, ymax)``, the
labelled boxes ``[G, 4]`` and optional ignore boxes ``[K, 4]`` (unlabelled faces), all in the
same coordinates (pixels or relative). IoU is :func:`facemetric.detect.boxes.box_iou`.

:func:`detection_metrics` returns (stable JSON keys):

* ``recall_iou50`` / ``recall_iou70``: fraction of labelled faces with a detection scoring
  ``>= score_threshold`` (the detector's operating point) at IoU ``>= 0.5`` / ``>= 0.7``;
* ``mean_iou``: over the labelled faces found at IoU 0.5, the mean IoU of the best such
  detection (how tight the found boxes are);
* ``ap_iou50``: average precision at IoU 0.5 over *all* detections (any score), VOC style:
  detections sorted by score (descending); within a photo, a detection is a true positive
  when its best-IoU labelled face has IoU ``>= 0.5`` and is not yet taken by a higher-scoring
  detection; otherwise it is *ignored* (left out, neither true nor false) when its IoU with
  some ignore box is ``>= ignore_iou`` (0.5), else a false positive (duplicates included).
  AP is the area under the precision/recall curve with precision made monotone
  (``p(r) = max_{r' >= r} p(r')``, all points, as VOC 2010+), recall over all labelled faces;
* ``no_detection``: photos with no detection ``>= score_threshold`` (and its fraction);
* ``false_positives_per_photo``: detections ``>= score_threshold`` that are false positives by
  the AP rule above (duplicates included, ignored ones not), per photo;
* ``photos``, ``faces``, ``detections``, ``ignored``, ``score_threshold``.

:func:`found_fraction` is the share of photos with at least one detection at the operating
point (for sets such as ORL where every photo is one face crop). Ignore-box files
(:func:`write_ignore_file`, :func:`read_ignore_file`) map a photo's relative path to its
ignore boxes (relative corners) with the source that made them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facemetric.detect.boxes import box_iou
from facemetric.errors import DataError
from facemetric.io import atomic_write_text

__all__ = [
    "average_precision",
    "detection_metrics",
    "found_fraction",
    "read_ignore_file",
    "unmatched_detections",
    "write_ignore_file",
]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return box_iou(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)).numpy()


def _rows(x: Any, width: int) -> np.ndarray:
    arr = np.asarray(x if x is not None else np.zeros((0, width)), dtype=np.float64)
    return arr.reshape(-1, width)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2010+): sum of recall steps times the monotone precision."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _label_photo(det: np.ndarray, truths: np.ndarray, ignore: np.ndarray, iou: float, ignore_iou: float) -> np.ndarray:
    """Per detection (score order within the photo): 1 true positive, 0 false positive, -1 ignored."""
    out = np.zeros(len(det), dtype=np.int64)
    if len(det) == 0:
        return out
    overlaps = _iou(det[:, 1:], truths)
    if len(ignore):
        out[_iou(det[:, 1:], ignore).max(axis=1) >= ignore_iou] = -1
    if len(truths):
        best = overlaps.argmax(axis=1)
        best_iou = overlaps.max(axis=1)
        taken = np.zeros(len(truths), dtype=bool)
        for i in np.nonzero(best_iou >= iou)[0]:  # already in score order
            if not taken[best[i]]:
                taken[best[i]] = True
                out[i] = 1
    return out


def detection_metrics(
    detections: Sequence[Any],
    truths: Sequence[Any],
    ignores: Sequence[Any] | None = None,
    score_threshold: float = 0.5,
    ignore_iou: float = 0.5,
) -> dict[str, Any]:
    """The metrics of the module docstring for one detector on a set of photos."""
    if len(detections) != len(truths):
        raise ValueError(f"detection_metrics: {len(detections)} detection lists for {len(truths)} photos")
    ignores = list(ignores) if ignores is not None else [None] * len(truths)
    found50 = found70 = faces = no_detection = ignored = n_det = false_positives = 0
    matched_iou: list[float] = []
    scores: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for det_raw, truth_raw, ignore_raw in zip(detections, truths, ignores, strict=True):
        det = _rows(det_raw, 5)
        det = det[np.argsort(-det[:, 0], kind="stable")]
        truth = _rows(truth_raw, 4)
        ignore = _rows(ignore_raw, 4)
        faces += len(truth)
        n_det += len(det)
        operating = det[det[:, 0] >= score_threshold]
        if len(operating) == 0:
            no_detection += 1
        if len(truth):
            best = _iou(truth, operating[:, 1:]).max(axis=1) if len(operating) else np.zeros(len(truth))
            found50 += int((best >= 0.5).sum())
            found70 += int((best >= 0.7).sum())
            matched_iou += [float(v) for v in best[best >= 0.5]]
        photo_labels = _label_photo(det, truth, ignore, 0.5, ignore_iou)
        ignored += int((photo_labels < 0).sum())
        false_positives += int(((photo_labels == 0) & (det[:, 0] >= score_threshold)).sum())
        scores.append(det[:, 0])
        labels.append(photo_labels)
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    all_labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    keep = all_labels >= 0
    order = np.argsort(-all_scores[keep], kind="stable")
    tp = all_labels[keep][order] == 1
    ctp = np.cumsum(tp)
    recall = ctp / max(faces, 1)
    precision = ctp / np.arange(1, len(tp) + 1)
    photos = len(truths)
    return {
        "photos": photos,
        "faces": faces,
        "detections": n_det,
        "ignored": ignored,
        "score_threshold": float(score_threshold),
        "recall_iou50": found50 / max(faces, 1),
        "recall_iou70": found70 / max(faces, 1),
        "mean_iou": float(np.mean(matched_iou)) if matched_iou else 0.0,
        "ap_iou50": average_precision(recall, precision) if len(tp) else 0.0,
        "no_detection": no_detection,
        "no_detection_fraction": no_detection / max(photos, 1),
        "false_positives_per_photo": false_positives / max(photos, 1),
    }


def found_fraction(detections: Sequence[Any], score_threshold: float = 0.5) -> float:
    """Fraction of photos with at least one detection scoring ``>= score_threshold``."""
    if not detections:
        return 0.0
    hits = sum(int((_rows(d, 5)[:, 0] >= score_threshold).any()) for d in detections)
    return hits / len(detections)


def unmatched_detections(
    detections: Any, truths: Any, min_score: float = 0.5, max_iou: float = 0.3
) -> np.ndarray:
    """Boxes ``[K, 4]`` of the detections scoring ``>= min_score`` whose IoU with every labelled
    box is ``< max_iou`` (how ignore regions are made from a detector's confident output)."""
    det = _rows(detections, 5)
    det = det[det[:, 0] >= min_score]
    truth = _rows(truths, 4)
    if len(det) and len(truth):
        det = det[_iou(det[:, 1:], truth).max(axis=1) < max_iou]
    return det[:, 1:]


def write_ignore_file(
    path: str | os.PathLike, boxes: Mapping[str, Any], source: Mapping[str, Any]
) -> Path:
    """Write ``{"source": {...}, "boxes": {relpath: [[xmin, ymin, xmax, ymax], ...]}}`` atomically."""
    payload = {
        "source": dict(source),
        "boxes": {k: [[round(float(v), 6) for v in b] for b in _rows(b_list, 4)] for k, b_list in boxes.items()},
    }
    return atomic_write_text(path, json.dumps(payload, indent=1))


def read_ignore_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``relpath -> [K, 4]`` relative ignore boxes; one-line DataError for a bad file."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: ignore-box file not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a JSON ignore-box file ({type(exc).__name__})") from None
    boxes = payload.get("boxes") if isinstance(payload, dict) else None
    if not isinstance(boxes, dict):
        raise DataError(f"{path}: expected a JSON object with a 'boxes' mapping of photo -> box list")
    out: dict[str, np.ndarray] = {}
    for key, value in boxes.items():
        try:
            arr = np.asarray(value, dtype=np.float32).reshape(-1, 4)
        except (TypeError, ValueError):
            raise DataError(f"{path}: boxes of {key!r} are not a list of [xmin, ymin, xmax, ymax]") from None
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: boxes of {key!r} are not finite")
        out[key] = arr
    return out
