"""Matching: bipartite best prior per truth, then threshold; ignore regions and neg_overlap."""

from __future__ import annotations

import torch

from facemetric.detect.boxes import box_iou, encode
from facemetric.detect.matching import match_batch, match_priors, match_targets


def _reference(truths, priors, thr):
    """Caffe MatchBBox in plain Python loops."""
    iou = box_iou(priors, truths).tolist()
    n, g = len(iou), len(iou[0])
    matched = [-1] * n
    free_g, free_p = set(range(g)), set(range(n))
    while free_g:
        best, bp, bg = -1.0, -1, -1
        for p in range(n):
            if p not in free_p:
                continue
            for t in range(g):
                if t in free_g and iou[p][t] > 1e-6 and iou[p][t] > best:
                    best, bp, bg = iou[p][t], p, t
        if bp < 0:
            break
        matched[bp] = bg
        free_g.discard(bg)
        free_p.discard(bp)
    for p in range(n):
        if matched[p] < 0:
            t = max(range(g), key=lambda k: iou[p][k])
            if iou[p][t] >= thr:
                matched[p] = t
    return matched


def test_matches_reference_loop():
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        xy = torch.rand(60, 2, generator=g) * 0.7
        priors = torch.cat([xy, xy + 0.1 + torch.rand(60, 2, generator=g) * 0.2], 1)
        txy = torch.rand(4, 2, generator=g) * 0.6
        truths = torch.cat([txy, txy + 0.1 + torch.rand(4, 2, generator=g) * 0.3], 1)
        assert match_priors(truths, priors, 0.5).tolist() == _reference(truths, priors, 0.5)


def test_best_prior_even_below_threshold_and_targets():
    priors = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9], [0.05, 0.0, 0.55, 0.5]])
    truths = torch.tensor([[0.0, 0.0, 0.3, 0.3]])  # IoUs: prior 0 .04/.09 = 0.444, prior 1 0.36, prior 3 0.283
    matched = match_priors(truths, priors)
    assert matched.tolist() == [0, -1, -1, -1]
    loc, labels = match_targets(truths, torch.tensor([1]), priors)
    assert labels.tolist() == [1, 0, 0, 0]
    torch.testing.assert_close(loc[0], encode(truths, priors[0:1])[0])
    assert (loc[1:] == 0).all()
    # neg_overlap: unmatched priors with IoU in [neg_threshold, threshold) are ignored
    _, labels = match_targets(truths, torch.tensor([1]), priors, neg_threshold=0.3)
    assert labels.tolist() == [1, -1, 0, 0]


def test_ignore_regions():
    priors = torch.tensor([[0.0, 0.0, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9], [0.62, 0.6, 0.92, 0.9], [0.3, 0.6, 0.5, 0.8]])
    truths = torch.tensor([[0.0, 0.0, 0.3, 0.3]])
    ignore = torch.tensor([[0.6, 0.6, 0.9, 0.9], [0.0, 0.0, 0.3, 0.3]])  # second overlaps the truth
    _, labels = match_targets(truths, torch.tensor([1]), priors, ignore_boxes=ignore)
    assert labels.tolist() == [1, -1, -1, 0]  # positives stay positive
    loc, labels = match_batch([truths, truths[:0]], [torch.tensor([1]), torch.zeros(0, dtype=torch.long)], priors,
                              ignore_boxes=[None, ignore[:1]])
    assert loc.shape == (2, 4, 4) and labels.tolist() == [[1, 0, 0, 0], [0, -1, -1, 0]]
