"""Batched embedding of a dataset and pair-set evaluation of a model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # annotations only: a runtime import closes an import cycle via data -> train
    from facemetric.data.pairs import PairList


@torch.no_grad()
def embed_dataset(
    model: nn.Module, dataset: Any, batch_size: int = 256, device: str | torch.device | None = None
) -> Tensor:
    """Raw (un-normalised) embeddings ``[N, D]`` of every item of ``dataset``, in order, on CPU."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(dataset), batch_size):
            idx = list(range(start, min(start + batch_size, len(dataset))))
            if hasattr(dataset, "get_batch"):
                images, _ = dataset.get_batch(idx)
            else:
                images = torch.stack([dataset[i][0] for i in idx])
            out.append(model(images.to(device)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def evaluate_pairs(
    embeddings: Tensor, pairs: PairList, distance: str = "squared_l2", far_target: float = 1e-3
) -> dict[str, Any]:
    """Verification metrics of ``pairs`` on L2-normalised ``embeddings`` (LFW protocol)."""
    from facemetric.eval.verification import evaluate_verification

    normed = F.normalize(embeddings.double(), dim=1).numpy()
    return evaluate_verification(
        normed[pairs.first],
        normed[pairs.second],
        issame=pairs.issame,
        folds=pairs.fold,
        distance=distance,
        far_target=far_target,
    )


class PairEvaluator:
    """``evaluator(model) -> metrics``: embeds ``dataset`` and evaluates ``pairs`` (for the trainer)."""

    def __init__(
        self, dataset: Any, pairs: PairList, distance: str = "squared_l2",
        far_target: float = 1e-3, batch_size: int = 256,
    ) -> None:
        self.dataset, self.pairs = dataset, pairs
        self.distance, self.far_target, self.batch_size = distance, far_target, batch_size

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        emb = embed_dataset(model, self.dataset, self.batch_size)
        metrics = evaluate_pairs(emb, self.pairs, self.distance, self.far_target)
        metrics.pop("roc", None)  # keep metrics.jsonl small; reports recompute the curve
        return metrics
