"""ArcFace (Deng, Guo, Xue & Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face
Recognition", CVPR 2019).

An additive margin on the target angle:

``L = -1/m sum_i log( e^{s cos(theta_{y_i} + m)} / (e^{s cos(theta_{y_i} + m)} + sum_{j != y_i} e^{s cos theta_j}) )``

Where ``theta + m > pi`` the target ``cos(theta + m)`` would grow again with theta; there the
paper's implementation uses ``cos theta - m sin m`` (see :func:`arcface_target`).
``easy_margin=True`` applies the margin only where ``cos theta > 0``. Paper: ``s = 64, m = 0.5``.
The margin is part of the graph (its gradient flows), theta comes from the vectors (accurate
near 0 and pi). Same loss as pytorch-metric-learning's ``ArcFaceLoss`` (whose margin is in
degrees: ``28.6`` = 0.5 rad), which computes theta by ``acos``.
"""

from __future__ import annotations

import math

from torch import Tensor

from facemetric.errors import FacemetricError
from facemetric.losses.normalized_head import NormalizedHead, arcface_target
from facemetric.losses.registry import LOSSES


@LOSSES.register("arcface", "aam-softmax", "additive-angular-margin")
class ArcFaceLoss(NormalizedHead):
    """Target logit ``s cos(theta_y + m)`` (``cos theta_y - m sin m`` beyond ``pi - m``)."""

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        margin: float = 0.5,
        scale: float | str | None = None,
        learn_scale: bool = False,
        easy_margin: bool = False,
        p: float = 0.9,
        sub_centers: int = 1,
    ) -> None:
        super().__init__(embedding_dim, num_classes, sub_centers=sub_centers)
        if not 0 <= margin < math.pi / 2:
            raise FacemetricError(f"margin: expected an angle in [0, pi/2) radians, got {margin}")
        self.margin = float(margin)
        self.easy_margin = bool(easy_margin)
        self._init_scale(scale, learn_scale, p)

    def margin_at_zero(self) -> float:
        return 1.0 - math.cos(self.margin)

    def target(self, theta: Tensor | None, cos_y: Tensor, norms: Tensor) -> Tensor:
        assert theta is not None
        return arcface_target(theta, self.margin, self.easy_margin)
