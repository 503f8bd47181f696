"""The interface every loss and head shares.

A loss is a ``torch.nn.Module`` called as ``loss(embeddings, labels) -> scalar``:

* ``embeddings``: float tensor ``[B, D]`` (the backbone's raw output, before any normalisation:
  a loss that needs normalised features normalises them itself, so the feature norm stays
  available to quality analyses);
* ``labels``: integer tensor ``[B]`` with identity ids in ``[0, num_classes)``.

State that belongs to a loss (classifier weights, centers, a learned scale) is owned by the
module, so it is saved in ``state_dict()`` and restored on resume. Updates that are not made by
the optimizer (the center-loss rule) happen in :meth:`EmbeddingLoss.after_step`, which the
trainer calls after every ``optimizer.step()``. After each forward, :attr:`EmbeddingLoss.stats`
holds scalar statistics of that batch (e.g. ``active_triplets``, ``accuracy``) for logging.

Classification losses derive from :class:`ClassifierLoss`, whose ``logits(embeddings, labels)``
may depend on the labels (that is where margin heads such as CosFace/ArcFace add their margin);
``logits(embeddings)`` without labels gives the margin-free logits used for prediction.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facemetric.errors import FacemetricError


def check_inputs(
    embeddings: Tensor, labels: Tensor, *, dim: int | None = None, num_classes: int | None = None
) -> None:
    """Raise :class:`FacemetricError` (one line) unless ``embeddings``/``labels`` fit the contract."""
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings)
        raise FacemetricError(f"embeddings: expected a 2-D tensor [batch, dim], got {shape}")
    if not embeddings.is_floating_point():
        raise FacemetricError(f"embeddings: expected a floating-point tensor, got {embeddings.dtype}")
    if not isinstance(labels, Tensor) or labels.ndim != 1:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels)
        raise FacemetricError(f"labels: expected a 1-D tensor [batch], got {shape}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise FacemetricError(f"labels: expected an integer tensor, got {labels.dtype}")
    if labels.shape[0] != embeddings.shape[0]:
        raise FacemetricError(
            f"labels: batch size {labels.shape[0]} does not match embeddings batch size "
            f"{embeddings.shape[0]}"
        )
    if embeddings.shape[0] == 0:
        raise FacemetricError("embeddings: the batch is empty")
    if dim is not None and embeddings.shape[1] != dim:
        raise FacemetricError(
            f"embeddings: expected dimension {dim}, got {embeddings.shape[1]}"
        )
    if not torch.isfinite(embeddings).all():
        raise FacemetricError("embeddings: contain NaN or inf (diverged training or bad input)")
    if num_classes is not None:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise FacemetricError(
                f"labels: values must lie in [0, {num_classes}), got range [{lo}, {hi}]"
            )


def deprecated_alias(
    name: str, value: Any, old_name: str, old_value: Any, default: Any, owner: str
) -> Any:
    """The value of option ``name`` given either as ``name`` or as its deprecated alias
    ``old_name`` (a ``DeprecationWarning`` then; both at once is a one-line error);
    ``default`` if neither is given (``None`` means "not given")."""
    if old_value is None:
        return default if value is None else value
    if value is not None:
        raise FacemetricError(f"{old_name}: deprecated alias of {name}; give {name} only")
    warnings.warn(
        f"{owner}: {old_name!r} is deprecated, use {name!r}", DeprecationWarning, stacklevel=3
    )
    return old_value


class EmbeddingLoss(nn.Module):
    """Base class: ``forward(embeddings [B,D], labels [B]) -> scalar loss``."""

    #: whether ``after_step`` does anything (the trainer may skip the call otherwise)
    has_step_update: bool = False
    #: whether the loss sees L2-normalised features (its "feature space" is the unit sphere)
    normalizes_features: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[str, float] = {}

    def after_step(self) -> None:
        """Non-gradient state update after ``optimizer.step()``; no-op by default."""

    def extra_state_for_checkpoint(self) -> dict:
        """Anything outside ``state_dict`` that resume must restore (e.g. RNG of a sampler)."""
        return {}

    def load_extra_state_from_checkpoint(self, state: dict) -> None:
        """Inverse of :meth:`extra_state_for_checkpoint`."""


class ClassifierLoss(EmbeddingLoss):
    """A classification head: ``loss = CE(logits(x, y), y)`` averaged over the batch.

    Subclasses implement :meth:`logits`. ``stats`` gets ``accuracy`` (top-1 of the margin-free
    logits) and ``feature_norm`` (mean ||x_i|| of the raw embeddings).
    """

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        if int(embedding_dim) < 1:
            raise FacemetricError(f"embedding_dim: expected a positive integer, got {embedding_dim}")
        if int(num_classes) < 2:
            raise FacemetricError(f"num_classes: expected at least 2 classes, got {num_classes}")
        self.embedding_dim = int(embedding_dim)
        self.num_classes = int(num_classes)

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """Class scores ``[B, C]``; with ``labels`` a margin head may modify the target logit."""
        raise NotImplementedError

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_inputs(embeddings, labels, dim=self.embedding_dim, num_classes=self.num_classes)
        logits = self.logits(embeddings, labels)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            plain = logits if not self.label_dependent_logits else self.logits(embeddings)
            self.stats = {
                "accuracy": float((plain.argmax(1) == labels).float().mean()),
                "feature_norm": float(embeddings.detach().norm(dim=1).mean()),
            }
        return loss

    #: True for margin heads, whose ``logits(x, y)`` differ from ``logits(x)``
    label_dependent_logits: bool = False

    @torch.no_grad()
    def predict(self, embeddings: Tensor) -> Tensor:
        """Predicted class ids ``[B]``."""
        return self.logits(embeddings).argmax(1)

    def init_from_class_means(self, means: Tensor) -> None:
        """Start the classifier from the mean embedding of each class ``[C, D]`` (weight
        imprinting: the head of a fine-tuning run agrees with the pretrained features from the
        first step instead of sending random gradients into them)."""
        raise NotImplementedError(f"{type(self).__name__} has no class-mean initialisation")
