"""Pixel-level losses against plain reference computations and finite differences."""

import math

import numpy as np
import torch

from facemetric.dense.losses import (
    balanced_sigmoid_ce,
    balanced_softmax_ce,
    fsds_loss,
    hed_loss,
    pixel_softmax_ce,
)


def test_pixel_softmax_ce_with_ignore_label_matches_a_loop():
    torch.manual_seed(0)
    z = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 4, 5))
    y[0, 0, :3] = 255
    y[1, 2, 2] = 255
    total, n = 0.0, 0
    for b in range(2):
        for i in range(4):
            for j in range(5):
                if int(y[b, i, j]) == 255:
                    continue
                logits = z[b, :, i, j].tolist()
                lse = math.log(sum(math.exp(v) for v in logits))
                total += lse - logits[int(y[b, i, j])]
                n += 1
    assert abs(float(pixel_softmax_ce(z, y)) - total / n) < 1e-10


def _hed_reference(z, y):
    out = 0.0
    for zb, yb in zip(z.reshape(z.shape[0], -1).numpy(), y.reshape(y.shape[0], -1).numpy(), strict=False):
        beta = (yb == 0).sum() / yb.size  # |Y-| / |Y|
        s = 1 / (1 + np.exp(-zb))
        out += -beta * np.log(s[yb == 1]).sum() - (1 - beta) * np.log(1 - s[yb == 0]).sum()
    return out


def test_balanced_sigmoid_ce_is_hed_formula():
    torch.manual_seed(1)
    z = torch.randn(3, 1, 6, 7, dtype=torch.float64)
    y = (torch.rand(3, 1, 6, 7) < 0.2).long()
    y[2] = 0  # an image without edges: beta = 1, only the negative term
    assert abs(float(balanced_sigmoid_ce(z, y, "sum")) - _hed_reference(z, y)) < 1e-9
    assert abs(float(balanced_sigmoid_ce(z, y, "mean")) - _hed_reference(z, y) / (3 * 42)) < 1e-11
    # stable for large logits (softplus form)
    big = torch.full((1, 1, 2, 2), 80.0, dtype=torch.float64)
    assert torch.isfinite(balanced_sigmoid_ce(big, torch.zeros(1, 1, 2, 2)))


def test_balanced_sigmoid_ce_gradient_matches_finite_differences():
    torch.manual_seed(2)
    z = torch.randn(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(2, 1, 3, 4) < 0.3).double()
    assert torch.autograd.gradcheck(lambda t: balanced_sigmoid_ce(t, y, "sum"), (z,))


def test_hed_total_is_sides_plus_fuse():
    torch.manual_seed(3)
    y = (torch.rand(2, 1, 5, 5) < 0.3).long()
    sides = [torch.randn(2, 1, 5, 5) for _ in range(3)]
    fuse = torch.randn(2, 1, 5, 5)
    want = sum(balanced_sigmoid_ce(s, y) for s in sides) + balanced_sigmoid_ce(fuse, y)
    assert torch.allclose(hed_loss(sides, fuse, y), want)


def test_balanced_softmax_two_classes_is_hed_loss():
    # logits [0, z]: softmax = [1 - sigmoid(z), sigmoid(z)], weights 1 - |Y_c|/|Y| = HED's beta
    torch.manual_seed(4)
    z = torch.randn(2, 1, 4, 6, dtype=torch.float64)
    y = (torch.rand(2, 4, 6) < 0.25).long()
    two = torch.cat([torch.zeros_like(z), z], 1)
    assert torch.allclose(balanced_softmax_ce(two, y, "sum"), balanced_sigmoid_ce(z, y[:, None], "sum"))


def test_fsds_loss_sums_sides_and_fuse():
    torch.manual_seed(5)
    z = torch.randint(0, 3, (2, 5, 5))
    g = [z * (z <= 1), z]
    sides = [torch.randn(2, 2, 5, 5), torch.randn(2, 3, 5, 5)]
    fuse = torch.randn(2, 3, 5, 5)
    want = balanced_softmax_ce(fuse, z) + balanced_softmax_ce(sides[0], g[0]) + balanced_softmax_ce(sides[1], g[1])
    assert torch.allclose(fsds_loss(sides, fuse, g, z), want)
