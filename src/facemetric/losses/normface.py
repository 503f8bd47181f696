"""NormFace (Wang, Xiang, Cheng & Yuille, "NormFace: L2 Hypersphere Embedding for Face
Verification", ACM MM 2017).

Normalised features and normalised class weights, no bias, scaled cosine logits:

``L = -1/m sum_i log( exp(s cos theta_{y_i}) / sum_j exp(s cos theta_j) )``

``s`` fixed, learned (``learn_scale=True``, the paper's trainable scale) or automatic (the
L2-softmax bound ``log(p (C-2)/(1-p))``). pytorch-metric-learning's ``NormalizedSoftmaxLoss``
is the same loss with ``temperature = 1/s``.
"""

from __future__ import annotations

from torch import Tensor

from facemetric.losses.normalized_head import NormalizedHead
from facemetric.losses.registry import LOSSES


@LOSSES.register("normface", "normalized-softmax", "normsoftmax")
class NormFaceLoss(NormalizedHead):
    """``CE(s cos theta)``: normalised features and weights, no margin."""

    label_dependent_logits = False
    needs_angle = False

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        scale: float | str | None = None,
        learn_scale: bool = False,
        p: float = 0.9,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        self._init_scale(scale, learn_scale, p)

    def target(self, theta: Tensor | None, cos_y: Tensor, norms: Tensor) -> Tensor:
        return cos_y
