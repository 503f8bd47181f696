"""MagFace (Meng, Zhao, Huang & Hu, "MagFace: A Universal Representation for Face Recognition
and Quality Assessment", CVPR 2021).

The feature magnitude ``a = ||x||`` (clamped to ``[l_a, u_a]``) sets an ArcFace margin and is
regularised so that it learns face quality:

``m(a) = (u_m - l_m) / (u_a - l_a) (a - l_a) + l_m``,  ``g(a) = a / u_a^2 + 1 / a``,
``L = -1/m sum_i log softmax(s cos(theta_{y_i} + m(a_i)), s cos theta_j)_{y_i} + lambda_g 1/m sum_i g(a_i)``

with ArcFace's rule beyond ``theta + m(a) > pi`` (``cos theta - m(a) sin m(a)``) and an optional
easy margin. The margin's dependence on ``a`` is part of the graph (as in the authors' code),
so ``a`` receives gradient from both terms. Paper defaults (MS1MV2): ``s = 64, l_a = 10,
u_a = 110, l_m = 0.45, u_m = 0.8, lambda_g = 35``. After training, ``||x||`` is the quality score.
"""

from __future__ import annotations

import math

from torch import Tensor

from facemetric.errors import FacemetricError
from facemetric.losses.normalized_head import NormalizedHead, arcface_target
from facemetric.losses.registry import LOSSES


@LOSSES.register("magface")
class MagFaceLoss(NormalizedHead):
    """ArcFace with the magnitude-aware margin ``m(a)`` plus ``lambda_g g(a)``."""

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        scale: float | str | None = None,
        learn_scale: bool = False,
        l_a: float = 10.0,
        u_a: float = 110.0,
        l_m: float = 0.45,
        u_m: float = 0.8,
        lambda_g: float = 35.0,
        easy_margin: bool = False,
        p: float = 0.9,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        if not 0 < l_a < u_a:
            raise FacemetricError(f"l_a, u_a: expected 0 < l_a < u_a, got ({l_a}, {u_a})")
        if not 0 <= l_m <= u_m < math.pi / 2:
            raise FacemetricError(f"l_m, u_m: expected 0 <= l_m <= u_m < pi/2, got ({l_m}, {u_m})")
        if lambda_g < 0:
            raise FacemetricError(f"lambda_g: expected a non-negative weight, got {lambda_g}")
        self.l_a, self.u_a, self.l_m, self.u_m = float(l_a), float(u_a), float(l_m), float(u_m)
        self.lambda_g = float(lambda_g)
        self.easy_margin = bool(easy_margin)
        self._init_scale(scale, learn_scale, p)

    def margin_at_zero(self) -> float:
        return 1.0 - math.cos(self.u_m)  # the largest margin, reached at a = u_a

    def magnitude(self, norms: Tensor) -> Tensor:
        """``a = clamp(||x||, l_a, u_a)``."""
        return norms.clamp(self.l_a, self.u_a)

    def margin_of(self, norms: Tensor) -> Tensor:
        """``m(a)``, linear from ``l_m`` at ``l_a`` to ``u_m`` at ``u_a``."""
        a = self.magnitude(norms)
        return (self.u_m - self.l_m) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_m

    def target(self, theta: Tensor | None, cos_y: Tensor, norms: Tensor) -> Tensor:
        assert theta is not None
        return arcface_target(theta, self.margin_of(norms), self.easy_margin)

    def regularizer(self, norms: Tensor) -> Tensor:
        """``lambda_g mean_i g(a_i)``, ``g(a) = a / u_a^2 + 1/a``."""
        a = self.magnitude(norms)
        return self.lambda_g * (a / self.u_a**2 + 1.0 / a).mean()
