"""Box geometry and SSD box coding (Caffe ``bbox_util.cpp``, normalized boxes).

Boxes are corner form ``(xmin, ymin, xmax, ymax)`` relative to the image, float32.

* :func:`box_iou` is Caffe's ``JaccardOverlap`` for normalized boxes (no +1 pixel):
  ``inter / (area_a + area_b - inter)``, with ``inter = 0`` for disjoint boxes and an
  inverted box's area taken as 0; a zero union gives 0.
* :func:`encode` / :func:`decode` are ``CENTER_SIZE`` coding with
  ``variance_encoded_in_target = false``. For a prior with centre ``(pcx, pcy)`` and size
  ``(pw, ph)`` and a box with centre ``(cx, cy)`` and size ``(w, h)``::

      t = ((cx - pcx) / pw / v0, (cy - pcy) / ph / v1, log(w / pw) / v2, log(h / ph) / v3)

  and decode inverts it: ``cx = v0 * t0 * pw + pcx``, ``w = exp(v2 * t2) * pw`` (same for y).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["box_area", "box_iou", "center_to_corner", "corner_to_center", "decode", "encode"]

VARIANCES = (0.1, 0.1, 0.2, 0.2)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of each box; 0 for an inverted box (Caffe ``BBoxSize``)."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return torch.where((w < 0) | (h < 0), torch.zeros_like(w), w * h)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``[N, M]`` of ``a [N, 4]`` and ``b [M, 4]``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def corner_to_center(boxes: torch.Tensor) -> torch.Tensor:
    """``(xmin, ymin, xmax, ymax)`` -> ``(cx, cy, w, h)``."""
    wh = boxes[..., 2:] - boxes[..., :2]
    return torch.cat([boxes[..., :2] + wh / 2, wh], dim=-1)


def center_to_corner(boxes: torch.Tensor) -> torch.Tensor:
    """``(cx, cy, w, h)`` -> ``(xmin, ymin, xmax, ymax)``."""
    half = boxes[..., 2:] / 2
    return torch.cat([boxes[..., :2] - half, boxes[..., :2] + half], dim=-1)


def _variances(variances: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(tuple(variances), dtype=like.dtype, device=like.device)


def encode(matched: torch.Tensor, priors: torch.Tensor, variances: Sequence[float] = VARIANCES) -> torch.Tensor:
    """Regression targets ``[..., N, 4]`` for boxes ``matched`` against their ``priors``."""
    var = _variances(variances, matched)
    box = corner_to_center(matched)
    prior = corner_to_center(priors)
    xy = (box[..., :2] - prior[..., :2]) / prior[..., 2:] / var[:2]
    wh = torch.log(box[..., 2:] / prior[..., 2:]) / var[2:]
    return torch.cat([xy, wh], dim=-1)


def decode(loc: torch.Tensor, priors: torch.Tensor, variances: Sequence[float] = VARIANCES) -> torch.Tensor:
    """Corner boxes ``[..., N, 4]`` from predicted offsets ``loc [..., N, 4]`` and ``priors [N, 4]``."""
    var = _variances(variances, loc)
    prior = corner_to_center(priors.to(loc.dtype))
    xy = var[:2] * loc[..., :2] * prior[..., 2:] + prior[..., :2]
    wh = torch.exp(var[2:] * loc[..., 2:]) * prior[..., 2:]
    return center_to_corner(torch.cat([xy, wh], dim=-1))
