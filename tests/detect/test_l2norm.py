"""L2Norm = Caffe NormalizeLayer."""

from __future__ import annotations

import torch

from facemetric.detect.l2norm import L2Norm


def test_per_location_formula():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    layer = L2Norm(3).double()
    assert torch.equal(layer.weight, torch.full((3,), 20.0, dtype=torch.float64))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
    y = layer(x)
    n, h, w = 1, 2, 3
    norm = (sum(x[n, c, h, w] ** 2 for c in range(3)) + 1e-10) ** 0.5
    for c in range(3):
        assert abs(y[n, c, h, w] - x[n, c, h, w] / norm * (c + 1)) < 1e-12
    # unit norm per location when the scale is 1
    unit = L2Norm(3, scale=1.0).double()(x)
    torch.testing.assert_close(unit.pow(2).sum(1), torch.ones(2, 4, 5, dtype=torch.float64))


def test_across_spatial_and_shared_and_grad():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    layer = L2Norm(3, scale=2.0, across_spatial=True, channel_shared=True).double()
    assert layer.weight.shape == (1,)
    y = layer(x)
    torch.testing.assert_close(y[1], x[1] / (x[1].pow(2).sum() + 1e-10).sqrt() * 2)
    assert torch.autograd.gradcheck(L2Norm(3).double(), (x,))
    zero = L2Norm(3)(torch.zeros(1, 3, 2, 2))
    assert torch.isfinite(zero).all()
