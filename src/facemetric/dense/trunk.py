"""A VGG-like fully convolutional trunk for pixel-level heads (any input size).

Stage ``s`` (``s = 1..S``) is ``convs[s]`` x (3x3 convolution, padding 1 -> batch norm -> ReLU)
with ``channels[s]`` filters, preceded (for ``s > 1``) by 2x2 max pooling of stride 2 in ceil
mode (Caffe's pooling), so stage ``s`` has stride ``2^(s-1)``. ``forward`` returns every
stage's output (HED/FSDS side outputs) and the final pooled map (stride ``2^S``; FCN's
``pool5``), with the pooled maps of each stage (``pool3``, ``pool4``) for FCN's skips.

Receptive fields (:meth:`VGGTrunk.receptive_fields`) follow ``r <- r + (k - 1) j`` and
``j <- j * stride`` layer by layer (``j``: the cumulative stride); with two convolutions per
stage: 5, 14, 32, 68, 140 pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from facemetric.errors import ConfigError


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class VGGTrunk(nn.Module):
    """Stages of 3x3 conv-BN-ReLU blocks separated by 2x2 max pooling (see the module docstring)."""

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 96, 128),
        convs: Sequence[int] | int = 2,
        in_channels: int = 3,
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ConfigError(f"model.channels: expected a list of positive integers, got {channels}")
        convs = [int(convs)] * len(channels) if isinstance(convs, int) else [int(c) for c in convs]
        if len(convs) != len(channels) or min(convs) < 1:
            raise ConfigError(
                f"model.convs: expected one positive count per stage ({len(channels)}), got {convs}"
            )
        self.channels = channels
        self.convs = convs
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        stages = []
        cin = in_channels
        for cout, n in zip(channels, convs, strict=False):
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += _conv(cin, cout)
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def strides(self) -> list[int]:
        """Stride of each stage's output: ``1, 2, 4, ...``."""
        return [2**s for s in range(self.num_stages)]

    def receptive_fields(self) -> list[int]:
        """Receptive field (pixels) of each stage's output (module docstring's recursion)."""
        r, j, out = 1, 1, []
        for s, n in enumerate(self.convs):
            if s > 0:  # 2x2 pooling, stride 2
                r += (2 - 1) * j
                j *= 2
            r += n * (3 - 1) * j
            out.append(r)
        return out

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``(stage_outputs, pooled)``: ``stage_outputs[s]`` at stride ``2^s``; ``pooled[s]`` the
        max pooling of stage ``s`` (stride ``2^(s+1)``; ``pooled[-1]`` is FCN's ``pool5``)."""
        feats, pooled = [], []
        h = x
        for s, stage in enumerate(self.stages):
            if s > 0:
                h = pooled[-1]
            h = stage(h)
            feats.append(h)
            pooled.append(self.pool(h))
        return feats, pooled


__all__ = ["VGGTrunk"]
