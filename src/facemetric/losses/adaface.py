"""AdaFace (Kim, Jain & Liu, "AdaFace: Quality Adaptive Margin for Face Recognition", CVPR 2022).

The feature norm, standardised by batch statistics, stands for image quality and moves the
margin between angular (ArcFace-like, for high quality) and additive (CosFace-like, for low
quality):

``z = clip( h (||x|| - mu) / (sigma + eps), -1, 1 )``  (norm detached),
``g_angle = -m z``,  ``g_add = m z + m``,
``f(theta) = cos( clip(theta + g_angle, eps, pi - eps) ) - g_add``,  ``logit_y = s f(theta_y)``.

``mu`` and ``sigma`` are exponential moving averages (momentum ``t_alpha``) of the batch mean
and (unbiased) standard deviation of the norms clipped to [0.001, 100], updated in every
training forward before use and kept as buffers (initial values 20 and 100, as in the authors'
code). Paper defaults: ``m = 0.4, h = 0.333, s = 64, t_alpha = 0.01``; ``eps = 1e-3``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facemetric.errors import FacemetricError
from facemetric.losses.normalized_head import NormalizedHead
from facemetric.losses.registry import LOSSES

_EPS = 1e-3


@LOSSES.register("adaface")
class AdaFaceLoss(NormalizedHead):
    """Quality-adaptive margin from the batch-standardised feature norm."""

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        margin: float = 0.4,
        h: float = 0.333,
        scale: float | str | None = None,
        learn_scale: bool = False,
        t_alpha: float = 0.01,
        p: float = 0.9,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        if not 0 <= margin < 1:
            raise FacemetricError(f"margin: expected a margin in [0, 1), got {margin}")
        if not h > 0 or not 0 < t_alpha <= 1:
            raise FacemetricError(f"h, t_alpha: expected h > 0 and 0 < t_alpha <= 1, got ({h}, {t_alpha})")
        self.margin, self.h, self.t_alpha = float(margin), float(h), float(t_alpha)
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))
        self._init_scale(scale, learn_scale, p)

    def margin_at_zero(self) -> float:
        return self.margin  # z = 0: f(0) = cos(0) - m

    def norm_scaler(self, norms: Tensor) -> Tensor:
        """``z``: update the running statistics (training only), then standardise and clip."""
        safe = norms.detach().clamp(0.001, 100.0)
        if self.training:
            mean = safe.mean()
            std = safe.std() if safe.numel() > 1 else torch.zeros_like(mean)
            self.batch_mean.mul_(1 - self.t_alpha).add_(self.t_alpha * mean.to(self.batch_mean.dtype))
            self.batch_std.mul_(1 - self.t_alpha).add_(self.t_alpha * std.to(self.batch_std.dtype))
        z = (safe - self.batch_mean.to(safe.dtype)) / (self.batch_std.to(safe.dtype) + _EPS)
        return (z * self.h).clamp(-1.0, 1.0)

    def target(self, theta: Tensor | None, cos_y: Tensor, norms: Tensor) -> Tensor:
        assert theta is not None
        z = self.norm_scaler(norms)
        g_angle = -self.margin * z
        g_add = self.margin * z + self.margin
        return torch.cos((theta + g_angle).clamp(_EPS, math.pi - _EPS)) - g_add
