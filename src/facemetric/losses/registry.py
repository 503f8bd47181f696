"""The loss registry: ``build_loss("center", embedding_dim=2, num_classes=10, lambda_=0.1)``."""

from __future__ import annotations

from typing import Any

from facemetric.losses.base import EmbeddingLoss
from facemetric.registry import Registry

LOSSES: Registry[EmbeddingLoss] = Registry("loss")


def build_loss(name: str, *, embedding_dim: int, num_classes: int, **options: Any) -> EmbeddingLoss:
    """Build the loss registered as ``name``.

    Every factory receives ``embedding_dim`` and ``num_classes`` (a loss that does not need one,
    like the triplet loss, accepts and ignores it) plus its own ``options``.
    """
    return LOSSES.build(name, embedding_dim=embedding_dim, num_classes=num_classes, **options)
