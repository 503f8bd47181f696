"""Prior (default) boxes: Caffe SSD's ``PriorBoxLayer`` (weiliu89/caffe, ``prior_box_layer.cpp``).

For a feature map of ``H x W`` cells on an image of ``img_h x img_w`` pixels, with
``step = (step_h, step_w)`` (0: ``img / feature``), the centre of cell ``(i, j)`` is::

    cx = (j + offset) * step_w,    cy = (i + offset) * step_h        (offset = 0.5)

and each cell gets, for every ``min_sizes[s]`` (in pixels), in this order:

1. a square of side ``min_s``;
2. if ``max_sizes`` is given, a square of side ``sqrt(min_s * max_sizes[s])``;
3. for every aspect ratio ``ar`` of the *expanded* list other than 1, a box of width
   ``min_s * sqrt(ar)`` and height ``min_s / sqrt(ar)``.

The expanded list starts with 1 and appends each given ratio not yet present (within 1e-6)
followed, with ``flip``, by its reciprocal — e.g. ``[2, 3]`` -> ``[1, 2, 1/2, 3, 1/3]``.
A box is ``((cx - w/2) / img_w, (cy - h/2) / img_h, (cx + w/2) / img_w, (cy + h/2) / img_h)``
(corner form, relative), clamped to [0, 1] only with ``clip``. Cells are row-major (``i`` outer).
Number per cell: ``len(min_sizes) * len(expanded ratios) + len(max_sizes)``.
The ``variances`` are not stored per prior here (Caffe's second output channel): box coding
takes them as an argument (:mod:`facemetric.detect.boxes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from facemetric.errors import ConfigError

__all__ = ["PriorBoxSpec", "expand_aspect_ratios", "prior_boxes", "priors_per_cell", "ssd_priors"]


def _pair(value: int | float | Sequence[int | float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    items = tuple(float(v) for v in value)
    if len(items) != 2:
        raise ConfigError(f"{name}: expected a number or (h, w), got {value!r}")
    return items[0], items[1]


@dataclass(frozen=True)
class PriorBoxSpec:
    """One prior-box layer: its feature map size ``(h, w)`` and Caffe's ``prior_box_param``."""

    feature_size: tuple[int, int]
    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...] = ()
    aspect_ratios: tuple[float, ...] = ()
    flip: bool = True
    clip: bool = False
    step: float | tuple[float, float] = 0.0
    offset: float = 0.5
    variances: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)

    def __post_init__(self) -> None:
        fs = self.feature_size
        size = (int(fs), int(fs)) if isinstance(fs, (int, float)) else tuple(int(v) for v in fs)
        object.__setattr__(self, "feature_size", size)
        object.__setattr__(self, "min_sizes", tuple(float(v) for v in self.min_sizes))
        object.__setattr__(self, "max_sizes", tuple(float(v) for v in self.max_sizes))
        object.__setattr__(self, "aspect_ratios", tuple(float(v) for v in self.aspect_ratios))
        if len(size) != 2 or min(size) <= 0:
            raise ConfigError(f"feature_size: expected positive (h, w), got {self.feature_size!r}")
        if not self.min_sizes or min(self.min_sizes) <= 0:
            raise ConfigError(f"min_sizes: expected positive sizes, got {self.min_sizes!r}")
        if self.max_sizes and len(self.max_sizes) != len(self.min_sizes):
            raise ConfigError(f"max_sizes: expected one per min size ({len(self.min_sizes)}), got {self.max_sizes!r}")
        for lo, hi in zip(self.min_sizes, self.max_sizes, strict=True) if self.max_sizes else ():
            if hi <= lo:
                raise ConfigError(f"max_sizes: each must exceed its min size, got min {lo:g} max {hi:g}")
        if any(ar <= 0 for ar in self.aspect_ratios):
            raise ConfigError(f"aspect_ratios: expected positive ratios, got {self.aspect_ratios!r}")

    @property
    def expanded_aspect_ratios(self) -> list[float]:
        return expand_aspect_ratios(self.aspect_ratios, self.flip)

    @property
    def num_priors(self) -> int:
        """Priors per feature-map cell."""
        return priors_per_cell(self)


def expand_aspect_ratios(aspect_ratios: Sequence[float], flip: bool = True) -> list[float]:
    """Caffe's expanded ratio list: 1, then each new ratio (and with ``flip`` its reciprocal)."""
    out = [1.0]
    for ar in aspect_ratios:
        if any(abs(ar - seen) < 1e-6 for seen in out):
            continue
        out.append(float(ar))
        if flip:
            out.append(1.0 / float(ar))
    return out


def priors_per_cell(spec: PriorBoxSpec) -> int:
    return len(spec.min_sizes) * len(spec.expanded_aspect_ratios) + len(spec.max_sizes)


def prior_boxes(spec: PriorBoxSpec, image_size: int | Sequence[int]) -> torch.Tensor:
    """The layer's priors, ``[H * W * priors_per_cell, 4]`` float32 corner form (relative)."""
    img_h, img_w = _pair(image_size, "image_size")
    feat_h, feat_w = spec.feature_size
    step_h, step_w = _pair(spec.step, "step")
    if step_h == 0 or step_w == 0:
        step_h, step_w = img_h / feat_h, img_w / feat_w
    sizes: list[tuple[float, float]] = []  # (w, h) per prior of one cell, in Caffe order
    for s, min_size in enumerate(spec.min_sizes):
        sizes.append((min_size, min_size))
        if spec.max_sizes:
            side = math.sqrt(min_size * spec.max_sizes[s])
            sizes.append((side, side))
        for ar in spec.expanded_aspect_ratios:
            if abs(ar - 1.0) < 1e-6:
                continue
            sizes.append((min_size * math.sqrt(ar), min_size / math.sqrt(ar)))
    wh = torch.tensor(sizes, dtype=torch.float64)  # [P, 2]
    cy = (torch.arange(feat_h, dtype=torch.float64) + spec.offset) * step_h
    cx = (torch.arange(feat_w, dtype=torch.float64) + spec.offset) * step_w
    grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
    centres = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)  # [HW, 2]
    centres = centres[:, None, :].expand(-1, len(sizes), 2)
    half = wh[None, :, :] / 2
    scale = torch.tensor([img_w, img_h], dtype=torch.float64)
    boxes = torch.cat([(centres - half) / scale, (centres + half) / scale], dim=2).reshape(-1, 4)
    if spec.clip:
        boxes = boxes.clamp(0.0, 1.0)
    return boxes.to(torch.float32)


def ssd_priors(specs: Sequence[PriorBoxSpec], image_size: int | Sequence[int]) -> torch.Tensor:
    """All layers' priors concatenated in head order (Caffe's ``mbox_priorbox`` concat)."""
    return torch.cat([prior_boxes(spec, image_size) for spec in specs], dim=0)
