"""An SSD assembly (Liu et al., ECCV 2016, weiliu89's Caffe layout), a small trunk trainable
from scratch on a CPU, and the trained-detector artifact.

:class:`SSD` = a trunk returning its source feature maps (first one optionally L2-normalised
with a learned per-channel scale, as SSD's conv4_3_norm) + one 3x3 ``loc`` conv
(``4 * priors_per_cell`` outputs) and one 3x3 ``conf`` conv (``num_classes * priors_per_cell``)
per source; each head output is permuted to NHWC, flattened and the sources concatenated
(Caffe ``Permute(0, 2, 3, 1)`` + ``Flatten`` + ``Concat``), so prior ``n`` of the result is the
``n``-th of :func:`facemetric.detect.priors.ssd_priors` over the same layers.
``forward(x [B, 3, h, w]) -> (loc [B, N, 4], conf_logits [B, N, num_classes])``, like
:class:`facemetric.detect.res10.Res10SSD`; the module carries ``priors`` (a buffer),
``prior_specs``, ``variances``, ``input_size`` and ``num_classes``.

:class:`TinyTrunk` (3x3 conv + BatchNorm + ReLU stages, strides 8, 16, 32, 64 for the sources)
costs ~40 MMAC at 128x128. :func:`build_ssd` builds a named architecture from a config
(:data:`SSD_ARCHS`: ``tiny``; ``res10``, OpenCV's res10 SSD, optionally with its weights).

The artifact (:func:`save_ssd_artifact` / :func:`load_ssd_artifact`) is one ``torch.save``
file: ``format``, ``arch`` (name + arguments to rebuild), ``state_dict``, ``preprocessing``
(:class:`SSDInput`: input size, colour order, mean, scale), ``detection_output``
(:class:`~facemetric.detect.detection_output.DetectionOutput` arguments) and ``meta``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facemetric.detect.l2norm import L2Norm
from facemetric.detect.priors import PriorBoxSpec, priors_per_cell, ssd_priors
from facemetric.detect.res10 import Res10SSD, load_res10
from facemetric.errors import ConfigError, FacemetricError
from facemetric.io import atomic_torch_save
from facemetric.registry import Registry

__all__ = [
    "ARTIFACT_FORMAT",
    "SSD",
    "SSD_ARCHS",
    "SSDInput",
    "TinyTrunk",
    "build_ssd",
    "flatten_predictions",
    "load_ssd_artifact",
    "multibox_heads",
    "save_ssd_artifact",
]

ARTIFACT_FORMAT = "facemetric-ssd-1"


def multibox_heads(
    channels: Sequence[int], priors: Sequence[int], num_classes: int, kernel_size: int = 3
) -> tuple[nn.ModuleList, nn.ModuleList]:
    """``(loc, conf)`` conv heads, one per source with ``channels[i]`` in and ``priors[i]`` per cell."""
    pad = kernel_size // 2
    loc = nn.ModuleList(nn.Conv2d(c, p * 4, kernel_size, padding=pad) for c, p in zip(channels, priors, strict=True))
    conf = nn.ModuleList(
        nn.Conv2d(c, p * num_classes, kernel_size, padding=pad) for c, p in zip(channels, priors, strict=True)
    )
    return loc, conf


def flatten_predictions(maps: Sequence[torch.Tensor], last: int) -> torch.Tensor:
    """Head outputs ``[B, P * last, H, W]`` -> ``[B, sum(H W P), last]`` (NHWC flatten + concat)."""
    b = maps[0].shape[0]
    return torch.cat([m.permute(0, 2, 3, 1).reshape(b, -1) for m in maps], dim=1).view(b, -1, last)


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TinyTrunk(nn.Module):
    """Sources at strides 8, 16, 32, 64 (for 128x128: 16, 8, 4, 2 cells a side).

    ``widths = (w0, w1, w2, w3)``: stem 3x3/2 -> w0; 3x3/2 -> w1, 3x3 -> w1; 3x3/2 -> w2, 3x3 -> w2
    (source 0); 3x3/2 -> w3, 3x3 -> w3 (source 1); extras (SSD style) 1x1 -> e/2, 3x3/2 -> e for
    each of ``extras`` (sources 2, 3, ...).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), extras: Sequence[int] = (128, 128)):
        super().__init__()
        w0, w1, w2, w3 = (int(w) for w in widths)
        self.stage0 = nn.Sequential(
            _conv_bn(3, w0, stride=2), _conv_bn(w0, w1, stride=2), _conv_bn(w1, w1),
            _conv_bn(w1, w2, stride=2), _conv_bn(w2, w2),
        )
        self.stage1 = nn.Sequential(_conv_bn(w2, w3, stride=2), _conv_bn(w3, w3))
        blocks, cin = [], w3
        for e in extras:
            blocks.append(nn.Sequential(_conv_bn(cin, max(8, e // 2), k=1), _conv_bn(max(8, e // 2), int(e), stride=2)))
            cin = int(e)
        self.extras = nn.ModuleList(blocks)
        self.channels = (w2, w3, *(int(e) for e in extras))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s0 = self.stage0(x)
        out = [s0, self.stage1(s0)]
        for block in self.extras:
            out.append(block(out[-1]))
        return out


class SSD(nn.Module):
    """Trunk + (optional) L2Norm on source 0 + multibox heads (see the module docstring).

    ``priors``: one dict per source with ``min_sizes``, ``max_sizes``, ``aspect_ratios`` (and
    optionally ``flip``, ``clip``, ``step``, ``offset``) in input pixels; the feature sizes come
    from a shape-only trunk forward at ``input_size``.
    """

    variances: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)

    def __init__(
        self,
        trunk: nn.Module,
        channels: Sequence[int],
        priors: Sequence[Mapping[str, Any]],
        input_size: Sequence[int],
        num_classes: int = 2,
        norm_scale: float | None = 20.0,
    ):
        super().__init__()
        if len(priors) != len(channels):
            raise ConfigError(f"priors: expected one entry per source ({len(channels)}), got {len(priors)}")
        self.trunk = trunk
        self.num_classes = int(num_classes)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.norm = L2Norm(channels[0], scale=norm_scale) if norm_scale is not None else None
        with torch.no_grad():
            was = trunk.training
            trunk.eval()
            maps = trunk(torch.zeros(1, 3, *self.input_size))
            trunk.train(was)
        if len(maps) != len(channels):
            raise ConfigError(f"model: the trunk gives {len(maps)} sources, expected {len(channels)}")
        specs = []
        for i, (spec, m) in enumerate(zip(priors, maps, strict=True)):
            unknown = set(spec) - {"min_sizes", "max_sizes", "aspect_ratios", "flip", "clip", "step", "offset"}
            if unknown:
                raise ConfigError(f"model.priors[{i}]: unknown key {sorted(unknown)[0]!r}")
            specs.append(PriorBoxSpec(feature_size=(int(m.shape[2]), int(m.shape[3])), **dict(spec)))
        self.prior_specs = tuple(specs)
        self.loc, self.conf = multibox_heads(channels, [priors_per_cell(s) for s in specs], self.num_classes)
        self.register_buffer("priors", ssd_priors(self.prior_specs, self.input_size), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sources = self.trunk(x)
        if self.norm is not None:
            sources = [self.norm(sources[0]), *sources[1:]]
        loc = flatten_predictions([h(s) for h, s in zip(self.loc, sources, strict=True)], 4)
        conf = flatten_predictions([h(s) for h, s in zip(self.conf, sources, strict=True)], self.num_classes)
        return loc, conf


@dataclass(frozen=True)
class SSDInput:
    """How a photo becomes the network input: resize to ``input_size`` ``(h, w)`` (bilinear),
    channels in ``colour`` order (``rgb``/``bgr``), ``(pixel - mean) * scale`` with pixel 0..255."""

    input_size: tuple[int, int]
    colour: str = "rgb"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    scale: float = 1 / 128

    def to_tensor(self, rgb: torch.Tensor) -> torch.Tensor:
        """``[B, 3, h, w]`` RGB 0..255 (already resized) -> network input."""
        x = rgb.flip(1) if self.colour == "bgr" else rgb
        return (x - torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)) * self.scale

    def mean_rgb(self) -> tuple[float, float, float]:
        return tuple(reversed(self.mean)) if self.colour == "bgr" else self.mean  # type: ignore[return-value]


#: architecture name -> builder ``(**arch) -> (model, SSDInput)``
SSD_ARCHS: Registry[Any] = Registry("SSD architecture")


@SSD_ARCHS.register("tiny")
def _tiny(
    input_size: Sequence[int] = (128, 128),
    widths: Sequence[int] = (16, 32, 64, 128),
    extras: Sequence[int] = (128, 128),
    priors: Sequence[Mapping[str, Any]] | None = None,
    num_classes: int = 2,
    norm_scale: float | None = 20.0,
) -> tuple[nn.Module, SSDInput]:
    trunk = TinyTrunk(widths, extras)
    if priors is None:
        sizes = [16, 32, 64, 96, 128, 160, 192][: len(trunk.channels) + 1]
        priors = [{"min_sizes": [a], "max_sizes": [b], "aspect_ratios": [2]} for a, b in zip(sizes, sizes[1:], strict=False)]
    model = SSD(trunk, trunk.channels, priors, input_size, num_classes, norm_scale)
    return model, SSDInput(tuple(int(v) for v in input_size))  # type: ignore[arg-type]


@SSD_ARCHS.register("res10")
def _res10(pretrained: bool = True, num_classes: int = 2) -> tuple[nn.Module, SSDInput]:
    model = load_res10() if pretrained else Res10SSD(num_classes)
    return model, SSDInput(tuple(model.input_size), colour="bgr", mean=(104.0, 177.0, 123.0), scale=1.0)  # type: ignore[arg-type]


def build_ssd(arch: Mapping[str, Any]) -> tuple[nn.Module, SSDInput]:
    """``{"name": ..., **arguments}`` -> ``(model, input preprocessing)`` (:data:`SSD_ARCHS`)."""
    args = dict(arch)
    name = args.pop("name", None)
    if not isinstance(name, str) or name not in SSD_ARCHS:
        raise ConfigError(f"model.name: expected one of {', '.join(SSD_ARCHS.names())}, got {name!r}")
    try:
        return SSD_ARCHS.get(name)(**args)
    except TypeError as exc:
        raise ConfigError(f"model: bad arguments for {name!r}: {exc}") from None


@dataclass
class SSDArtifact:
    model: nn.Module
    preprocessing: SSDInput
    detection_output: dict[str, Any]
    arch: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def save_ssd_artifact(
    path: str | os.PathLike,
    model: nn.Module,
    arch: Mapping[str, Any],
    preprocessing: SSDInput,
    detection_output: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write the detector artifact atomically (see the module docstring)."""
    arch = dict(arch)
    if arch.get("name") == "res10":
        arch["pretrained"] = False  # the weights are in the state dict
    payload = {
        "format": ARTIFACT_FORMAT,
        "arch": arch,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "preprocessing": asdict(preprocessing),
        "detection_output": dict(detection_output),
        "meta": dict(meta or {}),
    }
    atomic_torch_save(payload, path)
    return Path(path)


def load_ssd_artifact(path: str | os.PathLike, device: str | torch.device = "cpu") -> SSDArtifact:
    """Rebuild a saved detector (eval mode) with its preprocessing and output settings."""
    path = Path(path)
    if not path.is_file():
        raise FacemetricError(f"{path}: detector artifact not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user error
        raise FacemetricError(f"{path}: not a readable detector artifact ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != ARTIFACT_FORMAT:
        raise FacemetricError(f"{path}: not a facemetric SSD artifact (expected format {ARTIFACT_FORMAT})")
    model, _ = build_ssd(payload["arch"])
    model.load_state_dict(payload["state_dict"])
    model.eval().to(device)
    pre = dict(payload["preprocessing"])
    pre["input_size"] = tuple(pre["input_size"])
    pre["mean"] = tuple(pre["mean"])
    return SSDArtifact(model, SSDInput(**pre), dict(payload["detection_output"]), dict(payload["arch"]), dict(payload["meta"]))
