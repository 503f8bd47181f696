"""Matching priors to ground truth (Caffe ``MatchBBox``, ``match_type = PER_PREDICTION``) and the
training targets of the MultiBox loss (Caffe ``MultiBoxLossLayer``), with ignore regions.

:func:`match_priors`, for IoUs between ``N`` priors and ``G`` ground-truth boxes:

1. *bipartite*: repeatedly take the largest IoU among the not yet matched (prior, truth) pairs
   (IoU > 1e-6) and match that pair, until every truth has its best prior (so each face gets a
   prior even when no prior reaches the threshold);
2. *per prediction*: every other prior whose best IoU is ``>= threshold`` (0.5) is matched to
   that truth.

:func:`match_targets` turns a match into targets: ``labels[n]`` is the truth's class for a
matched prior, ``0`` (background) for a prior whose best IoU with every truth is
``< neg_threshold`` (Caffe ``neg_overlap``, 0.5) and ``-1`` (*ignore*: neither positive nor
negative) for the rest — and for every unmatched prior whose IoU with an *ignore box* (e.g. an
unlabelled face) is ``>= ignore_threshold``. ``loc`` holds :func:`~facemetric.detect.boxes.encode`
of the matched truth (zeros elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from facemetric.detect.boxes import box_iou, encode

__all__ = ["match_batch", "match_priors", "match_targets"]


def match_priors(
    truths: torch.Tensor, priors: torch.Tensor, threshold: float = 0.5, iou: torch.Tensor | None = None
) -> torch.Tensor:
    """Index of the truth matched to each prior (``[N]`` long), ``-1`` where none
    (``iou``: the ``[N, G]`` prior/truth IoUs when the caller has them)."""
    n = priors.shape[0]
    matched = torch.full((n,), -1, dtype=torch.long, device=priors.device)
    if truths.numel() == 0:
        return matched
    if iou is None:
        iou = box_iou(priors, truths.to(priors.dtype))  # [N, G]
    if truths.shape[0] == 1:  # the bipartite step is the argmax
        best_prior = int(torch.argmax(iou[:, 0]))
        if iou[best_prior, 0] > 1e-6:
            matched[best_prior] = 0
        matched[(matched < 0) & (iou[:, 0] >= threshold)] = 0
        return matched
    work = torch.where(iou > 1e-6, iou, torch.full_like(iou, -1.0))
    for _ in range(truths.shape[0]):
        flat = int(torch.argmax(work))
        p, g = divmod(flat, truths.shape[0])
        if work[p, g] <= 0:
            break
        matched[p] = g
        work[p, :] = -1
        work[:, g] = -1
    best, best_truth = iou.max(dim=1)
    extra = (matched < 0) & (best >= threshold)
    matched[extra] = best_truth[extra]
    return matched


def match_targets(
    truths: torch.Tensor,
    labels: torch.Tensor,
    priors: torch.Tensor,
    variances: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
    threshold: float = 0.5,
    neg_threshold: float = 0.5,
    ignore_boxes: torch.Tensor | None = None,
    ignore_threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc [N, 4], labels [N])`` targets for one image (labels: class, 0 background, -1 ignore)."""
    n = priors.shape[0]
    iou = box_iou(priors, truths.to(priors.dtype)) if truths.numel() else None
    matched = match_priors(truths, priors, threshold, iou)
    positive = matched >= 0
    conf = torch.zeros(n, dtype=torch.long, device=priors.device)
    loc = torch.zeros(n, 4, dtype=priors.dtype, device=priors.device)
    if truths.numel():
        conf[positive] = labels.to(priors.device).long()[matched[positive]]
        loc[positive] = encode(truths.to(priors.dtype)[matched[positive]], priors[positive], variances)
        assert iou is not None
        best = iou.max(dim=1).values
        conf[~positive & (best >= neg_threshold)] = -1
    if ignore_boxes is not None and ignore_boxes.numel():
        near = box_iou(priors, ignore_boxes.to(priors.dtype)).max(dim=1).values >= ignore_threshold
        conf[~positive & near] = -1
    return loc, conf


def match_batch(
    truths: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    priors: torch.Tensor,
    variances: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
    threshold: float = 0.5,
    neg_threshold: float = 0.5,
    ignore_boxes: Sequence[torch.Tensor | None] | None = None,
    ignore_threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`match_targets` for each image: ``(loc [B, N, 4], labels [B, N])``."""
    ignores = list(ignore_boxes) if ignore_boxes is not None else [None] * len(truths)
    pairs = [
        match_targets(t, lab, priors, variances, threshold, neg_threshold, ig, ignore_threshold)
        for t, lab, ig in zip(truths, labels, ignores, strict=True)
    ]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
