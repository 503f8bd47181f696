"""Inception-ResNet-v1 as used by FaceNet (Schroff et al., CVPR 2015; architecture of Szegedy et
al., "Inception-v4, Inception-ResNet and the Impact of Residual Connections", 2016), following
davidsandberg/facenet ``src/models/inception_resnet_v1.py`` (the model of its 20170512 and
20180402 pretrained networks).

Every "conv" is conv (no bias) -> BatchNorm (TF-slim ``batch_norm`` with decay 0.995 and
epsilon 0.001; slim's default ``scale=False``: a learned shift beta but no scale gamma) ->
ReLU. TF ``SAME`` padding of the stride-1 convolutions is ``k // 2`` per side; all stride-2
convolutions and poolings are ``VALID``. Sizes below are for the 160x160 input:

* stem: conv3x3/2 32 (79) -> conv3x3 32 (77) -> conv3x3 64 pad 1 (77) -> maxpool3x3/2 (38)
  -> conv1x1 80 -> conv3x3 192 (36) -> conv3x3/2 256 (17)
* 5 x block35 (scale 0.17): branches conv1x1 32 | 1x1 32 -> 3x3 32 | 1x1 32 -> 3x3 32 -> 3x3 32,
  concatenated (96) -> conv1x1 256 *with bias, no BN, no activation*; ``relu(x + 0.17 * up)``
* reduction-A (k, l, m, n = 192, 192, 256, 384): 3x3/2 384 | 1x1 192 -> 3x3 192 -> 3x3/2 256 |
  maxpool3x3/2 -> 896 channels (8x8)
* 10 x block17 (scale 0.10): 1x1 128 | 1x1 128 -> 1x7 128 -> 7x1 128 -> up conv1x1 896
* reduction-B: 1x1 256 -> 3x3/2 384 | 1x1 256 -> 3x3/2 256 | 1x1 256 -> 3x3 256 -> 3x3/2 256 |
  maxpool3x3/2 -> 1792 channels (3x3)
* 5 x block8 (scale 0.20): 1x1 192 | 1x1 192 -> 1x3 192 -> 3x1 192 -> up conv1x1 1792; then one
  more block8 with scale 1.0 and no activation
* global average pool -> flatten (1792) -> dropout (facenet keep_prob 0.8 -> p = 0.2)
* "Bottleneck": ``slim.fully_connected(1792 -> D, activation_fn=None)`` under the arg-scope
  ``normalizer_fn=slim.batch_norm``: a linear layer without bias -> BatchNorm1d (beta only).

BatchNorm: ``eps=1e-3`` and PyTorch ``momentum = 1 - 0.995 = 0.005`` (TF's ``decay`` weighs the
old running value, PyTorch's ``momentum`` the new batch statistic). ``bn_scale=True`` adds the
(then learned) BN scale gamma, as in ports such as timesler/facenet-pytorch. Weights init:
truncated normal (std 0.1, cut at 2 std) for the convolutions and the bottleneck, as in the
facenet version read; up-convolution biases and BN shifts 0.

``embedding_dim`` defaults to 512 (facenet's 20180402 models; the older ones use 128). The
input must be at least 75x75 (160x160 by default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facemetric.errors import ConfigError
from facemetric.models.common import hw
from facemetric.models.registry import MODELS

BN_EPS = 1e-3
BN_MOMENTUM = 0.005  # = 1 - TF decay 0.995
#: number of (block35, block17, block8) repeats; one more block8 without activation follows.
REPEATS = (5, 10, 5)
SCALES = (0.17, 0.10, 0.20)



class _SlimBatchNorm(nn.modules.batchnorm._BatchNorm):
    """TF-slim ``batch_norm`` (``center=True``, ``scale`` configurable) with eps 0.001 and
    decay 0.995. Without ``scale`` the module has a learned ``bias`` (beta) and no ``weight``."""

    def __init__(self, num_features: int, scale: bool = False) -> None:
        super().__init__(num_features, eps=BN_EPS, momentum=BN_MOMENTUM, affine=scale)
        if not scale:
            self.bias = nn.Parameter(torch.zeros(num_features))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, scale={self.affine}"

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected a 2-D or 4-D input, got {x.dim()}-D")


class BasicConv(nn.Sequential):
    """conv (no bias) -> slim BN -> ReLU (TF ``SAME`` padding for stride 1, else ``VALID``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        bn_scale: bool = False,
    ) -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        if padding is None:
            padding = (kh // 2, kw // 2) if stride == 1 else 0
        super().__init__(
            nn.Conv2d(in_ch, out_ch, (kh, kw), stride, padding, bias=False),
            _SlimBatchNorm(out_ch, bn_scale),
            nn.ReLU(inplace=True),
        )


class _ResidualInception(nn.Module):
    """``act(x + scale * up(concat(branches(x))))``; ``up`` is a 1x1 conv with bias, no BN."""

    branches: nn.ModuleList

    def __init__(self, channels: int, mixed: int, scale: float, activation: bool) -> None:
        super().__init__()
        self.scale = float(scale)
        self.activation = bool(activation)
        self.up = nn.Conv2d(mixed, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        mixed = torch.cat([branch(x) for branch in self.branches], 1)
        out = x + self.scale * self.up(mixed)
        return F.relu(out) if self.activation else out


class Block35(_ResidualInception):
    """Inception-ResNet-A (35x35 grid in the paper; 17x17 for a 160 input), 256 channels."""

    def __init__(
        self, scale: float = 0.17, activation: bool = True, bn_scale: bool = False
    ) -> None:
        super().__init__(256, 96, scale, activation)
        self.branches = nn.ModuleList(
            [
                BasicConv(256, 32, 1, bn_scale=bn_scale),
                nn.Sequential(
                    BasicConv(256, 32, 1, bn_scale=bn_scale),
                    BasicConv(32, 32, 3, bn_scale=bn_scale),
                ),
                nn.Sequential(
                    BasicConv(256, 32, 1, bn_scale=bn_scale),
                    BasicConv(32, 32, 3, bn_scale=bn_scale),
                    BasicConv(32, 32, 3, bn_scale=bn_scale),
                ),
            ]
        )


class Block17(_ResidualInception):
    """Inception-ResNet-B (17x17 grid in the paper), 896 channels."""

    def __init__(
        self, scale: float = 0.10, activation: bool = True, bn_scale: bool = False
    ) -> None:
        super().__init__(896, 256, scale, activation)
        self.branches = nn.ModuleList(
            [
                BasicConv(896, 128, 1, bn_scale=bn_scale),
                nn.Sequential(
                    BasicConv(896, 128, 1, bn_scale=bn_scale),
                    BasicConv(128, 128, (1, 7), bn_scale=bn_scale),
                    BasicConv(128, 128, (7, 1), bn_scale=bn_scale),
                ),
            ]
        )


class Block8(_ResidualInception):
    """Inception-ResNet-C (8x8 grid in the paper), 1792 channels."""

    def __init__(
        self, scale: float = 0.20, activation: bool = True, bn_scale: bool = False
    ) -> None:
        super().__init__(1792, 384, scale, activation)
        self.branches = nn.ModuleList(
            [
                BasicConv(1792, 192, 1, bn_scale=bn_scale),
                nn.Sequential(
                    BasicConv(1792, 192, 1, bn_scale=bn_scale),
                    BasicConv(192, 192, (1, 3), bn_scale=bn_scale),
                    BasicConv(192, 192, (3, 1), bn_scale=bn_scale),
                ),
            ]
        )


class _Concat(nn.Module):
    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


def reduction_a(bn_scale: bool = False) -> _Concat:
    """Mixed_6a with (k, l, m, n) = (192, 192, 256, 384): 256 -> 896 channels."""
    return _Concat(
        BasicConv(256, 384, 3, 2, bn_scale=bn_scale),
        nn.Sequential(
            BasicConv(256, 192, 1, bn_scale=bn_scale),
            BasicConv(192, 192, 3, bn_scale=bn_scale),
            BasicConv(192, 256, 3, 2, bn_scale=bn_scale),
        ),
        nn.MaxPool2d(3, 2),
    )


def reduction_b(bn_scale: bool = False) -> _Concat:
    """Mixed_7a: 896 -> 384 + 256 + 256 + 896 = 1792 channels."""
    return _Concat(
        nn.Sequential(
            BasicConv(896, 256, 1, bn_scale=bn_scale), BasicConv(256, 384, 3, 2, bn_scale=bn_scale)
        ),
        nn.Sequential(
            BasicConv(896, 256, 1, bn_scale=bn_scale), BasicConv(256, 256, 3, 2, bn_scale=bn_scale)
        ),
        nn.Sequential(
            BasicConv(896, 256, 1, bn_scale=bn_scale),
            BasicConv(256, 256, 3, bn_scale=bn_scale),
            BasicConv(256, 256, 3, 2, bn_scale=bn_scale),
        ),
        nn.MaxPool2d(3, 2),
    )


def _valid(n: int, k: int = 3, s: int = 2) -> int:
    return (n - k) // s + 1


def _final_side(n: int) -> int:
    """Side of the last feature map for an input side ``n`` (stem, reduction-A, reduction-B)."""
    n = _valid(n)  # Conv2d_1a_3x3 /2
    n = _valid(n, s=1)  # Conv2d_2a_3x3
    n = _valid(n)  # MaxPool_3a_3x3 /2 (Conv2d_2b is SAME)
    n = _valid(n, s=1)  # Conv2d_4a_3x3 (Conv2d_3b is 1x1)
    n = _valid(n)  # Conv2d_4b_3x3 /2
    n = _valid(n)  # reduction-A
    return _valid(n)  # reduction-B


class InceptionResNetV1(nn.Module):
    """``[B, in_channels, H, W] -> [B, embedding_dim]`` (raw bottleneck output, not normalised).

    Args:
        embedding_dim: bottleneck size (facenet 20180402: 512; 20170512: 128).
        in_channels: 3 for RGB faces.
        input_size: ``(H, W)`` or a side (facenet: 160); at least 75.
        dropout: dropout probability before the bottleneck (facenet keep_prob 0.8 -> 0.2).
        bn_scale: learn a BN scale (gamma) too; facenet/TF-slim's default has none.
    """

    def __init__(
        self,
        embedding_dim: int = 512,
        in_channels: int = 3,
        input_size: int | tuple[int, int] = 160,
        dropout: float = 0.2,
        bn_scale: bool = False,
    ) -> None:
        super().__init__()
        if int(embedding_dim) < 1:
            raise ConfigError(
                f"model.embedding_dim: expected a positive integer, got {embedding_dim}"
            )
        if int(in_channels) < 1:
            raise ConfigError(f"model.in_channels: expected a positive integer, got {in_channels}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"model.dropout: expected a probability in [0, 1), got {dropout}")
        h, w = hw(input_size)
        if min(h, w) < 75:
            raise ConfigError(
                f"model.input_size: Inception-ResNet-v1 needs at least 75x75 pixels, got {h}x{w}"
            )
        self.embedding_dim = int(embedding_dim)
        self.in_channels = int(in_channels)
        self.input_size = (h, w)
        self.bn_scale = bool(bn_scale)
        bs = self.bn_scale
        self.stem = nn.Sequential(
            BasicConv(self.in_channels, 32, 3, 2, bn_scale=bs),  # Conv2d_1a_3x3
            BasicConv(32, 32, 3, padding=0, bn_scale=bs),  # Conv2d_2a_3x3 (VALID)
            BasicConv(32, 64, 3, bn_scale=bs),  # Conv2d_2b_3x3 (SAME)
            nn.MaxPool2d(3, 2),  # MaxPool_3a_3x3
            BasicConv(64, 80, 1, bn_scale=bs),  # Conv2d_3b_1x1
            BasicConv(80, 192, 3, padding=0, bn_scale=bs),  # Conv2d_4a_3x3 (VALID)
            BasicConv(192, 256, 3, 2, bn_scale=bs),  # Conv2d_4b_3x3
        )
        n35, n17, n8 = REPEATS
        s35, s17, s8 = SCALES
        self.repeat_1 = nn.Sequential(*(Block35(s35, bn_scale=bs) for _ in range(n35)))
        self.mixed_6a = reduction_a(bs)
        self.repeat_2 = nn.Sequential(*(Block17(s17, bn_scale=bs) for _ in range(n17)))
        self.mixed_7a = reduction_b(bs)
        self.repeat_3 = nn.Sequential(*(Block8(s8, bn_scale=bs) for _ in range(n8)))
        self.block8 = Block8(1.0, activation=False, bn_scale=bs)
        self.feature_size = (_final_side(h), _final_side(w))
        self.dropout = nn.Dropout(float(dropout))
        self.bottleneck = nn.Linear(1792, self.embedding_dim, bias=False)
        self.bottleneck_bn = _SlimBatchNorm(self.embedding_dim, bs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """facenet: truncated normal (std 0.1) weights, zero biases / BN shifts, BN scale 1."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, 0.0, 0.1, -0.2, 0.2)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _SlimBatchNorm):
                m.reset_running_stats()
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, images: Tensor) -> Tensor:
        x = self.mixed_6a(self.repeat_1(self.stem(images)))
        x = self.block8(self.repeat_3(self.mixed_7a(self.repeat_2(x))))
        x = self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return self.bottleneck_bn(self.bottleneck(x))


@MODELS.register("inception-resnet-v1", "facenet", "inception_resnet_v1")
def inception_resnet_v1(
    embedding_dim: int = 512,
    in_channels: int = 3,
    input_size: int | tuple[int, int] = 160,
    dropout: float = 0.2,
    bn_scale: bool = False,
) -> InceptionResNetV1:
    """facenet's Inception-ResNet-v1: 160x160 input, 512-D bottleneck by default."""
    return InceptionResNetV1(embedding_dim, in_channels, input_size, dropout, bn_scale)
