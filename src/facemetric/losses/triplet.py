"""Triplet loss with online triplet selection (Schroff, Kalenichenko & Philbin, "FaceNet: A
Unified Embedding for Face Recognition and Clustering", CVPR 2015; the davidsandberg/facenet
implementation).

The embeddings are L2-normalised (``f(x)`` on the unit hypersphere) and for each selected
triplet (anchor ``a``, positive ``p`` of the same identity, negative ``n`` of another one)

``L = mean over selected triplets of max(0, ||f(a) - f(p)||^2 - ||f(a) - f(n)||^2 + alpha)``

with margin ``alpha = 0.2`` (the paper's value). The paper writes the sum; facenet's code
averages over the selected triplets, and so does this module.

Triplets are selected online from the batch's squared-distance matrix by one of the
strategies of :mod:`facemetric.losses.triplet_selection`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from facemetric.errors import ConfigError
from facemetric.losses.base import EmbeddingLoss, check_inputs
from facemetric.losses.registry import LOSSES
from facemetric.losses.triplet_selection import (
    RANDOM_STRATEGIES,
    STRATEGIES,
    count_valid_triplets,
    pairwise_squared_distances,
)

_VALID_NAMES = "semi-hard, random-violating, hard (alias batch-hard), all"


@LOSSES.register("triplet")
class TripletLoss(EmbeddingLoss):
    """FaceNet triplet loss ``max(0, ||f(a)-f(p)||^2 - ||f(a)-f(n)||^2 + alpha)``.

    Args:
        margin: ``alpha`` (paper: 0.2, for embeddings on the unit hypersphere).
        strategy: online selection on the batch distance matrix:

            * ``"semi-hard"`` (default): for every ordered anchor-positive pair, the closest
              negative with ``d(a,p) < d(a,n) < d(a,p) + alpha`` (FaceNet, section 3.2);
            * ``"random-violating"``: facenet's ``select_triplets`` -- for every anchor-positive
              pair (anchor = earlier index) one random negative with
              ``d(a,n) - d(a,p) < alpha``;
            * ``"hard"`` / ``"batch-hard"``: hardest positive and hardest negative per anchor
              (Hermans et al. 2017);
            * ``"all"``: every triplet violating the margin.
        embedding_dim: if given, the embedding dimension the input must have.
        num_classes: accepted for the common factory interface and ignored.
        normalize: L2-normalise the embeddings first (FaceNet; default ``True``). The loss is
            then invariant to the scale of the embeddings.
        seed: seed of the generator used by ``"random-violating"``; ``None`` draws it from
            torch's global generator at construction (so ``torch.manual_seed`` makes a run
            reproducible). The generator state is saved by :meth:`extra_state_for_checkpoint`.

    Reduction: the mean over the SELECTED triplets (facenet's ``tf.reduce_mean`` over the
    triplets of the batch). For ``"all"`` the selected triplets are exactly the violating
    ones, so this is the mean over the non-zero terms; for ``"semi-hard"`` every selected
    triplet is violating as well; for ``"hard"`` it is the mean over all anchors, zeros
    included; for ``"random-violating"`` the selected triplets violate the margin at selection
    time. If no triplet is selected the loss is ``embeddings.sum() * 0`` (zero, attached to
    the graph, zero gradient).

    Selection runs on a detached copy of the distance matrix (it is not differentiated); the
    loss terms are taken from the differentiable matrix.

    ``stats`` after each forward: ``num_triplets`` (selected), ``active_triplets`` (selected
    with loss > 0), ``fraction_active`` (active / number of all valid ``(a, p, n)`` triplets
    of the batch, 0 if there are none), ``mean_pos_dist`` and ``mean_neg_dist`` (mean squared
    distances ``d(a,p)``, ``d(a,n)`` over the selected triplets; 0 if none). The indices of
    the last selection are kept in :attr:`last_triplets`.
    """

    def __init__(
        self,
        margin: float = 0.2,
        strategy: str = "semi-hard",
        embedding_dim: int | None = None,
        num_classes: int | None = None,
        normalize: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        try:
            margin = float(margin)
        except (TypeError, ValueError):
            raise ConfigError(f"margin: expected a number, got {margin!r}") from None
        if not math.isfinite(margin) or margin < 0:
            raise ConfigError(f"margin: expected a finite non-negative number, got {margin}")
        key = str(strategy).lower().replace("_", "-")
        if key not in STRATEGIES:
            raise ConfigError(f"strategy: unknown {strategy!r}; expected one of: {_VALID_NAMES}")
        if embedding_dim is not None and int(embedding_dim) < 1:
            raise ConfigError(f"embedding_dim: expected a positive integer, got {embedding_dim}")
        self.margin = margin
        self.strategy = key
        self.embedding_dim = None if embedding_dim is None else int(embedding_dim)
        self.normalize = bool(normalize)
        self.normalizes_features = self.normalize
        self._select = STRATEGIES[key]
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        self.generator = torch.Generator().manual_seed(int(seed))
        self.last_triplets: tuple[Tensor, Tensor, Tensor] | None = None

    def extra_repr(self) -> str:
        return f"margin={self.margin}, strategy={self.strategy!r}, normalize={self.normalize}"

    def select(self, d: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Selected ``(a, p, n)`` for the squared-distance matrix ``d`` (not differentiated)."""
        d = d.detach()
        if self.strategy in RANDOM_STRATEGIES:
            return self._select(d, labels, self.margin, generator=self.generator)
        return self._select(d, labels, self.margin)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_inputs(embeddings, labels, dim=self.embedding_dim)
        labels = labels.to(embeddings.device)
        x = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        d = pairwise_squared_distances(x)
        with torch.no_grad():
            a, p, n = self.select(d, labels)
        self.last_triplets = (a, p, n)
        valid = count_valid_triplets(labels)
        if a.numel() == 0:
            self.stats = {
                "num_triplets": 0.0,
                "active_triplets": 0.0,
                "fraction_active": 0.0,
                "mean_pos_dist": 0.0,
                "mean_neg_dist": 0.0,
            }
            return embeddings.sum() * 0.0
        d_ap, d_an = d[a, p], d[a, n]
        terms = F.relu(d_ap - d_an + self.margin)
        loss = terms.mean()
        with torch.no_grad():
            active = int((terms > 0).sum())
            self.stats = {
                "num_triplets": float(a.numel()),
                "active_triplets": float(active),
                "fraction_active": active / valid if valid else 0.0,
                "mean_pos_dist": float(d_ap.mean()),
                "mean_neg_dist": float(d_an.mean()),
            }
        return loss

    def extra_state_for_checkpoint(self) -> dict:
        """The random-violating generator's state (so a resumed run selects the same)."""
        return {"triplet_generator": self.generator.get_state()}

    def load_extra_state_from_checkpoint(self, state: dict) -> None:
        gen_state = (state or {}).get("triplet_generator")
        if gen_state is not None:
            if isinstance(gen_state, Tensor):
                gen_state = gen_state.cpu()
            self.generator.set_state(gen_state)
