"""Losses and heads: each is ``loss(embeddings [B,D], labels [B]) -> scalar``.

Build one by name with :func:`build_loss` (``LOSSES`` is the registry).
"""

from facemetric.losses.base import ClassifierLoss, EmbeddingLoss, check_inputs
from facemetric.losses.registry import LOSSES, build_loss

__all__ = ["LOSSES", "build_loss", "EmbeddingLoss", "ClassifierLoss", "check_inputs"]
