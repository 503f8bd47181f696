"""The verification evaluator of training runs: ``evaluator(model) -> metrics``.

A :class:`PairSetEvaluator` holds a dataset of preprocessed validation images (the distinct
images of the pairs, decoded once: the digits' held-out split, or the cached photos of an LFW
``pairs.txt`` / generated folder pairs) and the pairs as indices into it. Each call embeds the
dataset with the one embedding function
(:func:`facemetric.inference.embedding.embed_batches`: flip-TTA sums the two views, then L2
normalisation -- exactly what ``load_model(...).embed`` does for a trained artifact) and
scores the pairs with the LFW protocol (:func:`facemetric.eval.verification.evaluate_verification`)
using the recipe's ``eval`` section: ``distance``, ``far_target``, ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from facemetric.data.pairs import PairList
from facemetric.eval.verification import evaluate_verification
from facemetric.inference.embedding import dataset_batches, embed_batches


class PairSetEvaluator:
    """``evaluator(model) -> metrics`` for pairs ``(first[i], second[i])`` of ``dataset`` items.

    ``issame[i]``: genuine pair; ``folds[i]``: its fold. ``identities`` (optional, one name per
    dataset item) lets the trainer measure the model's impostor tail on these images.
    """

    def __init__(
        self,
        dataset: Any,
        first: Any,
        second: Any,
        issame: Any,
        folds: Any,
        *,
        flip: bool = False,
        distance: str = "squared_l2",
        far_target: float = 1e-3,
        batch_size: int = 256,
        identities: Sequence[str] | None = None,
    ) -> None:
        self.dataset = dataset
        self.first = np.asarray(first, dtype=np.int64)
        self.second = np.asarray(second, dtype=np.int64)
        self.issame = np.asarray(issame, dtype=bool)
        self.folds = np.asarray(folds, dtype=np.int64)
        self.flip, self.distance, self.far_target = bool(flip), str(distance), float(far_target)
        self.batch_size = int(batch_size)
        self._identities = None if identities is None else [str(n) for n in identities]

    @classmethod
    def from_pairs(cls, dataset: Any, pairs: PairList, **options: Any) -> PairSetEvaluator:
        """An evaluator of the :class:`~facemetric.data.pairs.PairList` ``pairs`` over ``dataset``."""
        return cls(dataset, pairs.first, pairs.second, pairs.issame, pairs.fold, **options)

    def __len__(self) -> int:
        return int(self.issame.size)

    def embeddings(self, model: nn.Module) -> np.ndarray:
        """L2-normalised embeddings ``[len(dataset), D]`` (float32) of the dataset, in order."""
        batches = dataset_batches(self.dataset, self.batch_size)
        return embed_batches(model, batches, flip=self.flip, normalize=True).embeddings.numpy()

    def identities(self) -> list[str] | None:
        """The identity of each dataset item, in embedding order (None when unknown)."""
        return None if self._identities is None else list(self._identities)

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        emb = self.embeddings(model)
        metrics = evaluate_verification(
            emb[self.first], emb[self.second], issame=self.issame, folds=self.folds,
            distance=self.distance, far_target=self.far_target,
        )
        metrics.pop("roc", None)  # keep metrics.jsonl small; reports recompute the curve
        return metrics


__all__ = ["PairSetEvaluator"]
