"""Detection metrics: a hand-computed case and a plain-loop reference for AP with ignore regions."""

from __future__ import annotations

import numpy as np
import pytest

from facemetric.errors import DataError
from facemetric.eval.detection import (
    detection_metrics,
    found_fraction,
    read_ignore_file,
    unmatched_detections,
    write_ignore_file,
)

TRUTHS = [[[0, 0, 10, 10]], [[0, 0, 10, 10]]]
DETS = [
    [[0.9, 0, 0, 10, 10], [0.8, 0, 0, 10, 9], [0.3, 20, 20, 30, 30]],
    [[0.7, 50, 50, 60, 60], [0.6, 0, 0, 10, 8]],
]
IGNORES = [[[20, 20, 30, 30]], None]


def test_hand_computed():
    m = detection_metrics(DETS, TRUTHS, IGNORES, score_threshold=0.5)
    # order without the ignored one: TP, FP (duplicate), FP, TP -> precision 1, .5, .33, .5
    assert m["ap_iou50"] == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    assert m["recall_iou50"] == 1 and m["recall_iou70"] == 1
    assert m["mean_iou"] == pytest.approx((1.0 + 0.8) / 2)
    assert (m["no_detection"], m["ignored"], m["faces"], m["detections"]) == (0, 1, 2, 5)
    assert m["false_positives_per_photo"] == 1.0  # the duplicate (0.8) and the 0.7 box
    m = detection_metrics(DETS, TRUTHS, None, score_threshold=0.65)
    # the 0.3 detection is now a false positive at the end: AP unchanged (recall already 1 before it)
    assert m["recall_iou50"] == 0.5 and m["ap_iou50"] == pytest.approx(0.75)
    assert m["false_positives_per_photo"] == 1.0  # 0.8 and 0.7 (the 0.3 one is below the threshold)
    m = detection_metrics(DETS, TRUTHS, None, score_threshold=0.95)
    assert m["no_detection"] == 2 and m["recall_iou50"] == 0 and m["mean_iou"] == 0
    assert found_fraction(DETS, 0.75) == 0.5 and found_fraction(DETS, 0.65) == 1


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _reference_ap(dets, truths, ignores):
    flat = sorted(
        [(d[0], p, i) for p, ds in enumerate(dets) for i, d in enumerate(ds)], key=lambda t: -t[0]
    )
    taken = set()
    outcomes = []
    for _, p, i in flat:
        box = dets[p][i][1:]
        ious = [_iou(box, t) for t in truths[p]]
        j = int(np.argmax(ious)) if ious else -1
        if j >= 0 and ious[j] >= 0.5 and (p, j) not in taken:
            taken.add((p, j))
            outcomes.append(1)
        elif any(_iou(box, g) >= 0.5 for g in ignores[p]):
            continue
        else:
            outcomes.append(0)
    n = sum(len(t) for t in truths)
    ap, best_after = 0.0, []
    prec = [sum(outcomes[: k + 1]) / (k + 1) for k in range(len(outcomes))]
    rec = [sum(outcomes[: k + 1]) / n for k in range(len(outcomes))]
    best_after = [max(prec[k:]) for k in range(len(prec))]
    prev = 0.0
    for k in range(len(outcomes)):
        if rec[k] > prev:
            ap += (rec[k] - prev) * best_after[k]
            prev = rec[k]
    return ap


def test_ap_matches_plain_loop():
    rng = np.random.default_rng(0)
    dets, truths, ignores = [], [], []
    for _ in range(30):
        t = rng.uniform(0, 60, (rng.integers(0, 3), 2))
        truths.append([[x, y, x + 30, y + 30] for x, y in t])
        g = rng.uniform(0, 60, (rng.integers(0, 2), 2))
        ignores.append([[x, y, x + 25, y + 25] for x, y in g])
        ds = []
        for x, y in list(t) + list(g) + list(rng.uniform(0, 60, (2, 2))):
            for _ in range(2):
                jx, jy = rng.normal(0, 4, 2)
                ds.append([float(rng.uniform()), x + jx, y + jy, x + jx + 30, y + jy + 30])
        dets.append(ds)
    m = detection_metrics(dets, truths, ignores)
    assert m["ap_iou50"] == pytest.approx(_reference_ap(dets, truths, ignores), abs=1e-12)
    assert 0 < m["ap_iou50"] < 1


def test_unmatched_and_ignore_file(tmp_path):
    det = [[0.9, 0, 0, 10, 10], [0.8, 20, 20, 30, 30], [0.2, 40, 40, 50, 50]]
    np.testing.assert_array_equal(unmatched_detections(det, [[0, 0, 10, 10]]), [[20, 20, 30, 30]])
    path = write_ignore_file(tmp_path / "ignore.json", {"a/b.jpg": [[0.1, 0.2, 0.3, 0.4]], "c.jpg": []}, {"detector": "x"})
    boxes = read_ignore_file(path)
    np.testing.assert_allclose(boxes["a/b.jpg"], [[0.1, 0.2, 0.3, 0.4]])
    assert boxes["c.jpg"].shape == (0, 4)
    (tmp_path / "bad.json").write_text('{"boxes": {"a": [[1, 2, 3]]}}')
    with pytest.raises(DataError, match="bad.json"):
        read_ignore_file(tmp_path / "bad.json")
