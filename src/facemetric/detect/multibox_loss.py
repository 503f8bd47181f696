"""The MultiBox loss (Liu et al., SSD, ECCV 2016; Caffe ``MultiBoxLossLayer`` with
``loc_loss_type = SMOOTH_L1``, ``conf_loss_type = SOFTMAX``, ``mining_type = MAX_NEGATIVE``,
``normalization = VALID``).

Given per-prior targets from :func:`facemetric.detect.matching.match_batch` (labels: class > 0
positive, 0 background candidate, -1 ignored)::

    L = (alpha * sum_{i in Pos} smoothL1(l_i - g_i) + sum_{i in Pos ∪ Neg} CE(c_i, y_i)) / max(1, |Pos|)

``smoothL1(x) = 0.5 x^2`` if ``|x| < 1`` else ``|x| - 0.5``, summed over the 4 coordinates;
``CE`` is softmax cross-entropy of the logits ``c_i``. ``Neg`` are the hard negatives: in each
image, the ``min(neg_pos_ratio * |Pos_image|, #background candidates)`` background candidates
with the largest background cross-entropy (``neg_pos_ratio = 3``). ``|Pos|`` counts the
positives of the whole batch. An image (or batch) without a positive therefore contributes no
negatives and the loss stays finite (0 for a batch without any face), as in Caffe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MultiBoxLoss", "hard_negative_mask"]


def hard_negative_mask(background_loss: torch.Tensor, labels: torch.Tensor, neg_pos_ratio: float) -> torch.Tensor:
    """``[B, N]`` mask of the hard negatives (see the module docstring); ties by prior order."""
    candidates = labels == 0
    num_pos = (labels > 0).sum(dim=1, keepdim=True)
    num_neg = torch.minimum((num_pos * neg_pos_ratio).long(), candidates.sum(dim=1, keepdim=True))
    ranked = torch.where(candidates, background_loss.detach(), torch.full_like(background_loss, -float("inf")))
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return candidates & (rank < num_neg)


class MultiBoxLoss(nn.Module):
    def __init__(self, neg_pos_ratio: float = 3.0, loc_weight: float = 1.0):
        super().__init__()
        self.neg_pos_ratio = neg_pos_ratio
        self.loc_weight = loc_weight

    def components(
        self, loc: torch.Tensor, conf: torch.Tensor, loc_targets: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(loc_loss, conf_loss, num_positives)``, both losses already divided by ``max(1, |Pos|)``."""
        positive = labels > 0
        num_pos = int(positive.sum())
        normalizer = max(1, num_pos)
        loc_loss = F.smooth_l1_loss(loc[positive], loc_targets[positive].to(loc.dtype), reduction="sum", beta=1.0)
        log_prob = F.log_softmax(conf, dim=-1)
        background_loss = -log_prob[..., 0]
        negative = hard_negative_mask(background_loss, labels, self.neg_pos_ratio)
        selected = positive | negative
        target = labels.clamp(min=0)
        ce = -log_prob.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        conf_loss = ce[selected].sum()
        return loc_loss / normalizer, conf_loss / normalizer, num_pos

    def forward(self, loc: torch.Tensor, conf: torch.Tensor, loc_targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``loc [B, N, 4]``, ``conf [B, N, C]`` logits, targets ``[B, N, 4]`` and labels ``[B, N]``."""
        loc_loss, conf_loss, _ = self.components(loc, conf, loc_targets, labels)
        return self.loc_weight * loc_loss + conf_loss
