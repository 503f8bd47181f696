"""SSD augmentation: boxes follow the pixels exactly through expand, crop and flip."""

from __future__ import annotations

import random

import torch

from facemetric.detect.augment import (
    BatchSampler,
    SSDAugment,
    photometric_distort,
    sample_crop,
)
from facemetric.detect.boxes import box_iou

H, W = 60, 80
FACE = (10, 15, 34, 41)  # pixels x0, y0, x1, y1 (exclusive ends)
OTHER = (50, 20, 70, 44)


def _scene():
    img = torch.zeros(3, H, W)
    img[0, FACE[1] : FACE[3], FACE[0] : FACE[2]] = 255
    img[1, OTHER[1] : OTHER[3], OTHER[0] : OTHER[2]] = 200
    rel = torch.tensor([[FACE[0] / W, FACE[1] / H, FACE[2] / W, FACE[3] / H]])
    ign = torch.tensor([[OTHER[0] / W, OTHER[1] / H, OTHER[2] / W, OTHER[3] / H]])
    return img, rel, ign


def _painted(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_boxes_exact_through_expand_crop_flip():
    img, face, other = _scene()
    augment = SSDAugment(size=None, mean=(7.0, 7.0, 7.0), distort=False, expand_prob=0.7, max_expand_ratio=3.0)
    kept = dropped = 0
    for seed in range(40):
        out, boxes, labels, ignore = augment(img, face, torch.tensor([1]), other, random.Random(seed))
        h, w = out.shape[1:]
        scale = torch.tensor([w, h, w, h], dtype=torch.float64)
        face_visible = (out[0] == 255).any()
        if boxes.numel():
            kept += 1
            assert labels.tolist() == [1]
            assert face_visible
            pixels = boxes[0].double() * scale
            assert torch.allclose(pixels, pixels.round(), atol=1e-6)
            assert pixels.round().tolist() == _painted(out[0] == 255)
        else:
            dropped += 1
        if (out[1] == 200).any():
            assert ignore.shape[0] == 1
            assert (ignore[0].double() * scale).round().tolist() == _painted(out[1] == 200)
        else:
            assert ignore.shape[0] == 0
    assert kept > 20 and dropped > 0


def test_centre_rule_and_resize_keeps_relative_boxes():
    img, face, other = _scene()
    augment = SSDAugment(size=(32, 32), distort=False, expand_prob=0.0, flip_prob=1.0,
                         samplers=(BatchSampler(),))
    out, boxes, _, ignore = augment(img, face, torch.tensor([1]), other, random.Random(0))
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(boxes, torch.tensor([[1 - FACE[2] / W, FACE[1] / H, 1 - FACE[0] / W, FACE[3] / H]]))
    torch.testing.assert_close(ignore, torch.tensor([[1 - OTHER[2] / W, OTHER[1] / H, 1 - OTHER[0] / W, OTHER[3] / H]]))


def test_sampler_constraints_hold():
    boxes = torch.tensor([[0.3, 0.3, 0.6, 0.7]], dtype=torch.float64)
    sampler = BatchSampler(0.3, 1.0, 0.5, 2.0, min_iou=0.5, max_trials=50)
    hits = 0
    for seed in range(40):
        window = sample_crop(boxes, [sampler], random.Random(seed))
        if window != (0.0, 0.0, 1.0, 1.0):
            hits += 1
            assert box_iou(torch.tensor([window], dtype=torch.float64), boxes).item() >= 0.5
            w, h = window[2] - window[0], window[3] - window[1]
            assert 0.5 - 1e-9 <= w / h <= 2 + 1e-9 and 0 <= window[0] and window[2] <= 1 + 1e-9
    assert hits > 5


def test_photometric():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 8, 9, generator=g) * 255
    x = x.round()
    changed = 0
    for seed in range(10):
        y = photometric_distort(x, random.Random(seed))
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255 and torch.equal(y, y.round())
        changed += int(not torch.allclose(x, y))
    assert changed >= 8
    # brightness alone (the first draw < 0.5, every later one >= 0.5): a constant shift, saturated
    flat = torch.full((3, 4, 4), 250.0)

    class Scripted(random.Random):
        def __init__(self, values):
            super().__init__(0)
            self.values = list(values)

        def random(self):
            return self.values.pop(0)

        def uniform(self, a, b):
            return 10.0

    out = photometric_distort(flat, Scripted([0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]))
    assert torch.equal(out, torch.full((3, 4, 4), 255.0))
    out = photometric_distort(flat - 100, Scripted([0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]))
    assert torch.equal(out, torch.full((3, 4, 4), 160.0))
