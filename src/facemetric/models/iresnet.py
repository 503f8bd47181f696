"""IResNet-18/34/50/100: the ArcFace backbones of insightface (Deng et al., CVPR 2019;
"improved residual" unit of Duta et al.'s iResNet as used by insightface's ``arcface_torch``).

Structure (deepinsight/insightface ``recognition/arcface_torch/backbones/iresnet.py``):

* stem: conv3x3(in -> 64, stride 1, padding 1, no bias) -> BN -> PReLU(64);
* four stages of 64, 128, 256, 512 channels with [2,2,2,2] (18), [3,4,6,3] (34),
  [3,4,14,3] (50) or [3,13,30,3] (100) units; every stage halves the resolution
  (112 -> 56 -> 28 -> 14 -> 7);
* unit: ``BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride s) -> BN`` plus the shortcut
  (identity, or conv1x1(stride s, no bias) -> BN in the first unit of each stage), with no
  activation after the sum;
* output block: BN2d(512) -> flatten -> dropout -> fc(512*7*7 -> D) -> BatchNorm1d(D)
  ("features"; its weight is fixed at 1 and not trained, as in insightface). The result is
  the raw embedding (insightface L2-normalises it in the loss).

BN eps 1e-5 and PyTorch's default momentum. Init as in insightface: convolutions N(0, 0.1),
BN weight 1 / bias 0, PReLU 0.25, ``fc`` PyTorch's default. The input size defaults to 112x112;
other sizes give an ``fc`` of 512 * ceil(H/16) * ceil(W/16) inputs.

With that init an *untrained* network is only usable in train mode: in eval mode the BN
running statistics (mean 0, var 1) do not rescale the N(0, 0.1) convolutions, each residual
unit multiplies the activations' scale, and IResNet-100 overflows to inf/NaN. Train (or at
least run a few batches in train mode to calibrate the BN statistics) before evaluating.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from facemetric.errors import ConfigError
from facemetric.models.common import hw
from facemetric.models.registry import MODELS

LAYERS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
}
WIDTHS = (64, 128, 256, 512)



class IBasicBlock(nn.Module):
    """``BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN`` + shortcut (no activation after)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch, eps=1e-5)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """``[B, in_channels, H, W] -> [B, embedding_dim]`` (raw, not normalised).

    Args:
        depth: 18, 34, 50 or 100.
        embedding_dim: output dimension (insightface: 512).
        in_channels: 3 for RGB faces.
        input_size: ``(H, W)`` or a side (insightface: 112).
        dropout: dropout probability before ``fc`` (insightface's default 0).
    """

    def __init__(
        self,
        depth: int = 50,
        embedding_dim: int = 512,
        in_channels: int = 3,
        input_size: int | tuple[int, int] = 112,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if int(depth) not in LAYERS:
            raise ConfigError(f"model.depth: expected one of {sorted(LAYERS)}, got {depth}")
        if int(embedding_dim) < 1:
            raise ConfigError(
                f"model.embedding_dim: expected a positive integer, got {embedding_dim}"
            )
        if int(in_channels) < 1:
            raise ConfigError(f"model.in_channels: expected a positive integer, got {in_channels}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"model.dropout: expected a probability in [0, 1), got {dropout}")
        h, w = hw(input_size)
        if min(h, w) < 16:
            raise ConfigError(f"model.input_size: IResNet needs at least 16x16 pixels, got {h}x{w}")
        self.depth = int(depth)
        self.layers = LAYERS[self.depth]
        self.embedding_dim = int(embedding_dim)
        self.in_channels = int(in_channels)
        self.input_size = (h, w)
        self.conv1 = nn.Conv2d(self.in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        prev = 64
        stages = []
        for width, units in zip(WIDTHS, self.layers, strict=True):
            blocks = [IBasicBlock(prev, width, stride=2)]
            blocks += [IBasicBlock(width, width) for _ in range(units - 1)]
            stages.append(nn.Sequential(*blocks))
            prev = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        out_h, out_w = h, w
        for _ in WIDTHS:  # 3x3 / stride 2 / padding 1 (and 1x1 / stride 2): ceil(n / 2)
            out_h, out_w = (out_h + 1) // 2, (out_w + 1) // 2
        self.feature_size = (out_h, out_w)
        self.bn2 = nn.BatchNorm2d(prev, eps=1e-5)
        self.dropout = nn.Dropout(p=float(dropout))
        self.fc = nn.Linear(prev * out_h * out_w, self.embedding_dim)
        self.features = nn.BatchNorm1d(self.embedding_dim, eps=1e-5)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """insightface's init: conv N(0, 0.1); BN weight 1, bias 0; the output BatchNorm1d's
        weight fixed at 1 (``requires_grad=False``)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.PReLU):
                nn.init.constant_(m.weight, 0.25)
        self.fc.reset_parameters()
        self.features.weight.requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(images)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def _factory(depth: int):
    def build(
        embedding_dim: int = 512,
        in_channels: int = 3,
        input_size: int | tuple[int, int] = 112,
        dropout: float = 0.0,
    ) -> IResNet:
        return IResNet(depth, embedding_dim, in_channels, input_size, dropout)

    build.__name__ = build.__qualname__ = f"iresnet{depth}"
    build.__doc__ = f"IResNet-{depth} (units {list(LAYERS[depth])}); 112x112 input, 512-D."
    return build


iresnet18 = MODELS.register("iresnet18", "ir18", "r18")(_factory(18))
iresnet34 = MODELS.register("iresnet34", "ir34", "r34")(_factory(34))
iresnet50 = MODELS.register("iresnet50", "ir50", "r50")(_factory(50))
iresnet100 = MODELS.register("iresnet100", "ir100", "r100")(_factory(100))
