"""Center loss (Wen, Zhang, Li & Qiao, "A Discriminative Feature Learning Approach for Deep
Face Recognition", ECCV 2016).

Joint supervision of a classification head (softmax by default) and the center loss:

``L = L_S + lambda * L_C``,  ``L_C = 1/2 sum_i ||x_i - c_{y_i}||^2``

Reduction: the paper sums both terms over the mini-batch; here BOTH are averaged over the batch
(``reduction="mean"``, the default: ``L_C = 1/(2m) sum_i ||x_i - c_{y_i}||^2`` and the head's
cross-entropy is a batch mean), which keeps the paper's lambda meaning (the ratio of the two
terms is unchanged; only the effective learning rate differs by 1/m). ``reduction="sum"``
gives the paper's summed L_C (the head then stays a batch mean).

The centers are a buffer, not trained by the optimizer. After each optimizer step,
:meth:`CenterLoss.after_step` applies the paper's rule (its eq. 4 and Algorithm 1) to the
features ``x_i`` of the step that was just taken:

``delta c_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)``,  ``c_j <- c_j - alpha * delta c_j``

(the paper's ``alpha`` is this package's ``center_lr``; ``alpha=`` is kept as a deprecated
alias) where ``n_j`` is the number of samples of class j in the batch; classes absent from the batch
do not move. The gradient of ``lambda * L_C`` w.r.t. ``x_i`` is ``lambda * (x_i - c_{y_i})``
(times 1/m for the mean), given by autograd.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from facemetric.errors import FacemetricError
from facemetric.losses.base import ClassifierLoss, EmbeddingLoss, check_inputs, deprecated_alias
from facemetric.losses.registry import LOSSES


def center_update(centers: Tensor, features: Tensor, labels: Tensor, alpha: float) -> Tensor:
    """Return the centers after one update by the paper's rule (vectorised, no Python loop).

    ``c_j - alpha * sum_{i: y_i=j} (c_j - x_i) / (1 + n_j)``; rows of absent classes unchanged.
    """
    num_classes = centers.shape[0]
    counts = torch.bincount(labels, minlength=num_classes).to(centers.dtype)  # n_j
    feature_sums = torch.zeros_like(centers).index_add_(0, labels, features.to(centers.dtype))
    diff = counts[:, None] * centers - feature_sums  # sum_i (c_j - x_i)
    return centers - alpha * diff / (1.0 + counts[:, None])


@LOSSES.register("center", "center-loss")
class CenterLoss(EmbeddingLoss):
    """Classification head + ``lambda`` x center loss; centers updated by the paper's rule.

    Args:
        lambda_: weight of the center term (paper's face model: 0.003; its MNIST figure
            sweeps lambda).
        center_lr: the center learning rate, the paper's alpha (default 0.5, the paper's).
        head: the joined classification loss, by registry name (default ``"softmax"``) or an
            instance of :class:`ClassifierLoss` (e.g. an L2-softmax or margin head).
        head_options: keyword options for a head built by name.
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch for the center term.
        alpha: deprecated alias of ``center_lr``.
    """

    has_step_update = True

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        lambda_: float = 0.003,
        center_lr: float | None = None,
        head: str | ClassifierLoss = "softmax",
        head_options: dict[str, Any] | None = None,
        reduction: str = "mean",
        alpha: float | None = None,
    ) -> None:
        super().__init__()
        alpha = deprecated_alias("center_lr", center_lr, "alpha", alpha, 0.5, "center")
        if lambda_ < 0:
            raise FacemetricError(f"lambda_: expected a non-negative weight, got {lambda_}")
        if not 0 <= alpha <= 1:
            raise FacemetricError(f"center_lr (alias alpha): expected a center learning rate in [0, 1], got {alpha}")
        if reduction not in ("mean", "sum"):
            raise FacemetricError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
        if isinstance(head, str):
            built = LOSSES.build(
                head, embedding_dim=embedding_dim, num_classes=num_classes, **(head_options or {})
            )
            if not isinstance(built, ClassifierLoss):
                raise FacemetricError(f"head: {head!r} is not a classification head")
            head = built
        self.head = head
        self.embedding_dim = int(embedding_dim)
        self.num_classes = int(num_classes)
        self.lambda_ = float(lambda_)
        self.center_lr = float(alpha)
        self.reduction = reduction
        self.register_buffer("centers", torch.zeros(self.num_classes, self.embedding_dim))
        self._pending: tuple[Tensor, Tensor] | None = None

    @property
    def alpha(self) -> float:
        """Deprecated name of :attr:`center_lr` (the paper's alpha)."""
        return self.center_lr

    def center_term(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """``1/2 sum_i ||x_i - c_{y_i}||^2`` (divided by the batch size for ``"mean"``)."""
        per_sample = 0.5 * (embeddings - self.centers[labels]).pow(2).sum(dim=1)
        return per_sample.mean() if self.reduction == "mean" else per_sample.sum()

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_inputs(embeddings, labels, dim=self.embedding_dim, num_classes=self.num_classes)
        head_loss = self.head(embeddings, labels)
        center = self.center_term(embeddings, labels)
        if self.training:
            self._pending = (embeddings.detach(), labels.detach())
        self.stats = {
            **self.head.stats,
            "head_loss": float(head_loss.detach()),
            "center_loss": float(center.detach()),
        }
        return head_loss + self.lambda_ * center

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.head.logits(embeddings, labels)

    @torch.no_grad()
    def init_from_class_means(self, means: Tensor) -> None:
        """Centers = the class means of the raw features; the head from the same means."""
        self.centers.copy_(means.to(self.centers.dtype))
        self.head.init_from_class_means(means)

    @torch.no_grad()
    def after_step(self) -> None:
        """Move the centers of the classes in the last training batch by the paper's rule
        (and let the joined head do its own update, e.g. SphereFace's annealing step)."""
        self.head.after_step()
        if self._pending is None:
            return
        features, labels = self._pending
        self.centers.copy_(center_update(self.centers, features, labels, self.center_lr))
        self._pending = None
