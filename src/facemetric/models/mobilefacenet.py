"""MobileFaceNet (Chen et al., "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face
Verification on Mobile Devices", CCBR 2018), in the variant of insightface's ``arcface_torch``
(deepinsight/insightface ``recognition/arcface_torch/backbones/mobilefacenet.py``, "mbf":
``blocks=(1, 4, 6, 2)``, ``scale=2``), not the paper's original table (which has 64-channel
early stages, expansion factors 2/4 and a 128-D output).

Every "conv" below is conv (no bias) -> BatchNorm2d, followed by a per-channel PReLU unless
it is "linear". With ``c = 64 * scale`` (128 for ``scale=2``), on a 112x112 input:

* conv3x3(in -> c, stride 2)                                          -> 56x56
* ``blocks[0] == 1``: grouped conv3x3(c -> c, 64 groups); otherwise ``blocks[0]`` residual
  bottlenecks of inner width 128
* bottleneck(c -> c, inner 128, stride 2)                             -> 28x28
* ``blocks[1]`` residual bottlenecks (c, inner 128)
* bottleneck(c -> 2c, inner 256, stride 2)                            -> 14x14
* ``blocks[2]`` residual bottlenecks (2c, inner 256)
* bottleneck(2c -> 2c, inner 512, stride 2)                           -> 7x7
* ``blocks[3]`` residual bottlenecks (2c, inner 256)
* conv1x1(2c -> 512)
* GDC: linear depthwise conv 7x7 (512 groups) -> BN -> flatten -> linear(512 -> D, no bias)
  -> BatchNorm1d(D) = the embedding.

A bottleneck is conv1x1(in -> inner) -> depthwise conv3x3(inner, stride s) -> linear
conv1x1(inner -> out), with ``x +`` the result when it is residual (stride 1, in == out).
The inner widths (128, 256, 512; 64 groups in the second conv) are insightface's constants and
do not change with ``scale``. Init as insightface: Kaiming normal (fan_out, ReLU) for the
convolutions and the linear layer, BN weight 1 / bias 0, PReLU 0.25.

Default ``embedding_dim=512`` (insightface; the paper uses 128). ``blocks=(2, 8, 12, 4),
scale=4`` gives insightface's "mbf_large". For inputs other than 112x112 the GDC kernel is the
size of the last feature map (ceil(H/16) x ceil(W/16)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from facemetric.errors import ConfigError
from facemetric.models.common import hw
from facemetric.models.registry import MODELS


class ConvBN(nn.Sequential):
    """conv (no bias) -> BatchNorm2d [-> PReLU]."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | tuple[int, int] = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.PReLU(out_ch))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """conv1x1 (expand to ``inner``) -> depthwise 3x3 (stride) -> linear conv1x1, [+ x]."""

    def __init__(
        self, in_ch: int, out_ch: int, inner: int, stride: int = 1, residual: bool = False
    ) -> None:
        super().__init__()
        if residual and (stride != 1 or in_ch != out_ch):
            raise ValueError("a residual bottleneck needs stride 1 and in_ch == out_ch")
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBN(in_ch, inner, 1),
            ConvBN(inner, inner, 3, stride, 1, groups=inner),
            ConvBN(inner, out_ch, 1, act=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


def _residuals(channels: int, inner: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(Bottleneck(channels, channels, inner, residual=True) for _ in range(n)))


class MobileFaceNet(nn.Module):
    """``[B, in_channels, H, W] -> [B, embedding_dim]`` (raw GDC output, not normalised).

    Args:
        embedding_dim: output dimension (insightface 512; paper 128).
        in_channels: 3 for RGB faces.
        input_size: ``(H, W)`` or a side (112).
        blocks: residual bottlenecks in the four stages (insightface "mbf": 1, 4, 6, 2).
        scale: width multiplier of the early stages (insightface "mbf": 2).
    """

    def __init__(
        self,
        embedding_dim: int = 512,
        in_channels: int = 3,
        input_size: int | tuple[int, int] = 112,
        blocks: tuple[int, int, int, int] = (1, 4, 6, 2),
        scale: int = 2,
    ) -> None:
        super().__init__()
        if int(embedding_dim) < 1:
            raise ConfigError(
                f"model.embedding_dim: expected a positive integer, got {embedding_dim}"
            )
        if int(in_channels) < 1:
            raise ConfigError(f"model.in_channels: expected a positive integer, got {in_channels}")
        blocks = tuple(int(b) for b in blocks)
        if len(blocks) != 4 or blocks[0] < 1 or min(blocks) < 0:
            raise ConfigError(
                f"model.blocks: expected 4 counts, the first >= 1, got {list(blocks)}"
            )
        if int(scale) < 1:
            raise ConfigError(f"model.scale: expected a positive integer, got {scale}")
        h, w = hw(input_size)
        if min(h, w) < 16:
            raise ConfigError(
                f"model.input_size: MobileFaceNet needs at least 16x16 pixels, got {h}x{w}"
            )
        self.embedding_dim = int(embedding_dim)
        self.in_channels = int(in_channels)
        self.input_size = (h, w)
        self.blocks = blocks
        self.scale = int(scale)
        c = 64 * self.scale
        if blocks[0] == 1:
            # insightface: a 3x3 conv with 64 groups (depthwise only when c == 64)
            second: nn.Module = ConvBN(c, c, 3, 1, 1, groups=64)
        else:
            second = _residuals(c, 128, blocks[0])
        self.layers = nn.Sequential(
            ConvBN(self.in_channels, c, 3, 2, 1),
            second,
            Bottleneck(c, c, 128, stride=2),
            _residuals(c, 128, blocks[1]),
            Bottleneck(c, 2 * c, 256, stride=2),
            _residuals(2 * c, 256, blocks[2]),
            Bottleneck(2 * c, 2 * c, 512, stride=2),
            _residuals(2 * c, 256, blocks[3]),
        )
        self.conv_sep = ConvBN(2 * c, 512, 1)
        out_h, out_w = h, w
        for _ in range(4):  # four 3x3 / stride 2 / padding 1 convolutions: ceil(n / 2)
            out_h, out_w = (out_h + 1) // 2, (out_w + 1) // 2
        self.feature_size = (out_h, out_w)
        # GDC: global depthwise conv over the whole map, linear, then the embedding.
        self.gdc = ConvBN(512, 512, (out_h, out_w), groups=512, act=False)
        self.linear = nn.Linear(512, self.embedding_dim, bias=False)
        self.features = nn.BatchNorm1d(self.embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.PReLU):
                nn.init.constant_(m.weight, 0.25)

    def forward(self, images: Tensor) -> Tensor:
        x = self.gdc(self.conv_sep(self.layers(images)))
        return self.features(self.linear(torch.flatten(x, 1)))


@MODELS.register("mobilefacenet", "mbf")
def mobilefacenet(
    embedding_dim: int = 512,
    in_channels: int = 3,
    input_size: int | tuple[int, int] = 112,
    blocks: tuple[int, int, int, int] = (1, 4, 6, 2),
    scale: int = 2,
) -> MobileFaceNet:
    """insightface's MobileFaceNet ("mbf"): 112x112 input, GDC output, 512-D by default."""
    return MobileFaceNet(embedding_dim, in_channels, input_size, blocks, scale)
