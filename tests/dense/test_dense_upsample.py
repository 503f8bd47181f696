"""Transposed-convolution upsampling = bilinear interpolation; crop offsets; any input size."""

import pytest
import torch
import torch.nn.functional as F

from facemetric.dense.upsample import BilinearUpsample, bilinear_kernel, crop_offset, crop_to


def test_kernel_values_by_hand():
    # f = 2: K = 4, centre 1.5, 1-D filter [0.25, 0.75, 0.75, 0.25]
    k = bilinear_kernel(2)
    one = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(k, one[:, None] * one[None, :])
    # f = 3: K = 5, centre 2, 1-D filter [1/3, 2/3, 1, 2/3, 1/3]
    k3 = bilinear_kernel(3)
    one3 = torch.tensor([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3])
    assert torch.allclose(k3, one3[:, None] * one3[None, :])
    assert crop_offset(2) == 1 and crop_offset(3) == 1 and crop_offset(8) == 4


@pytest.mark.parametrize("factor", [2, 3, 4, 8, 16])
def test_upsampling_equals_bilinear_interpolation_inside(factor):
    torch.manual_seed(factor)
    x = torch.randn(2, 3, 7, 9)
    up = BilinearUpsample(3, factor)
    h, w = 7 * factor, 9 * factor
    got = up(x, (h, w))
    want = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert got.shape == want.shape
    # the border (where interpolate clamps and the transposed convolution sees zeros) differs
    m = factor
    assert torch.allclose(got[..., m:-m, m:-m], want[..., m:-m, m:-m], atol=1e-5)
    assert not up.weight.requires_grad
    # channels stay apart (the kernel sits on the diagonal)
    y = up(torch.cat([x[:, :1], torch.zeros_like(x[:, 1:])], 1), (h, w))
    assert y[:, 1:].abs().max() == 0


def test_crop_names_sizes():
    x = torch.arange(100.0).view(1, 1, 10, 10)
    assert torch.equal(crop_to(x, (3, 4), 2), x[..., 2:5, 2:6])
    with pytest.raises(ValueError, match="too small"):
        crop_to(x, (9, 9), 2)
