"""SSD training augmentation (weiliu89/caffe ``AnnotatedDataLayer`` with SSD-300's settings:
``DistortImage``, ``ExpandImage``, ``GenerateBatchSamples`` + ``CropImage``, mirror, resize).

Images are float tensors ``[3, H, W]`` in 0..255, RGB; boxes are ``[K, 4]`` relative corners
with their labels ``[K]``; *ignore boxes* ``[J, 4]`` (unlabelled faces) travel with them.
Steps of :class:`SSDAugment`, each drawn from a ``random.Random``:

1. **Photometric distortion** (:func:`photometric_distort`): brightness ``+U(-32, 32)``
   (p 0.5); then with p 0.5 the order contrast, saturation, hue, else saturation, hue,
   contrast; contrast ``*U(0.5, 1.5)`` (p 0.5), saturation (HSV S) ``*U(0.5, 1.5)`` (p 0.5),
   hue (HSV H) ``+U(-18, 18)`` degrees (p 0.5); values rounded and saturated to 0..255
   after each step (8 bits, as Caffe). Caffe uses OpenCV's 0..180 hue (so its delta 18 is
   36 degrees); here the delta is in degrees.
2. **Expand** (zoom out, p 0.5): a canvas ``ratio`` times larger (``ratio ~ U(1, max_ratio)``,
   4 in SSD), filled with the mean colour; the image at a random integer offset. Sizes and
   offsets are whole pixels, so boxes map exactly: ``(x * W + left) / W'``.
3. **Batch sampler crop**: each sampler of :data:`SSD_SAMPLERS` draws up to ``max_trials``
   (50) crops with scale ``s ~ U(min_scale, max_scale)`` and aspect ratio
   ``a ~ U(min_ar, max_ar)`` clipped to ``[s^2, 1/s^2]`` (``w = s sqrt(a)``, ``h = s / sqrt(a)``)
   until one has IoU within ``[min_iou, max_iou]`` with *some* labelled box (a sampler without
   a constraint takes its first draw); one of the found crops (sampler 0 is the whole image) is
   chosen uniformly. The crop is snapped to whole pixels (Caffe maps boxes through the unsnapped
   crop; snapping keeps them exact). Boxes whose centre lies inside the crop are kept, moved into
   crop coordinates and clipped to it; ignore boxes are kept when any part stays.
4. **Horizontal flip** (p 0.5): ``x -> 1 - x`` (xmin and xmax swap).
5. **Resize** to ``size`` (bilinear, as OpenCV's ``INTER_LINEAR``); relative boxes unchanged.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "SSD_SAMPLERS",
    "BatchSampler",
    "SSDAugment",
    "crop",
    "expand",
    "hflip",
    "photometric_distort",
    "resize",
    "sample_crop",
]


@dataclass(frozen=True)
class BatchSampler:
    """One of Caffe's ``batch_sampler`` entries (``max_sample = 1``)."""

    min_scale: float = 1.0
    max_scale: float = 1.0
    min_aspect_ratio: float = 1.0
    max_aspect_ratio: float = 1.0
    min_iou: float | None = None
    max_iou: float | None = None
    max_trials: int = 1


#: SSD-300's samplers: the whole image, then min IoU 0.1, 0.3, 0.5, 0.7, 0.9 and max IoU 1.
SSD_SAMPLERS: tuple[BatchSampler, ...] = (
    BatchSampler(),
    *(BatchSampler(0.3, 1.0, 0.5, 2.0, min_iou=t, max_trials=50) for t in (0.1, 0.3, 0.5, 0.7, 0.9)),
    BatchSampler(0.3, 1.0, 0.5, 2.0, max_iou=1.0, max_trials=50),
)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Round and saturate to 0..255 (OpenCV's ``saturate_cast<uchar>``)."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def photometric_distort(img: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Caffe SSD's ``DistortImage`` (see the module docstring) on ``[3, H, W]`` 0..255 RGB.

    Like Caffe, each step rounds to 8 bits; saturation and hue go through PIL's HSV (8-bit
    channels, hue 0..255 for 0..360 degrees) in C, so this costs ~1 ms on a 150x150 photo."""
    hwc = _to_uint8(img.permute(1, 2, 0).numpy())
    if rng.random() < 0.5:
        hwc = _to_uint8(hwc.astype(np.float32) + rng.uniform(-32, 32))

    def contrast(x: np.ndarray) -> np.ndarray:
        return _to_uint8(x.astype(np.float32) * rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else x

    def saturation_hue(x: np.ndarray) -> np.ndarray:
        do_sat, sat = rng.random() < 0.5, rng.uniform(0.5, 1.5)
        do_hue, hue = rng.random() < 0.5, rng.uniform(-18, 18)
        if not (do_sat or do_hue):
            return x
        hsv = np.array(Image.fromarray(x, "RGB").convert("HSV"))
        if do_sat:
            hsv[..., 1] = _to_uint8(hsv[..., 1].astype(np.float32) * sat)
        if do_hue:
            hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(round(hue * 256 / 360))) % 256).astype(np.uint8)
        return np.array(Image.fromarray(hsv, "HSV").convert("RGB"))

    if rng.random() < 0.5:
        hwc = saturation_hue(contrast(hwc))
    else:
        hwc = contrast(saturation_hue(hwc))
    return torch.from_numpy(hwc).permute(2, 0, 1).float()


def expand(
    img: torch.Tensor,
    boxes: torch.Tensor,
    ignore: torch.Tensor,
    mean: Sequence[float],
    max_ratio: float,
    rng: random.Random,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zoom out: place the image on a mean-filled canvas ``ratio ~ U(1, max_ratio)`` times larger."""
    _, h, w = img.shape
    ratio = rng.uniform(1.0, max_ratio)
    new_h, new_w = int(h * ratio), int(w * ratio)
    top = math.floor(rng.random() * (new_h - h))
    left = math.floor(rng.random() * (new_w - w))
    canvas = torch.empty(3, new_h, new_w, dtype=img.dtype)
    canvas[:] = torch.as_tensor(mean, dtype=img.dtype).view(3, 1, 1)
    canvas[:, top : top + h, left : left + w] = img

    def move(b: torch.Tensor) -> torch.Tensor:
        scale = torch.tensor([w, h, w, h], dtype=torch.float64)
        shift = torch.tensor([left, top, left, top], dtype=torch.float64)
        size = torch.tensor([new_w, new_h, new_w, new_h], dtype=torch.float64)
        return ((b.double() * scale + shift) / size).to(b.dtype)

    return canvas, move(boxes), move(ignore)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two relative boxes (plain floats: the sampler calls it hundreds of times)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def sample_crop(
    boxes: torch.Tensor, samplers: Sequence[BatchSampler], rng: random.Random
) -> tuple[float, float, float, float]:
    """A relative crop ``(xmin, ymin, xmax, ymax)`` from Caffe's batch samplers (see above)."""
    found: list[tuple[float, float, float, float]] = []
    truths = [tuple(float(v) for v in b) for b in boxes.tolist()]
    for sampler in samplers:
        for _ in range(sampler.max_trials):
            scale = rng.uniform(sampler.min_scale, sampler.max_scale)
            ar = rng.uniform(sampler.min_aspect_ratio, sampler.max_aspect_ratio)
            ar = min(max(ar, scale**2), 1.0 / scale**2)
            bw, bh = scale * math.sqrt(ar), scale / math.sqrt(ar)
            x0, y0 = rng.uniform(0, 1 - bw), rng.uniform(0, 1 - bh)
            candidate = (x0, y0, x0 + bw, y0 + bh)
            if sampler.min_iou is None and sampler.max_iou is None:
                found.append(candidate)
                break
            if not truths:
                continue
            lo = -1.0 if sampler.min_iou is None else sampler.min_iou
            hi = 2.0 if sampler.max_iou is None else sampler.max_iou
            if any(lo <= _iou(candidate, t) <= hi for t in truths):
                found.append(candidate)
                break
    if not found:
        return (0.0, 0.0, 1.0, 1.0)
    return found[rng.randrange(len(found))]


def crop(
    img: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    ignore: torch.Tensor,
    window: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crop to the relative ``window`` snapped to whole pixels; keep boxes whose centre is inside."""
    _, h, w = img.shape
    x0 = min(max(int(round(window[0] * w)), 0), w - 1)
    y0 = min(max(int(round(window[1] * h)), 0), h - 1)
    x1 = min(max(int(round(window[2] * w)), x0 + 1), w)
    y1 = min(max(int(round(window[3] * h)), y0 + 1), h)
    out = img[:, y0:y1, x0:x1]
    scale = torch.tensor([w, h, w, h], dtype=torch.float64)
    shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float64)
    size = torch.tensor([x1 - x0, y1 - y0, x1 - x0, y1 - y0], dtype=torch.float64)

    def move(b: torch.Tensor) -> torch.Tensor:
        return ((b.double() * scale - shift) / size).clamp(0.0, 1.0)

    centre = (boxes.double()[:, :2] + boxes.double()[:, 2:]) / 2 * scale[:2]
    keep = (
        (centre[:, 0] > x0) & (centre[:, 0] < x1) & (centre[:, 1] > y0) & (centre[:, 1] < y1)
        if boxes.numel()
        else torch.zeros(0, dtype=torch.bool)
    )
    new_boxes = move(boxes[keep]).to(boxes.dtype)
    new_ignore = move(ignore).to(ignore.dtype)
    if new_ignore.numel():
        new_ignore = new_ignore[(new_ignore[:, 2] > new_ignore[:, 0]) & (new_ignore[:, 3] > new_ignore[:, 1])]
    return out, new_boxes, labels[keep], new_ignore


def hflip(img: torch.Tensor, boxes: torch.Tensor, ignore: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mirror left-right: ``(xmin, xmax) -> (1 - xmax, 1 - xmin)``."""

    def flip(b: torch.Tensor) -> torch.Tensor:
        return torch.stack([1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]], dim=1) if b.numel() else b

    return img.flip(-1), flip(boxes), flip(ignore)


def resize(img: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``[3, H, W]`` to ``(h, w)`` (half-pixel centres, no antialiasing),
    rounded to integers: :func:`facemetric.detect.detector.resize_rgb`'s pixels."""
    if tuple(img.shape[1:]) == tuple(size):
        return img
    out = F.interpolate(img[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
    return out.round_().clamp_(0, 255)  # 8-bit pixels, as the detectors' input resize


class SSDAugment:
    """The whole training transform (module docstring); ``size`` is the network input ``(h, w)``.

    ``__call__(img, boxes, labels, ignore, rng) -> (img [3, h, w] float 0..255 RGB, boxes, labels,
    ignore)``.
    """

    def __init__(
        self,
        size: Sequence[int] | None,
        mean: Sequence[float] = (123.0, 117.0, 104.0),
        distort: bool = True,
        expand_prob: float = 0.5,
        max_expand_ratio: float = 4.0,
        samplers: Sequence[BatchSampler] = SSD_SAMPLERS,
        flip_prob: float = 0.5,
    ):
        self.size = tuple(size) if size is not None else None
        self.mean = tuple(float(m) for m in mean)
        self.distort = distort
        self.expand_prob = expand_prob
        self.max_expand_ratio = max_expand_ratio
        self.samplers = tuple(samplers)
        self.flip_prob = flip_prob

    def __call__(
        self,
        img: torch.Tensor,
        boxes: torch.Tensor,
        labels: torch.Tensor,
        ignore: torch.Tensor | None,
        rng: random.Random,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        img = img.float()
        ignore = ignore if ignore is not None else torch.zeros(0, 4)
        if self.distort:
            img = photometric_distort(img, rng)
        if self.expand_prob > 0 and self.max_expand_ratio > 1 and rng.random() < self.expand_prob:
            img, boxes, ignore = expand(img, boxes, ignore, self.mean, self.max_expand_ratio, rng)
        if self.samplers:
            img, boxes, labels, ignore = crop(img, boxes, labels, ignore, sample_crop(boxes, self.samplers, rng))
        if self.flip_prob > 0 and rng.random() < self.flip_prob:
            img, boxes, ignore = hflip(img, boxes, ignore)
        if self.size is not None:
            img = resize(img, self.size)
        return img, boxes, labels, ignore
