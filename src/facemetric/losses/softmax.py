"""Softmax loss: the baseline of discriminative face features.

``L = -1/m sum_i log( exp(W_{y_i}^T x_i + b_{y_i}) / sum_j exp(W_j^T x_i + b_j) )``

A linear classifier on the raw embedding followed by cross-entropy, averaged over the batch
(DeepFace / DeepID; the "softmax" rows of the center-loss and L2-softmax papers).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from facemetric.losses.base import ClassifierLoss
from facemetric.losses.registry import LOSSES


@LOSSES.register("softmax")
class SoftmaxLoss(ClassifierLoss):
    """Linear classifier ``W x + b`` on the raw embeddings + cross-entropy (batch mean)."""

    def __init__(self, embedding_dim: int, num_classes: int, bias: bool = True) -> None:
        super().__init__(embedding_dim, num_classes)
        self.classifier = nn.Linear(self.embedding_dim, self.num_classes, bias=bias)

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.classifier(embeddings)

    @torch.no_grad()
    def init_from_class_means(self, means: Tensor) -> None:
        """``W_j = m_j``, ``b_j = -||m_j||^2 / 2``: logits ``m_j.x - ||m_j||^2/2 = -||x - m_j||^2/2 +
        const``, the nearest-class-mean classifier."""
        self.classifier.weight.copy_(means)
        if self.classifier.bias is not None:
            self.classifier.bias.copy_(-0.5 * means.pow(2).sum(1))
