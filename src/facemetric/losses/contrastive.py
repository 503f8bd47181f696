"""Contrastive loss (Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an
Invariant Mapping", CVPR 2006; Chopra, Hadsell & LeCun 2005 for face verification).

For a pair of embeddings at distance ``D`` (default: Euclidean distance of the L2-normalised
embeddings, ``D in [0, 2]``) the paper's loss (its eq. 4) is

``L(Y, D) = (1 - Y) * 1/2 * D^2  +  Y * 1/2 * max(0, m - D)^2``

with ``Y = 0`` for a similar (positive, same identity) pair and ``Y = 1`` for a dissimilar
(negative) pair. This module computes, over the pairs chosen by a pair miner (default: all
ordered pairs of the batch) or given as ``indices_tuple``,

``L = ( sum_{(i,j) in P} 1/2 * max(0, D_ij - pos_margin)^2
      + sum_{(i,j) in N} 1/2 * max(0, neg_margin - D_ij)^2 ) / (|P| + |N|)``

``pos_margin = 0`` and ``neg_margin = m`` (default 1.0) give exactly the paper's terms.
Reduction (a named deviation): the paper sums over the pairs; here the sum is divided by the
number of selected pairs, positive and negative together, zero terms included. ``power=1``
replaces ``1/2 * max(0, .)^2`` by ``max(0, .)`` (the hinge form, no 1/2).

With a similarity (``CosineSimilarity``, ``is_inverted``) the margins keep their meaning
through ``distance.margin``: positive pairs pay for ``s < pos_margin``, negative pairs for
``s > neg_margin``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from facemetric.distances import BaseDistance, EuclideanDistance
from facemetric.errors import ConfigError
from facemetric.losses.base import EmbeddingLoss, check_inputs
from facemetric.losses.miners import (
    BaseMiner,
    build_miner,
    check_indices,
    loss_distance,
    triplets_to_pairs,
)
from facemetric.losses.registry import LOSSES


def _number(value: Any, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}: expected a finite number, got {value}")
    return value


@LOSSES.register("contrastive", "contrastive-loss")
class ContrastiveLoss(EmbeddingLoss):
    """Hadsell et al. 2006 contrastive loss on mined pairs (formula in the module docstring).

    Args:
        margin: ``m``, the negative margin ``neg_margin`` (default 1.0: Euclidean distance of
            unit vectors, half the largest possible).
        pos_margin: positive pairs closer than this cost nothing (paper: 0).
        power: 2 (the paper: ``1/2 max(0, .)^2``) or 1 (``max(0, .)``).
        distance: a distance object or name (:mod:`facemetric.distances`; default
            ``euclidean`` on L2-normalised embeddings).
        normalize: ``normalize_embeddings`` of a distance given by name (default True).
        miner: a pair miner (object, name or ``{name: ..., <options>}``); default
            ``all-pairs``. A triplet miner may be given too: its triplets ``(a, p, n)``
            become the pairs ``(a, p)`` and ``(a, n)`` (its own ``margin``, default 0.2). A
            miner built here by name gets this loss's distance, and a ``pair-margin`` miner
            its margins, unless the spec sets them.
        embedding_dim: if given, the embedding dimension the input must have.
        num_classes: accepted for the common factory interface and ignored.
        seed: seed of a random-violating triplet miner's generator.

    ``forward(embeddings, labels, indices_tuple=None)``: ``indices_tuple`` is
    ``(a1, p, a2, n)`` or ``(a, p, n)`` (PML style). If no pair is selected the loss is
    ``embeddings.sum() * 0``. ``stats``: ``num_pos_pairs``, ``num_neg_pairs``,
    ``active_pos_pairs``, ``active_neg_pairs`` (terms > 0), ``mean_pos_dist``,
    ``mean_neg_dist``.
    """

    def __init__(
        self,
        margin: float = 1.0,
        pos_margin: float = 0.0,
        power: int = 2,
        distance: BaseDistance | str | dict | None = None,
        normalize: bool = True,
        miner: BaseMiner | str | dict | None = None,
        embedding_dim: int | None = None,
        num_classes: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.margin = _number(margin, "margin")
        self.pos_margin = _number(pos_margin, "pos_margin")
        if power not in (1, 2):
            raise ConfigError(f"power: expected 1 or 2, got {power!r}")
        self.power = int(power)
        if embedding_dim is not None and int(embedding_dim) < 1:
            raise ConfigError(f"embedding_dim: expected a positive integer, got {embedding_dim}")
        self.embedding_dim = None if embedding_dim is None else int(embedding_dim)
        self.distance = loss_distance(distance, normalize, EuclideanDistance)
        self.normalizes_features = self.distance.normalize_embeddings
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        self.miner = build_miner(
            "all-pairs" if miner is None else miner,
            "miner",
            distance=self.distance,
            pos_margin=self.pos_margin,
            neg_margin=self.margin,
            generator=generator,
        )
        self.last_pairs: tuple[Tensor, ...] | None = None

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, pos_margin={self.pos_margin}, power={self.power}, "
            f"distance={self.distance!r}, miner={self.miner!r}"
        )

    def _hinge(self, x: Tensor) -> Tensor:
        h = F.relu(x)
        return 0.5 * h * h if self.power == 2 else h

    def forward(
        self, embeddings: Tensor, labels: Tensor, indices_tuple: tuple[Tensor, ...] | None = None
    ) -> Tensor:
        check_inputs(embeddings, labels, dim=self.embedding_dim)
        labels = labels.to(embeddings.device)
        d = self.distance.pairwise(embeddings)
        if indices_tuple is not None:
            pairs = check_indices(indices_tuple, len(labels), "pairs")
        else:
            pairs = triplets_to_pairs(self.miner.mine_for_loss(embeddings, labels, d, self.distance))
        a1, p, a2, n = (t.to(d.device) for t in pairs)
        self.last_pairs = (a1, p, a2, n)
        total = a1.numel() + a2.numel()
        if total == 0:
            self.stats = {k: 0.0 for k in _STATS}
            return embeddings.sum() * 0.0
        d_pos, d_neg = d[a1, p], d[a2, n]
        pos_terms = self._hinge(self.distance.margin(d_pos, torch.full_like(d_pos, self.pos_margin)))
        neg_terms = self._hinge(self.distance.margin(torch.full_like(d_neg, self.margin), d_neg))
        loss = (pos_terms.sum() + neg_terms.sum()) / total
        with torch.no_grad():
            self.stats = {
                "num_pos_pairs": float(a1.numel()),
                "num_neg_pairs": float(a2.numel()),
                "active_pos_pairs": float((pos_terms > 0).sum()),
                "active_neg_pairs": float((neg_terms > 0).sum()),
                "mean_pos_dist": float(d_pos.mean()) if d_pos.numel() else 0.0,
                "mean_neg_dist": float(d_neg.mean()) if d_neg.numel() else 0.0,
            }
        return loss


_STATS = (
    "num_pos_pairs",
    "num_neg_pairs",
    "active_pos_pairs",
    "active_neg_pairs",
    "mean_pos_dist",
    "mean_neg_dist",
)
