"""Embeddings of a dataset and verification of pairs on them (thin callers of the one
embedding function, :func:`facemetric.inference.embedding.embed_batches`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from facemetric.data.pairs import PairList
from facemetric.eval.verification import evaluate_verification
from facemetric.inference.embedding import dataset_batches, embed_batches, normalize_rows


def embed_dataset(
    model: nn.Module, dataset: Any, batch_size: int = 256, device: str | torch.device | None = None
) -> Tensor:
    """Raw (un-normalised, no flip) embeddings ``[N, D]`` (float32) of every item of
    ``dataset``, in order, on CPU."""
    return embed_batches(model, dataset_batches(dataset, batch_size), normalize=False, device=device).embeddings


def evaluate_pairs(
    embeddings: Tensor, pairs: PairList, distance: str = "squared_l2", far_target: float = 1e-3
) -> dict[str, Any]:
    """Verification metrics (LFW protocol) of ``pairs`` on the raw ``embeddings``, after the
    one L2 normalisation of :func:`~facemetric.inference.embedding.embed_batches` (float32
    ``x / max(||x||, 1e-12)``), as the training validation scores them."""
    normed = normalize_rows(torch.as_tensor(embeddings)).numpy()
    return evaluate_verification(
        normed[pairs.first],
        normed[pairs.second],
        issame=pairs.issame,
        folds=pairs.fold,
        distance=distance,
        far_target=far_target,
    )


__all__ = ["embed_dataset", "evaluate_pairs"]
