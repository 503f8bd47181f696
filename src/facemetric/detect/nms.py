"""Greedy non-maximum suppression in plain torch (Caffe ``ApplyNMSFast`` with ``eta = 1``).

:func:`nms`: sort the boxes by score, descending (stable: ties keep input order), keep the first
``top_k`` candidates, then walk them in that order and keep a box if its IoU
(:func:`facemetric.detect.boxes.box_iou`) with *every* box kept so far is ``<= iou_threshold``.
Suppressed boxes suppress nothing. The result is the kept indices into the input, in score
order. (Caffe's score threshold is applied by the caller, :mod:`.detection_output`.)
:func:`batched_nms` runs it independently within each group (e.g. class) and returns all kept
indices in descending score order.
"""

from __future__ import annotations

import numpy as np
import torch

from facemetric.detect.boxes import box_iou

__all__ = ["batched_nms", "nms"]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, top_k: int | None = None) -> torch.Tensor:
    """Indices (LongTensor) of the boxes kept, highest score first."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    if top_k is not None and top_k > -1:
        order = order[:top_k]
    candidates = boxes[order]
    over = (box_iou(candidates, candidates) > iou_threshold).cpu().numpy()
    removed = np.zeros(len(order), dtype=bool)
    kept: list[int] = []
    for i in range(len(order)):
        if removed[i]:
            continue
        kept.append(i)
        removed |= over[i]  # entries before i are decided already
    return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float, top_k: int | None = None
) -> torch.Tensor:
    """:func:`nms` within each value of ``groups``; all kept indices, highest score first."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    kept = []
    for group in torch.unique(groups):
        index = torch.nonzero(groups == group).flatten()
        kept.append(index[nms(boxes[index], scores[index], iou_threshold, top_k)])
    keep = torch.cat(kept)
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]
