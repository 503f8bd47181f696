"""Prior boxes: hand-computed coordinates and Caffe's order / expanded ratios."""

from __future__ import annotations

import math

import pytest
import torch

from facemetric.detect.priors import PriorBoxSpec, expand_aspect_ratios, prior_boxes, ssd_priors
from facemetric.errors import ConfigError


def test_expanded_ratios():
    assert expand_aspect_ratios([2, 3]) == [1.0, 2.0, 0.5, 3.0, 1 / 3]
    assert expand_aspect_ratios([2, 2, 1], flip=False) == [1.0, 2.0]


def test_hand_computed_2x2():
    # 300x300 image, 2x2 map -> step 150, centres 75 and 225; min 30, max 60, ratio 2 (flip)
    spec = PriorBoxSpec(feature_size=(2, 2), min_sizes=(30,), max_sizes=(60,), aspect_ratios=(2,))
    boxes = prior_boxes(spec, 300)
    assert spec.num_priors == 4 and boxes.shape == (16, 4) and boxes.dtype == torch.float32
    s = math.sqrt(30 * 60) / 2  # 21.2132
    a = 30 * math.sqrt(2) / 2  # half width for ratio 2: 21.2132
    b = 30 / math.sqrt(2) / 2  # half height: 10.6066
    expected_cell0 = [
        [60 / 300, 60 / 300, 90 / 300, 90 / 300],
        [(75 - s) / 300, (75 - s) / 300, (75 + s) / 300, (75 + s) / 300],
        [(75 - a) / 300, (75 - b) / 300, (75 + a) / 300, (75 + b) / 300],
        [(75 - b) / 300, (75 - a) / 300, (75 + b) / 300, (75 + a) / 300],
    ]
    torch.testing.assert_close(boxes[:4], torch.tensor(expected_cell0), rtol=0, atol=1e-6)
    # second cell is (row 0, column 1): shifted right by 150 px
    torch.testing.assert_close(boxes[4:8], boxes[:4] + torch.tensor([0.5, 0, 0.5, 0]), rtol=0, atol=1e-6)
    # third cell is (row 1, column 0)
    torch.testing.assert_close(boxes[8:12], boxes[:4] + torch.tensor([0, 0.5, 0, 0.5]), rtol=0, atol=1e-6)


def test_ssd300_conv4_3_and_clip_step():
    spec = PriorBoxSpec(feature_size=(38, 38), min_sizes=(30,), max_sizes=(60,), aspect_ratios=(2,), step=8)
    boxes = prior_boxes(spec, 300)
    assert boxes.shape == (38 * 38 * 4, 4)
    # first prior: centre (4, 4) px, side 30
    torch.testing.assert_close(boxes[0], torch.tensor([-11 / 300, -11 / 300, 19 / 300, 19 / 300]))
    # last cell centre (37.5 * 8) = 300
    torch.testing.assert_close(boxes[-4], torch.tensor([285 / 300, 285 / 300, 315 / 300, 315 / 300]))
    clipped = prior_boxes(PriorBoxSpec((38, 38), (30,), (60,), (2,), clip=True, step=8), 300)
    assert clipped.min() == 0 and clipped.max() == 1
    torch.testing.assert_close(clipped, boxes.clamp(0, 1))


def _caffe_loop(spec, img_h, img_w):
    """A literal transliteration of PriorBoxLayer::Forward_cpu's loops."""
    fh, fw = spec.feature_size
    step_h, step_w = (spec.step, spec.step) if isinstance(spec.step, (int, float)) else spec.step
    if step_h == 0:
        step_h, step_w = img_h / fh, img_w / fw
    out = []
    for h in range(fh):
        for w in range(fw):
            cx, cy = (w + spec.offset) * step_w, (h + spec.offset) * step_h
            for s, mn in enumerate(spec.min_sizes):
                sizes = [(mn, mn)]
                if spec.max_sizes:
                    side = math.sqrt(mn * spec.max_sizes[s])
                    sizes.append((side, side))
                for ar in spec.expanded_aspect_ratios:
                    if abs(ar - 1) >= 1e-6:
                        sizes.append((mn * math.sqrt(ar), mn / math.sqrt(ar)))
                for bw, bh in sizes:
                    out.append([(cx - bw / 2) / img_w, (cy - bh / 2) / img_h, (cx + bw / 2) / img_w, (cy + bh / 2) / img_h])
    return torch.tensor(out, dtype=torch.float32)


def test_matches_caffe_loop_rectangular():
    specs = [
        PriorBoxSpec((5, 7), (20, 40), (35, 60), (2, 3), step=(16, 12), offset=0.5),
        PriorBoxSpec((3, 4), (50,), (), (2,), flip=False),
    ]
    got = ssd_priors(specs, (80, 96))
    want = torch.cat([_caffe_loop(s, 80, 96) for s in specs])
    assert specs[0].num_priors == 2 * 5 + 2
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_bad_specs():
    with pytest.raises(ConfigError, match="max_sizes"):
        PriorBoxSpec((2, 2), (30,), (20,))
    with pytest.raises(ConfigError, match="min_sizes"):
        PriorBoxSpec((2, 2), ())
