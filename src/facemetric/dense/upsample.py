"""Transposed-convolution upsampling initialised to bilinear interpolation, and Caffe-style crop.

FCN (Long, Shelhamer, Darrell, CVPR 2015) upsamples coarse scores by a factor ``f`` with a
transposed convolution of kernel ``K = 2f - f % 2`` and stride ``f`` whose weights start as the
bilinear kernel ``w[a, b] = (1 - |a - c| / f) (1 - |b - c| / f)`` with centre ``c = f - 1`` (K
odd) or ``f - 1/2`` (K even), one kernel per channel on the diagonal (channel ``i`` -> ``i``).

Alignment (the Caffe ``Crop`` offset). Without padding the transposed convolution maps coarse
cell ``i`` to output ``i f + c``. A coarse cell of stride ``f`` (2x2 pooling, 3x3 same-padded
convolutions) is centred on input pixel ``i f + (f - 1) / 2``, so output ``o + offset`` lies on
input pixel ``o`` when ``offset = c - (f - 1) / 2 = f // 2`` (:func:`crop_offset`). After that
crop, output ``o`` samples the coarse map at ``(o + 1/2) / f - 1/2``: exactly PyTorch's
``F.interpolate(mode="bilinear", align_corners=False)`` away from the border (the transposed
convolution sees zeros outside the map where ``interpolate`` clamps), which the tests check.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def bilinear_kernel(factor: int) -> Tensor:
    """The ``[K, K]`` bilinear kernel of an upsampling by ``factor`` (``K = 2f - f % 2``)."""
    f = int(factor)
    if f < 1:
        raise ValueError(f"factor: expected a positive integer, got {factor}")
    size = 2 * f - f % 2
    centre = f - 1 if size % 2 == 1 else f - 0.5
    og = torch.arange(size, dtype=torch.float64)
    filt = 1 - (og - centre).abs() / f
    return (filt[:, None] * filt[None, :]).float()


def crop_offset(factor: int) -> int:
    """The crop offset that aligns an upsampling by ``factor`` with the finer grid (``f // 2``)."""
    return int(factor) // 2


def crop_to(x: Tensor, ref: Tensor | tuple[int, int], offset: int | tuple[int, int] = 0) -> Tensor:
    """Caffe's ``Crop`` on the spatial axes: ``x[..., oy:oy + H, ox:ox + W]`` with ``(H, W)``
    the size of ``ref`` (a tensor or a size)."""
    h, w = (int(ref.shape[-2]), int(ref.shape[-1])) if isinstance(ref, Tensor) else ref
    oy, ox = (offset, offset) if isinstance(offset, int) else offset
    if x.shape[-2] < oy + h or x.shape[-1] < ox + w:
        raise ValueError(
            f"crop: {tuple(x.shape[-2:])} is too small for {(h, w)} at offset {(oy, ox)}"
        )
    return x[..., oy : oy + h, ox : ox + w]


class BilinearUpsample(nn.ConvTranspose2d):
    """``channels -> channels`` transposed convolution (kernel ``2f - f % 2``, stride ``f``, no
    bias) initialised to per-channel bilinear interpolation; ``learnable=False`` freezes it.
    ``forward(x, ref)`` upsamples and crops to ``ref``'s size at :func:`crop_offset`."""

    def __init__(self, channels: int, factor: int, learnable: bool = False):
        k = bilinear_kernel(factor)
        super().__init__(channels, channels, k.shape[0], stride=int(factor), bias=False)
        self.factor = int(factor)
        with torch.no_grad():
            self.weight.zero_()
            for c in range(channels):
                self.weight[c, c] = k
        self.weight.requires_grad_(bool(learnable))

    def forward(self, x: Tensor, ref: Tensor | tuple[int, int] | None = None) -> Tensor:  # type: ignore[override]
        y = super().forward(x)
        if ref is None:
            return y
        return crop_to(y, ref, crop_offset(self.factor))


__all__ = ["BilinearUpsample", "bilinear_kernel", "crop_offset", "crop_to"]
