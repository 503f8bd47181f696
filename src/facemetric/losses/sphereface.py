"""SphereFace / A-Softmax (Liu, Wen, Yu, Li, Raj & Song, "SphereFace: Deep Hypersphere
Embedding for Face Recognition", CVPR 2017).

Normalised class weights, un-normalised features, a multiplicative angular margin ``m``
(integer, paper: 4) on the target:

``logit_j = ||x|| cos theta_j``,  ``logit_y = ||x|| psi(theta_y)``,
``psi(theta) = (-1)^k cos(m theta) - 2k``  for  ``theta in [k pi/m, (k+1) pi/m]``, k = 0..m-1,

which makes the target monotonically decreasing on [0, pi]. Training follows the paper's
annealing (its released code): the target is ``(lambda ||x|| cos theta + ||x|| psi(theta)) /
(1 + lambda)`` with ``lambda = max(lambda_min, base (1 + gamma t)^(-power))`` at training step
``t`` (defaults ``base=1000, gamma=0.12, power=1, lambda_min=5``); ``t`` is a buffer advanced by
:meth:`after_step`, so it is checkpointed and resumed. ``base=0, lambda_min=0`` gives plain
A-Softmax, which equals pytorch-metric-learning's ``SphereFaceLoss`` (``scale=1``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facemetric.errors import FacemetricError
from facemetric.losses.normalized_head import NormalizedHead
from facemetric.losses.registry import LOSSES


def sphereface_psi(theta: Tensor, m: int) -> Tensor:
    """``(-1)^k cos(m theta) - 2k`` with ``k = floor(m theta / pi)`` (clamped to m-1 at pi)."""
    k = torch.floor(theta.detach() * m / math.pi).clamp(0, m - 1)
    sign = 1.0 - 2.0 * torch.remainder(k, 2)
    return sign * torch.cos(m * theta) - 2.0 * k


@LOSSES.register("sphereface", "a-softmax", "asoftmax")
class SphereFaceLoss(NormalizedHead):
    """A-Softmax: target ``||x|| psi(theta_y)`` with lambda annealing; weights normalised."""

    has_step_update = True

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        margin: int = 4,
        base: float = 1000.0,
        gamma: float = 0.12,
        power: float = 1.0,
        lambda_min: float = 5.0,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        if int(margin) != margin or not 1 <= margin <= 8:
            raise FacemetricError(f"margin: expected an integer multiplicative margin in 1..8, got {margin}")
        if min(base, gamma, power, lambda_min) < 0:
            raise FacemetricError("base, gamma, power, lambda_min: expected non-negative numbers")
        self.margin = int(margin)
        self.base, self.gamma, self.power, self.lambda_min = float(base), float(gamma), float(power), float(lambda_min)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self._stepped = False

    @property
    def lambda_(self) -> float:
        """``max(lambda_min, base (1 + gamma t)^(-power))`` at the current step ``t``."""
        t = float(self.iteration)
        return max(self.lambda_min, self.base * (1.0 + self.gamma * t) ** (-self.power))

    def logit_scale(self, norms: Tensor) -> Tensor:
        return norms

    def target(self, theta: Tensor | None, cos_y: Tensor, norms: Tensor) -> Tensor:
        assert theta is not None
        lam = self.lambda_ if self.training else 0.0
        psi = sphereface_psi(theta, self.margin)
        return (lam * torch.cos(theta) + psi) / (1.0 + lam)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        loss = super().forward(embeddings, labels)
        self.stats["lambda"] = self.lambda_
        self._stepped = self.training
        return loss

    def after_step(self) -> None:
        """Advance the annealing step (once per optimizer step that followed a training forward)."""
        if self._stepped:
            self.iteration += 1
            self._stepped = False
