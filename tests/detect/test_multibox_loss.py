"""MultiBox loss vs a plain reference, a gradient check, no-face batches."""

from __future__ import annotations

import math

import torch

from facemetric.detect.multibox_loss import MultiBoxLoss


def _reference(loc, conf, loc_t, labels, ratio=3):
    """Loops over images and priors, as in Caffe's MultiBoxLossLayer."""
    total_pos = int((labels > 0).sum())
    loc_sum, conf_sum = 0.0, 0.0
    for b in range(loc.shape[0]):
        pos = [i for i in range(loc.shape[1]) if labels[b, i] > 0]
        for i in pos:
            for k in range(4):
                x = float(loc[b, i, k] - loc_t[b, i, k])
                loc_sum += 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5
        def ce(i, y, b=b):
            logits = [float(v) for v in conf[b, i]]
            m = max(logits)
            return m + math.log(sum(math.exp(v - m) for v in logits)) - logits[y]
        cands = [i for i in range(loc.shape[1]) if labels[b, i] == 0]
        cands.sort(key=lambda i: -ce(i, 0))
        neg = cands[: min(ratio * len(pos), len(cands))]
        conf_sum += sum(ce(i, int(labels[b, i])) for i in pos) + sum(ce(i, 0) for i in neg)
    n = max(1, total_pos)
    return loc_sum / n, conf_sum / n


def _batch(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(3, 20, 4, generator=g, dtype=dtype) * 1.5
    conf = torch.randn(3, 20, 3, generator=g, dtype=dtype)
    loc_t = torch.randn(3, 20, 4, generator=g, dtype=dtype)
    labels = torch.randint(0, 3, (3, 20), generator=g)
    labels[labels == 2] = torch.randint(0, 2, (int((labels == 2).sum()),), generator=g) * 2  # some class-2 positives
    labels[:, -3:] = -1  # ignored
    labels[2] = torch.where(labels[2] > 0, torch.zeros_like(labels[2]), labels[2])  # image without a face
    labels[0, :6] = torch.tensor([1, 2, 0, 0, 0, 0])
    return loc, conf, loc_t, labels


def test_matches_reference():
    for seed in range(4):
        loc, conf, loc_t, labels = _batch(seed)
        loss = MultiBoxLoss()
        loc_loss, conf_loss, num_pos = loss.components(loc, conf, loc_t, labels)
        want = _reference(loc, conf, loc_t, labels)
        assert num_pos == int((labels > 0).sum())
        assert abs(float(loc_loss) - want[0]) < 1e-9 and abs(float(conf_loss) - want[1]) < 1e-9
        assert abs(float(loss(loc, conf, loc_t, labels)) - sum(want)) < 1e-9


def test_gradcheck():
    loc, conf, loc_t, labels = (t[:2, 4:14] for t in _batch(5))
    loc = loc.clone().requires_grad_(True)
    conf = conf.clone()
    conf.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: MultiBoxLoss()(a, b, loc_t, labels), (loc, conf), eps=1e-6, fast_mode=True)


def test_no_face_batch_is_finite():
    loc = torch.randn(2, 10, 4, requires_grad=True)
    conf = torch.randn(2, 10, 2, requires_grad=True)
    labels = torch.zeros(2, 10, dtype=torch.long)
    labels[1, :3] = -1
    value = MultiBoxLoss()(loc, conf, torch.zeros(2, 10, 4), labels)
    value.backward()
    assert torch.isfinite(value) and value.item() == 0
    assert torch.isfinite(loc.grad).all() and torch.isfinite(conf.grad).all()
