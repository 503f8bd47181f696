"""Box coding and IoU against hand-computed values."""

from __future__ import annotations

import math

import torch

from facemetric.detect.boxes import box_iou, center_to_corner, corner_to_center, decode, encode


def test_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.2, 0.2, 0.4, 0.4]])
    b = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.6, 0.6, 0.9, 0.9], [0.0, 0.0, 0.5, 0.5]])
    iou = box_iou(a, b)
    # a0 & b0: inter 0.0625, union 0.25 + 0.25 - 0.0625
    want = torch.tensor(
        [
            [0.0625 / 0.4375, 0.0, 1.0],
            [0.15 * 0.15 / (0.04 + 0.25 - 0.15 * 0.15), 0.0, 0.04 / 0.25],
        ]
    )
    torch.testing.assert_close(iou, want)
    # degenerate boxes: no NaN
    z = torch.zeros(1, 4)
    assert box_iou(z, z).item() == 0


def test_center_corner_roundtrip():
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.9]])
    torch.testing.assert_close(corner_to_center(boxes), torch.tensor([[0.3, 0.55, 0.4, 0.7]]))
    torch.testing.assert_close(center_to_corner(corner_to_center(boxes)), boxes)


def test_encode_hand_values_and_roundtrip():
    prior = torch.tensor([[0.4, 0.4, 0.6, 0.6]])  # centre .5, size .2
    box = torch.tensor([[0.45, 0.40, 0.75, 0.80]])  # centre (.6, .6), size (.3, .4)
    t = encode(box, prior, (0.1, 0.1, 0.2, 0.2))
    want = torch.tensor([[(0.6 - 0.5) / 0.2 / 0.1, (0.6 - 0.5) / 0.2 / 0.1, math.log(1.5) / 0.2, math.log(2) / 0.2]])
    torch.testing.assert_close(t, want)
    g = torch.Generator().manual_seed(0)
    priors = torch.rand(200, 2, generator=g) * 0.7
    priors = torch.cat([priors, priors + 0.05 + torch.rand(200, 2, generator=g) * 0.3], 1)
    boxes = torch.rand(200, 2, generator=g) * 0.6
    boxes = torch.cat([boxes, boxes + 0.02 + torch.rand(200, 2, generator=g) * 0.4], 1)
    torch.testing.assert_close(decode(encode(boxes, priors), priors), boxes, rtol=0, atol=1e-6)
    # batched decode broadcasts over the leading dimension
    batch = torch.stack([encode(boxes, priors)] * 3)
    torch.testing.assert_close(decode(batch, priors)[2], boxes, rtol=0, atol=1e-6)
    assert decode(torch.zeros(1, 4), prior).allclose(prior)
