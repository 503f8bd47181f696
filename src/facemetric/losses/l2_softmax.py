"""L2-constrained softmax loss (Ranjan, Castillo & Chellappa, "L2-constrained Softmax Loss for
Discriminative Face Verification", 2017).

The feature is L2-normalised and scaled to norm ``alpha`` (this package's ``scale``, the
name every normalised head uses; ``alpha=`` is kept as a deprecated alias) before the
softmax classifier:

``L = -1/m sum_i log softmax( W (alpha * x_i / ||x_i||) + b )_{y_i}``

``alpha`` is fixed, learned (a scalar parameter initialised to a given value), or chosen
automatically as the paper's lower bound for a target class probability ``p`` of a
correctly-classified feature (their eq. 7):

``alpha_low = log( p (C - 2) / (1 - p) )``

The pre-normalisation norm ||x_i|| is reported in ``stats['feature_norm']`` (the paper's
face-quality signal).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facemetric.errors import FacemetricError
from facemetric.losses.base import ClassifierLoss, deprecated_alias
from facemetric.losses.registry import LOSSES


def alpha_lower_bound(num_classes: int, p: float = 0.9) -> float:
    """``log(p (C-2) / (1-p))``: the smallest alpha for which a feature can reach class
    probability ``p`` among ``C`` classes (Ranjan et al. 2017, eq. 7). Needs ``C > 2``."""
    if int(num_classes) <= 2:
        raise FacemetricError(f"num_classes: alpha_lower_bound needs more than 2 classes, got {num_classes}")
    if not 0.0 < p < 1.0:
        raise FacemetricError(f"p: expected a probability in (0, 1), got {p}")
    return math.log(p * (num_classes - 2) / (1.0 - p))


@LOSSES.register("l2-softmax", "l2_softmax", "l2softmax")
class L2SoftmaxLoss(ClassifierLoss):
    """L2-normalise, scale by alpha, then linear classifier + cross-entropy (batch mean).

    Args:
        scale: the paper's alpha; a number, or ``"auto"`` (default) for
            :func:`alpha_lower_bound` (num_classes, p).
        learn_scale: make it a trainable scalar initialised to ``scale`` (the paper's
            "learned alpha" variant); otherwise it is a fixed buffer.
        p: target probability for ``scale="auto"`` (paper: 0.9).
        bias: whether the classifier has a bias term.
        alpha, learn_alpha: deprecated aliases of ``scale``, ``learn_scale``.

    The value is stored as ``self.alpha`` (parameter or buffer; ``self.scale`` reads it), so
    checkpoints keep their keys.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        scale: float | str | None = None,
        learn_scale: bool | None = None,
        p: float = 0.9,
        bias: bool = True,
        alpha: float | str | None = None,
        learn_alpha: bool | None = None,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        owner = "l2-softmax"
        alpha = deprecated_alias("scale", scale, "alpha", alpha, "auto", owner)
        learn_alpha = deprecated_alias("learn_scale", learn_scale, "learn_alpha", learn_alpha, False, owner)
        if isinstance(alpha, str):
            if alpha != "auto":
                raise FacemetricError(f"scale (alias alpha): expected a positive number or 'auto', got {alpha!r}")
            alpha_value = alpha_lower_bound(self.num_classes, p)
        else:
            alpha_value = float(alpha)
        if not alpha_value > 0:
            raise FacemetricError(f"scale (alias alpha): expected a positive number, got {alpha_value}")
        init = torch.tensor(alpha_value, dtype=torch.float32)
        if learn_alpha:
            self.alpha = nn.Parameter(init)
        else:
            self.register_buffer("alpha", init)
        self.learn_alpha = bool(learn_alpha)
        self.classifier = nn.Linear(self.embedding_dim, self.num_classes, bias=bias)

    normalizes_features = True

    @property
    def scale(self) -> Tensor:
        """The feature scale (the paper's alpha; stored as ``self.alpha``)."""
        return self.alpha

    @property
    def learn_scale(self) -> bool:
        return self.learn_alpha

    def scaled_features(self, embeddings: Tensor) -> Tensor:
        """``alpha * x / ||x||`` (the input of the classifier)."""
        return self.alpha * F.normalize(embeddings, dim=1)

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.classifier(self.scaled_features(embeddings))

    @torch.no_grad()
    def init_from_class_means(self, means: Tensor) -> None:
        """``W_j = m_j / ||m_j||`` (means of the normalised features), no bias: logits
        ``alpha cos(x, m_j)``."""
        self.classifier.weight.copy_(F.normalize(means, dim=1))
        if self.classifier.bias is not None:
            self.classifier.bias.zero_()

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        loss = super().forward(embeddings, labels)
        self.stats["alpha"] = float(self.alpha.detach())
        return loss
