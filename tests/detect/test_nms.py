"""NMS against a plain loop (Caffe ApplyNMSFast)."""

from __future__ import annotations

import torch

from facemetric.detect.nms import batched_nms, nms


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _reference(boxes, scores, thr, top_k=None):
    boxes = boxes.double().tolist()
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    if top_k is not None:
        order = order[:top_k]
    kept = []
    for i in order:
        if all(_iou(boxes[i], boxes[k]) <= thr for k in kept):
            kept.append(i)
    return kept


def _random(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 0.7
    boxes = torch.cat([xy, xy + 0.05 + torch.rand(n, 2, generator=g) * 0.3], 1)
    scores = torch.rand(n, generator=g).round(decimals=1)  # many ties
    return boxes, scores


def test_matches_plain_loop():
    for seed in range(5):
        boxes, scores = _random(120, seed)
        for thr in (0.3, 0.45, 0.7):
            assert nms(boxes, scores, thr).tolist() == _reference(boxes, scores, thr)
        assert nms(boxes, scores, 0.45, top_k=30).tolist() == _reference(boxes, scores, 0.45, top_k=30)


def test_hand_case_chain():
    # b suppresses c? no: a suppresses b, so c (overlapping only b) survives
    boxes = torch.tensor([[0.0, 0, 0.4, 0.4], [0.1, 0, 0.5, 0.4], [0.2, 0, 0.6, 0.4]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes[:0], scores[:0], 0.5).numel() == 0


def test_batched_groups_independent():
    boxes, scores = _random(80, 7)
    groups = torch.arange(80) % 3
    keep = batched_nms(boxes, scores, groups, 0.45)
    want = []
    for g in range(3):
        index = torch.nonzero(groups == g).flatten()
        want += index[_reference(boxes[index], scores[index], 0.45)].tolist()
    assert sorted(keep.tolist()) == sorted(want)
    assert (scores[keep][:-1] >= scores[keep][1:]).all()
