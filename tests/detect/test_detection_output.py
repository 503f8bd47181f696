"""DetectionOutput semantics: threshold, per-class NMS with top_k, keep_top_k, order."""

from __future__ import annotations

import torch

from facemetric.detect.boxes import encode
from facemetric.detect.detection_output import DetectionOutput


def _setup():
    priors = torch.tensor(
        [[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.9, 0.9], [0.5, 0.1, 0.7, 0.3], [0.0, 0.5, 0.2, 0.9]]
    )
    loc = torch.zeros(1, 5, 4)  # boxes == priors
    # classes: background, face, other
    conf = torch.tensor(
        [[[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.5, 0.005, 0.495], [0.3, 0.6, 0.1], [0.99, 0.005, 0.005]]]
    )
    return loc, conf, priors


def test_semantics():
    loc, conf, priors = _setup()
    out = DetectionOutput(num_classes=3)(loc, conf, priors)
    assert len(out) == 1
    det = out[0]
    # face: prior0 (0.8) suppresses prior1 (IoU 0.82 > 0.45); prior3 kept; prior2, prior4 under 0.01
    # other: prior0, 1, 2, 3 pass 0.01 -> prior1 suppressed by prior0 (tie 0.1: prior0 first)
    labels_scores = [(int(r[0]), round(float(r[1]), 3)) for r in det]
    assert labels_scores == [(1, 0.8), (1, 0.6), (2, 0.495), (2, 0.1), (2, 0.1)]
    torch.testing.assert_close(det[0, 2:], priors[0])
    assert (det[:, 1][:-1] >= det[:, 1][1:]).all()


def test_keep_top_k_top_k_and_threshold():
    loc, conf, priors = _setup()
    det = DetectionOutput(num_classes=3, keep_top_k=2)(loc, conf, priors)[0]
    assert [round(float(s), 3) for s in det[:, 1]] == [0.8, 0.6]
    # top_k=1 per class: only the best face and the best other
    det = DetectionOutput(num_classes=3, top_k=1)(loc, conf, priors)[0]
    assert [(int(r[0]), round(float(r[1]), 3)) for r in det] == [(1, 0.8), (2, 0.495)]
    det = DetectionOutput(num_classes=3, confidence_threshold=0.65)(loc, conf, priors)[0]
    assert det[:, 1].tolist() == [0.800000011920929]
    empty = DetectionOutput(num_classes=3, confidence_threshold=0.999)(loc, conf, priors)[0]
    assert empty.shape == (0, 6)


def test_decodes_and_no_clip():
    priors = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7]])
    target = torch.tensor([[-0.05, -0.1, 0.15, 0.25], [0.55, 0.45, 0.95, 0.75]])
    loc = encode(target, priors)[None]
    conf = torch.tensor([[[0.1, 0.9], [0.2, 0.8]]])
    det = DetectionOutput(num_classes=2)(loc, conf, priors)[0]
    torch.testing.assert_close(det[:, 2:], target, rtol=0, atol=1e-6)
    clipped = DetectionOutput(num_classes=2, clip=True)(loc, conf, priors)[0]
    torch.testing.assert_close(clipped[:, 2:], target.clamp(0, 1), rtol=0, atol=1e-6)
    two = DetectionOutput(num_classes=2)(torch.cat([loc, loc]), torch.cat([conf, conf.flip(1)]), priors)
    assert len(two) == 2 and two[1][0, 1].item() == 0.8999999761581421
