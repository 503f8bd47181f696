"""FCN, HED and FSDS heads on one :class:`~facemetric.dense.trunk.VGGTrunk`.

:class:`DenseNet` holds a trunk and any of four heads (``heads`` option):

* ``fcn`` -- face parsing (Long et al., CVPR 2015). ``pool5`` -> two 3x3 conv-BN-ReLU layers
  (FCN's ``fc6``/``fc7`` as convolutions) -> 1x1 score layer. ``32s``: upsample x32 and crop to
  the input. ``16s``: upsample x2 (learned, bilinear start), crop to the 1x1 score of ``pool4``,
  add, upsample x16. ``8s``: then x2 again, add the score of ``pool3``, upsample x8. Crops use
  :func:`~facemetric.dense.upsample.crop_offset` (Caffe's offsets for this trunk's geometry).
  Skip score layers start at zero (FCN's "zero init" of the new score layers).
* ``hed`` -- edges (Xie & Tu, ICCV 2015): on each side stage a 1x1 conv to one channel,
  fixed bilinear upsampling to stride 1, crop; ``fuse`` = a 1x1 conv over the K side maps,
  weights initialised to ``1/K`` (bias 0).
* ``fsds`` -- skeletons (Shen et al., CVPR 2016): side ``i`` (``1..M``, on the stages named by
  ``fsds_stages``) predicts ``i + 1`` classes (background + scales ``1..i``); fusion is
  scale-specific: ``fuse[c] = sum_{i >= max(c, 1)} a[c, i] side_i[c]`` with ``a`` learned, one
  weight per (class, side) pair, initialised to ``1 / (number of sides that see c)``.
* ``skel_hed`` -- the HED-style skeleton baseline (HED's head trained on binary skeletons).

Trunks (``trunk`` option): ``vgg`` (:class:`~facemetric.dense.trunk.VGGTrunk`, from scratch;
``channels``/``convs``) or ``dlib-resnet`` (:class:`~facemetric.dense.trunk.DlibTrunk`, dlib's
pretrained face ResNet; ``pretrained``, ``freeze_trunk``; ``channels``/``convs`` are not used).
The dlib trunk carries the ``fcn`` head only: its unpadded downsampling puts the side maps off
the centred grid the HED/FSDS side upsampling assumes, so those heads are refused for it.

``forward`` returns a dict of logits at the input size: ``parse [B, C, H, W]``;
``edge_sides`` (list of ``[B, 1, H, W]``), ``edge_fuse``; ``skel_sides`` (list of
``[B, i + 1, H, W]``), ``skel_fuse [B, M + 1, H, W]``; ``skel_hed_sides``, ``skel_hed_fuse``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from facemetric.dense.trunk import DlibTrunk, VGGTrunk
from facemetric.dense.upsample import BilinearUpsample, crop_offset, crop_to
from facemetric.errors import ConfigError

HEADS = ("fcn", "hed", "fsds", "skel_hed")
FCN_VARIANTS = ("32s", "16s", "8s")
TRUNKS = ("vgg", "dlib-resnet")


class FCNHead(nn.Module):
    """FCN-32s/16s/8s on a trunk whose pooled maps have strides ``2, 4, ..., 2^S``."""

    def __init__(self, trunk_channels: Sequence[int], num_classes: int, variant: str = "8s",
                 width: int = 128, dropout: float = 0.0):
        super().__init__()
        if variant not in FCN_VARIANTS:
            raise ConfigError(f"model.fcn_variant: expected one of {', '.join(FCN_VARIANTS)}, got {variant!r}")
        if len(trunk_channels) < 3:
            raise ConfigError("model.channels: FCN needs at least 3 stages (pool3, pool4, pool5)")
        self.variant = variant
        self.num_stages = len(trunk_channels)
        c5, c4, c3 = trunk_channels[-1], trunk_channels[-2], trunk_channels[-3]
        self.fc = nn.Sequential(
            nn.Conv2d(c5, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.score = nn.Conv2d(width, num_classes, 1)
        top = 2 ** self.num_stages  # stride of pool5
        if variant == "32s":
            self.up_final = BilinearUpsample(num_classes, top)
        else:
            self.score_pool4 = nn.Conv2d(c4, num_classes, 1)
            nn.init.zeros_(self.score_pool4.weight)
            nn.init.zeros_(self.score_pool4.bias)
            self.up2 = BilinearUpsample(num_classes, 2, learnable=True)
            if variant == "16s":
                self.up_final = BilinearUpsample(num_classes, top // 2)
            else:
                self.score_pool3 = nn.Conv2d(c3, num_classes, 1)
                nn.init.zeros_(self.score_pool3.weight)
                nn.init.zeros_(self.score_pool3.bias)
                self.up2b = BilinearUpsample(num_classes, 2, learnable=True)
                self.up_final = BilinearUpsample(num_classes, top // 4)

    def forward(self, pooled: list[Tensor], size: tuple[int, int]) -> Tensor:
        x = self.score(self.fc(pooled[-1]))
        if self.variant != "32s":
            s4 = self.score_pool4(pooled[-2])
            x = self.up2(x, s4) + s4
            if self.variant == "8s":
                s3 = self.score_pool3(pooled[-3])
                x = self.up2b(x, s3) + s3
        return self.up_final(x, size)


class HEDHead(nn.Module):
    """Side outputs (1x1 conv -> bilinear upsampling -> crop) and the 1/K-initialised fusion."""

    def __init__(self, channels: Sequence[int], strides: Sequence[int]):
        super().__init__()
        self.score = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in channels)
        self.up = nn.ModuleList(
            BilinearUpsample(1, s) if s > 1 else nn.Identity() for s in strides
        )
        k = len(channels)
        self.fuse = nn.Conv2d(k, 1, 1)
        nn.init.constant_(self.fuse.weight, 1.0 / k)
        nn.init.zeros_(self.fuse.bias)

    def forward(self, feats: Sequence[Tensor], size: tuple[int, int]) -> tuple[list[Tensor], Tensor]:
        sides = []
        for f, score, up in zip(feats, self.score, self.up, strict=False):
            y = score(f)
            sides.append(up(y, size) if isinstance(up, BilinearUpsample) else crop_to(y, size))
        return sides, self.fuse(torch.cat(sides, 1))


class FSDSHead(nn.Module):
    """Scale-associated side outputs and scale-specific fusion (module docstring)."""

    def __init__(self, channels: Sequence[int], strides: Sequence[int]):
        super().__init__()
        m = len(channels)
        self.num_sides = m
        self.score = nn.ModuleList(nn.Conv2d(c, i + 2, 1) for i, c in enumerate(channels))
        self.up = nn.ModuleList(
            BilinearUpsample(i + 2, s) if s > 1 else nn.Identity() for i, s in enumerate(strides)
        )
        # fuse_weight[c, i]: weight of side i's class-c map in the fused class c (0: unused)
        w = torch.zeros(m + 1, m)
        for c in range(m + 1):
            seen = [i for i in range(m) if i + 1 >= max(c, 1)]
            w[c, seen] = 1.0 / len(seen)
        self.fuse_weight = nn.Parameter(w)
        self.register_buffer("fuse_mask", (w > 0).float())

    def forward(self, feats: Sequence[Tensor], size: tuple[int, int]) -> tuple[list[Tensor], Tensor]:
        sides = []
        for f, score, up in zip(feats, self.score, self.up, strict=False):
            y = score(f)
            sides.append(up(y, size) if isinstance(up, BilinearUpsample) else crop_to(y, size))
        w = self.fuse_weight * self.fuse_mask
        m = self.num_sides
        fused = []
        for c in range(m + 1):
            acc = None
            for i in range(m):
                if self.fuse_mask[c, i] > 0:
                    term = w[c, i] * sides[i][:, c]
                    acc = term if acc is None else acc + term
            fused.append(acc)
        return sides, torch.stack(fused, 1)


def _stages(value: Any, n: int, field: str) -> list[int]:
    stages = [int(s) for s in value]
    if not stages or min(stages) < 1 or max(stages) > n or sorted(set(stages)) != stages:
        raise ConfigError(f"model.{field}: expected increasing stage numbers in 1..{n}, got {list(value)}")
    return stages


class DenseNet(nn.Module):
    """Trunk + the heads named in ``heads`` (module docstring). ``options()`` rebuilds it."""

    def __init__(
        self,
        heads: Sequence[str] = ("fcn",),
        channels: Sequence[int] = (16, 32, 64, 96, 128),
        convs: Sequence[int] | int = 2,
        num_classes: int = 3,
        fcn_variant: str = "8s",
        fcn_width: int = 128,
        dropout: float = 0.0,
        hed_stages: Sequence[int] = (1, 2, 3, 4, 5),
        fsds_stages: Sequence[int] = (2, 3, 4, 5),
        in_channels: int = 3,
        trunk: str = "vgg",
        pretrained: bool = True,
        freeze_trunk: bool = False,
    ):
        super().__init__()
        heads = [str(h) for h in heads]
        bad = [h for h in heads if h not in HEADS]
        if bad or not heads:
            raise ConfigError(f"model.heads: expected some of {', '.join(HEADS)}, got {heads}")
        if trunk not in TRUNKS:
            raise ConfigError(f"model.trunk: expected one of {', '.join(TRUNKS)}, got {trunk!r}")
        if trunk == "dlib-resnet" and heads != ["fcn"]:
            raise ConfigError(f"model.heads: the dlib-resnet trunk carries the fcn head only, got {heads}")
        self._options = {
            "heads": heads, "channels": [int(c) for c in channels],
            "convs": convs if isinstance(convs, int) else [int(c) for c in convs],
            "num_classes": int(num_classes), "fcn_variant": str(fcn_variant),
            "fcn_width": int(fcn_width), "dropout": float(dropout),
            "hed_stages": [int(s) for s in hed_stages], "fsds_stages": [int(s) for s in fsds_stages],
            "in_channels": int(in_channels), "trunk": str(trunk), "pretrained": bool(pretrained),
            "freeze_trunk": bool(freeze_trunk),
        }
        self.heads = heads
        if trunk == "dlib-resnet":
            if int(in_channels) != 3:
                raise ConfigError(f"model.in_channels: the dlib-resnet trunk takes RGB (3), got {in_channels}")
            self.trunk: VGGTrunk | DlibTrunk = DlibTrunk(bool(pretrained), bool(freeze_trunk))
        else:
            self.trunk = VGGTrunk(channels, convs, in_channels)
        n = self.trunk.num_stages
        ch, st = self.trunk.channels, self.trunk.strides()
        # stage lists are checked (and used) only for the heads that use them
        self.hed_stages = _stages(hed_stages, n, "hed_stages") if "hed" in heads else []
        skel = "fsds" in heads or "skel_hed" in heads
        self.fsds_stages = _stages(fsds_stages, n, "fsds_stages") if skel else []
        if "fcn" in heads:
            self.fcn = FCNHead(ch, num_classes, fcn_variant, fcn_width, dropout)
        if "hed" in heads:
            self.hed = HEDHead([ch[s - 1] for s in self.hed_stages], [st[s - 1] for s in self.hed_stages])
        if "skel_hed" in heads:
            self.skel_hed = HEDHead([ch[s - 1] for s in self.fsds_stages],
                                    [st[s - 1] for s in self.fsds_stages])
        if "fsds" in heads:
            self.fsds = FSDSHead([ch[s - 1] for s in self.fsds_stages], [st[s - 1] for s in self.fsds_stages])

    def options(self) -> dict[str, Any]:
        return dict(self._options)

    def preprocessing(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The trunk's own ``(mean, std)`` on 0..1 RGB (dlib's), or None (ImageNet's)."""
        mean, std = getattr(self.trunk, "mean", None), getattr(self.trunk, "std", None)
        return None if mean is None or std is None else (tuple(mean), tuple(std))

    def fsds_receptive_fields(self) -> list[int]:
        """Receptive fields of the FSDS side outputs (what :func:`quantise_scales` needs)."""
        rf = self.trunk.receptive_fields()
        return [rf[s - 1] for s in self.fsds_stages]

    def forward(self, x: Tensor) -> dict[str, Any]:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        feats, pooled = self.trunk(x)
        out: dict[str, Any] = {}
        if "fcn" in self.heads:
            out["parse"] = self.fcn(pooled, size)
        if "hed" in self.heads:
            out["edge_sides"], out["edge_fuse"] = self.hed([feats[s - 1] for s in self.hed_stages], size)
        if "skel_hed" in self.heads:
            out["skel_hed_sides"], out["skel_hed_fuse"] = self.skel_hed(
                [feats[s - 1] for s in self.fsds_stages], size)
        if "fsds" in self.heads:
            out["skel_sides"], out["skel_fuse"] = self.fsds([feats[s - 1] for s in self.fsds_stages], size)
        return out


__all__ = ["FCN_VARIANTS", "HEADS", "TRUNKS", "DenseNet", "FCNHead", "FSDSHead", "HEDHead", "crop_offset"]
