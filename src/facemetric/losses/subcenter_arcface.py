"""Sub-center ArcFace (Deng, Guo, Liu, Zafeiriou et al., "Sub-center ArcFace: Boosting Face
Recognition by Large-scale Noisy Web Faces", ECCV 2020).

Each class has ``K`` sub-centers ``W_{j,1..K}``; a sample is compared with the closest one:

``cos theta_j = max_k <x_hat, W_hat_{j,k}>``, then the ArcFace loss on these cosines
(``s cos(theta_y + m)`` on the target). Paper: ``K = 3, s = 64, m = 0.5``. Noisy samples gather
on non-dominant sub-centers; :meth:`SubCenterArcFaceLoss.dominant_centers` returns, per class,
the sub-center most samples choose (the paper drops the others after training, and samples
farther than a threshold angle from it).

Weight layout: row ``j*K + k`` is sub-center ``k`` of class ``j`` (pytorch-metric-learning's
``SubCenterArcFaceLoss`` stores the transpose, column ``j*K + k``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from facemetric.errors import FacemetricError
from facemetric.losses.arcface import ArcFaceLoss
from facemetric.losses.registry import LOSSES


@LOSSES.register("subcenter-arcface", "sub-center-arcface", "subcenter_arcface")
class SubCenterArcFaceLoss(ArcFaceLoss):
    """ArcFace on ``max_k cos theta_{j,k}`` over ``K`` sub-centers per class."""

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        sub_centers: int = 3,
        margin: float = 0.5,
        scale: float | str | None = None,
        learn_scale: bool = False,
        easy_margin: bool = False,
        p: float = 0.9,
    ) -> None:
        if int(sub_centers) < 2:
            raise FacemetricError(f"sub_centers: expected at least 2 (1 is ArcFace), got {sub_centers}")
        super().__init__(
            embedding_dim, num_classes, margin=margin, scale=scale, learn_scale=learn_scale,
            easy_margin=easy_margin, p=p, sub_centers=sub_centers,
        )

    @torch.no_grad()
    def dominant_centers(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(dominant sub-center index [C] (-1 for classes without samples), angle in degrees of
        each sample to its class's dominant sub-center [B])``."""
        x_hat = F.normalize(embeddings.float(), dim=1)
        w_hat = F.normalize(self.weight.float(), dim=1).view(self.num_classes, self.sub_centers, -1)
        cos = torch.einsum("bd,bkd->bk", x_hat, w_hat[labels])  # [B, K]
        votes = torch.zeros(self.num_classes, self.sub_centers, device=cos.device)
        votes.index_put_((labels, cos.argmax(1)), torch.ones_like(labels, dtype=votes.dtype), accumulate=True)
        dominant = torch.where(votes.sum(1) > 0, votes.argmax(1), torch.full_like(votes[:, 0], -1, dtype=torch.long))
        chosen = cos.gather(1, dominant[labels].clamp(min=0)[:, None]).squeeze(1)
        return dominant, torch.rad2deg(torch.acos(chosen.clamp(-1, 1)))
