"""The combined margin of the ArcFace paper (Deng et al. 2019, Sec. 3.3; insightface's
``CombinedMarginLoss``): SphereFace's, ArcFace's and CosFace's margins in one target

``f(theta) = cos(m1 theta + m2) - m3``,  ``logit_y = s f(theta_y)``.

``(m1, m2, m3) = (1, m, 0)`` is ArcFace, ``(1, 0, m)`` CosFace; the paper's combination is
``(1, 0.3, 0.2)`` with ``s = 64``. Beyond ``theta_t = (pi - m2) / m1`` the cosine would grow again:
with ``m1 = 1`` the ArcFace rule ``cos theta - m2 sin m2 - m3`` applies (so the special cases
equal ArcFace and CosFace exactly); with ``m1 > 1`` the target continues as
``cos theta - cos theta_t - 1 - m3`` (continuous at ``theta_t`` and decreasing).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facemetric.errors import FacemetricError
from facemetric.losses.normalized_head import NormalizedHead, arcface_target
from facemetric.losses.registry import LOSSES


@LOSSES.register("combined-margin", "combined", "combinedmargin")
class CombinedMarginLoss(NormalizedHead):
    """Target logit ``s (cos(m1 theta_y + m2) - m3)``."""

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        m1: float = 1.0,
        m2: float = 0.3,
        m3: float = 0.2,
        scale: float | str | None = None,
        learn_scale: bool = False,
        p: float = 0.9,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        if m1 < 1 or not 0 <= m2 < math.pi / 2 or not 0 <= m3 < 1:
            raise FacemetricError(
                f"m1, m2, m3: expected m1 >= 1, 0 <= m2 < pi/2, 0 <= m3 < 1, got ({m1}, {m2}, {m3})"
            )
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)
        self._init_scale(scale, learn_scale, p)

    def margin_at_zero(self) -> float:
        return 1.0 - (math.cos(self.m2) - self.m3)

    def target(self, theta: Tensor | None, cos_y: Tensor, norms: Tensor) -> Tensor:
        assert theta is not None
        if self.m1 == 1.0:
            return arcface_target(theta, self.m2) - self.m3
        theta_t = (math.pi - self.m2) / self.m1
        inside = torch.cos(self.m1 * theta + self.m2) - self.m3
        beyond = torch.cos(theta) - math.cos(theta_t) - 1.0 - self.m3
        return torch.where(theta <= theta_t, inside, beyond)
