"""CosFace / AM-Softmax (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face
Recognition", CVPR 2018; Wang, Cheng, Liu & Liu, "Additive Margin Softmax", 2018).

An additive margin on the cosine of the target class:

``L = -1/m sum_i log( e^{s (cos theta_{y_i} - m)} / (e^{s (cos theta_{y_i} - m)} + sum_{j != y_i} e^{s cos theta_j}) )``

Paper: ``s = 64, m = 0.35``. Without ``scale`` the automatic scale is the L2-softmax bound
divided by ``1 - m``. Same loss as pytorch-metric-learning's ``CosFaceLoss``.
"""

from __future__ import annotations

from torch import Tensor

from facemetric.errors import FacemetricError
from facemetric.losses.normalized_head import NormalizedHead
from facemetric.losses.registry import LOSSES


@LOSSES.register("cosface", "am-softmax", "lmcl")
class CosFaceLoss(NormalizedHead):
    """Target logit ``s (cos theta_y - m)``."""

    needs_angle = False

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        margin: float = 0.35,
        scale: float | str | None = None,
        learn_scale: bool = False,
        p: float = 0.9,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        if not 0 <= margin < 1:
            raise FacemetricError(f"margin: expected a cosine margin in [0, 1), got {margin}")
        self.margin = float(margin)
        self._init_scale(scale, learn_scale, p)

    def margin_at_zero(self) -> float:
        return self.margin

    def target(self, theta: Tensor | None, cos_y: Tensor, norms: Tensor) -> Tensor:
        return cos_y - self.margin
