"""Caffe SSD's ``NormalizeLayer`` (``normalize_layer.cpp``): L2 normalisation with a learned scale.

With ``across_spatial = False`` (SSD's conv4_3_norm), at each location ``(h, w)``::

    y[c, h, w] = x[c, h, w] / sqrt(sum_c' x[c', h, w]^2 + eps) * scale[c]

with ``across_spatial = True`` the sum runs over all of ``C x H x W`` of each sample. The scale
is one learned value per channel (``channel_shared = False``) or one for all, initialised to
``scale`` (20 in SSD).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["L2Norm"]


class L2Norm(nn.Module):
    def __init__(
        self,
        channels: int,
        scale: float = 20.0,
        across_spatial: bool = False,
        channel_shared: bool = False,
        eps: float = 1e-10,
    ):
        super().__init__()
        self.channels = channels
        self.across_spatial = across_spatial
        self.channel_shared = channel_shared
        self.eps = eps
        self.weight = nn.Parameter(torch.full((1 if channel_shared else channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (1, 2, 3) if self.across_spatial else (1,)
        norm = torch.sqrt(x.pow(2).sum(dim=dims, keepdim=True) + self.eps)
        return x / norm * self.weight.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, across_spatial={self.across_spatial}, channel_shared={self.channel_shared}"
