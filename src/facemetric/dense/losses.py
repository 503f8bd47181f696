"""Pixel-level losses: FCN's per-pixel softmax, HED's class-balanced sigmoid, FSDS's
scale-associated softmax.

* :func:`pixel_softmax_ce` (FCN): ``L = -1/|P| sum_{p in P} log softmax(z_p)[y_p]`` over the
  pixels ``P`` whose label is not ``ignore_index`` (the mean over labelled pixels, as
  ``F.cross_entropy``; FCN's Caffe loss sums, "normalize: false" -- the scale is the only
  difference).
* :func:`balanced_sigmoid_ce` (HED, Xie & Tu, ICCV 2015, eq. 2): per image,
  ``beta = |Y-| / |Y|`` and ``L = -beta sum_{j in Y+} log s_j - (1 - beta) sum_{j in Y-}
  log(1 - s_j)`` with ``s = sigmoid(z)``; summed over the batch. ``reduction="mean"`` divides
  by the pixel count ``|Y|`` (a per-pixel scale for stable learning rates; named deviation).
* :func:`hed_loss` (HED eq. 5): ``sum_k L(side_k) + L(fuse)``.
* :func:`balanced_softmax_ce` (FSDS, Shen et al., CVPR 2016): class ``c`` weighted by
  ``1 - |Y_c| / |Y|`` per image (two classes: HED's beta), softmax CE, same reductions.
* :func:`fsds_loss`: ``sum_k L(side_k, G_k) + L(fuse, G)`` where side ``k`` sees the target
  :func:`facemetric.dense.targets.side_targets` keeps for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255


def pixel_softmax_ce(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX,
                     weight: Tensor | None = None) -> Tensor:
    """FCN's loss: mean softmax cross-entropy over the pixels not labelled ``ignore_index``
    (``logits [B, C, H, W]``, ``target [B, H, W]`` long)."""
    return F.cross_entropy(logits, target.long(), weight=weight, ignore_index=ignore_index)


def _reduce(per_image: Tensor, pixels: int, reduction: str) -> Tensor:
    if reduction == "sum":
        return per_image.sum()
    if reduction == "mean":
        return per_image.sum() / (per_image.shape[0] * pixels)
    raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")


def balanced_sigmoid_ce(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """HED's class-balanced sigmoid cross-entropy (module docstring); ``logits``/``target``
    ``[B, 1, H, W]`` or ``[B, H, W]``, target in {0, 1}."""
    z = logits.reshape(logits.shape[0], -1)
    y = target.reshape(target.shape[0], -1).to(z.dtype)
    n = y.shape[1]
    beta = (1 - y).sum(1, keepdim=True) / n  # |Y-| / |Y| per image
    # log s = -softplus(-z), log(1 - s) = -softplus(z): stable for large |z|
    loss = beta * y * F.softplus(-z) + (1 - beta) * (1 - y) * F.softplus(z)
    return _reduce(loss.sum(1), n, reduction)


def hed_loss(sides: Sequence[Tensor], fuse: Tensor, target: Tensor, reduction: str = "mean",
             side_weights: Sequence[float] | None = None) -> Tensor:
    """``sum_k w_k L(side_k) + L(fuse)`` with :func:`balanced_sigmoid_ce` (``w_k = 1``)."""
    w = [1.0] * len(sides) if side_weights is None else list(side_weights)
    total = balanced_sigmoid_ce(fuse, target, reduction)
    for wk, side in zip(w, sides, strict=False):
        total = total + wk * balanced_sigmoid_ce(side, target, reduction)
    return total


def balanced_softmax_ce(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Softmax CE with class ``c`` weighted by ``1 - |Y_c| / |Y|`` per image (module docstring);
    ``logits [B, C, H, W]``, ``target [B, H, W]`` in ``0..C-1``."""
    b, c = logits.shape[:2]
    y = target.reshape(b, -1).long()
    n = y.shape[1]
    counts = torch.zeros(b, c, dtype=logits.dtype, device=logits.device)
    counts.scatter_add_(1, y, torch.ones_like(y, dtype=logits.dtype))
    weights = 1 - counts / n  # [B, C]
    logp = F.log_softmax(logits.reshape(b, c, -1), dim=1)
    nll = -logp.gather(1, y[:, None, :])[:, 0]  # [B, N]
    loss = weights.gather(1, y) * nll
    return _reduce(loss.sum(1), n, reduction)


def fsds_loss(sides: Sequence[Tensor], fuse: Tensor, side_targets: Sequence[Tensor],
              target: Tensor, reduction: str = "mean") -> Tensor:
    """``sum_k L(side_k, G_k) + L(fuse, G)`` with :func:`balanced_softmax_ce`."""
    total = balanced_softmax_ce(fuse, target, reduction)
    for side, g in zip(sides, side_targets, strict=False):
        total = total + balanced_softmax_ce(side, g, reduction)
    return total


__all__ = [
    "IGNORE_INDEX", "balanced_sigmoid_ce", "balanced_softmax_ce", "fsds_loss", "hed_loss",
    "pixel_softmax_ce",
]
