"""Triplet loss (Schroff, Kalenichenko & Philbin, "FaceNet: A Unified Embedding for Face
Recognition and Clustering", CVPR 2015; the davidsandberg/facenet implementation).

The embeddings are L2-normalised (``f(x)`` on the unit hypersphere) and for each selected
triplet (anchor ``a``, positive ``p`` of the same identity, negative ``n`` of another one)

``L = mean over selected triplets of max(0, ||f(a) - f(p)||^2 - ||f(a) - f(n)||^2 + margin)``

with ``margin = 0.2`` (the paper's ``alpha``; this package calls additive margins ``margin``).
The paper writes the sum; facenet's code averages over the selected triplets, and so does
this module. With another distance object the hinge is
``max(0, distance.margin(d(a,p), d(a,n)) + margin)`` (``d(a,p) - d(a,n)`` for a distance,
``s(a,n) - s(a,p)`` for a similarity such as ``CosineSimilarity``).

Which triplets -- two training modes:

* **online (in-batch) mining**, this module: the triplets are selected in every training
  batch, from that batch's distance matrix, by a miner (:mod:`facemetric.losses.miners`;
  ``strategy`` names one of the selection functions of
  :mod:`facemetric.losses.triplet_selection`), or given as ``indices_tuple``;
* **two-phase selection** (facenet's ``train_tripletloss.py``):
  :mod:`facemetric.train.two_phase` embeds a large sample of people x images with the
  current model, selects triplets on that sample, then trains on the selected triplets in
  mini-batches laid out ``a, p, n, a, p, n, ...``, which this loss reads with a
  ``ConsecutiveTripletsMiner``. Recipes choose with the sampler: ``sampler: pk`` (online) or
  ``sampler: {name: two-phase, ...}`` (e.g. ``configs/digits-triplet-two-phase.yaml``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from facemetric.distances import BaseDistance, SquaredL2Distance
from facemetric.errors import ConfigError
from facemetric.losses.base import EmbeddingLoss, check_inputs
from facemetric.losses.miners import (
    MINERS,
    BaseMiner,
    RandomViolatingMiner,
    TripletMiner,
    build_miner,
    check_indices,
    loss_distance,
)
from facemetric.losses.registry import LOSSES
from facemetric.losses.triplet_selection import STRATEGIES, count_valid_triplets

_VALID_NAMES = "semi-hard, random-violating, hard (alias batch-hard), all"


_STRATEGY_MINERS = {"random-violating": "random-violating", "hard": "batch-hard"}


@LOSSES.register("triplet")
class TripletLoss(EmbeddingLoss):
    """FaceNet triplet loss ``max(0, ||f(a)-f(p)||^2 - ||f(a)-f(n)||^2 + margin)``.

    Args:
        margin: the paper's ``alpha`` (0.2, for embeddings on the unit hypersphere).
        strategy: online selection on the batch distance matrix (default ``"semi-hard"``
            unless ``miner`` is given):

            * ``"semi-hard"``: for every ordered anchor-positive pair, the closest
              negative with ``d(a,p) < d(a,n) < d(a,p) + margin`` (FaceNet, section 3.2);
            * ``"random-violating"``: facenet's ``select_triplets`` -- for every anchor-positive
              pair (anchor = earlier index) one random negative with
              ``d(a,n) - d(a,p) < margin``;
            * ``"hard"`` / ``"batch-hard"``: hardest positive and hardest negative per anchor
              (Hermans et al. 2017);
            * ``"all"``: every triplet violating the margin.
        embedding_dim: if given, the embedding dimension the input must have.
        num_classes: accepted for the common factory interface and ignored.
        normalize: L2-normalise the embeddings first (FaceNet; default ``True``). The loss is
            then invariant to the scale of the embeddings. It sets ``normalize_embeddings``
            of a distance given by name; a distance object or ``{name: ..., <options>}``
            keeps its own flag (default True).
        seed: seed of the generator used by ``"random-violating"``; ``None`` draws it from
            torch's global generator at construction (so ``torch.manual_seed`` makes a run
            reproducible). The generator state is saved by :meth:`extra_state_for_checkpoint`.
        distance: a distance object or name (:mod:`facemetric.distances`: ``squared_l2``,
            ``euclidean``, ``cosine``); default squared L2 (FaceNet).
        miner: a triplet miner (object, name or ``{name: ..., <options>}``,
            :mod:`facemetric.losses.miners`) instead of ``strategy``; a miner built here by
            name gets this loss's ``margin``, distance and generator unless its spec sets them.

    ``forward(embeddings, labels, indices_tuple=None)``: with ``indices_tuple = (a, p, n)``
    (PML style) those triplets are used and nothing is mined.

    Reduction: the mean over the SELECTED triplets (facenet's ``tf.reduce_mean`` over the
    triplets of the batch). For ``"all"`` the selected triplets are exactly the violating
    ones, so this is the mean over the non-zero terms; for ``"semi-hard"`` every selected
    triplet is violating as well; for ``"hard"`` it is the mean over all anchors, zeros
    included; for ``"random-violating"`` the selected triplets violate the margin at selection
    time. If no triplet is selected the loss is ``embeddings.sum() * 0`` (zero, attached to
    the graph, zero gradient).

    Selection runs on a detached copy of the distance matrix (it is not differentiated); the
    loss terms are taken from the differentiable matrix. A miner with the loss's own distance
    mines that matrix; a miner with another distance computes its own.

    ``stats`` after each forward: ``num_triplets`` (selected), ``active_triplets`` (selected
    with loss > 0), ``fraction_active`` (active / number of all valid ``(a, p, n)`` triplets
    of the batch, 0 if there are none), ``mean_pos_dist`` and ``mean_neg_dist`` (mean
    ``d(a,p)``, ``d(a,n)`` over the selected triplets, squared distances by default; 0 if
    none). The indices of the last selection are kept in :attr:`last_triplets`.
    """

    def __init__(
        self,
        margin: float = 0.2,
        strategy: str | None = None,
        embedding_dim: int | None = None,
        num_classes: int | None = None,
        normalize: bool = True,
        seed: int | None = None,
        distance: BaseDistance | str | dict | None = None,
        miner: BaseMiner | str | dict | None = None,
    ) -> None:
        super().__init__()
        try:
            margin = float(margin)
        except (TypeError, ValueError):
            raise ConfigError(f"margin: expected a number, got {margin!r}") from None
        if not math.isfinite(margin) or margin < 0:
            raise ConfigError(f"margin: expected a finite non-negative number, got {margin}")
        if strategy is not None and miner is not None:
            raise ConfigError("strategy: give a strategy or a miner, not both")
        if embedding_dim is not None and int(embedding_dim) < 1:
            raise ConfigError(f"embedding_dim: expected a positive integer, got {embedding_dim}")
        self.margin = margin
        self.embedding_dim = None if embedding_dim is None else int(embedding_dim)
        self.distance = loss_distance(distance, normalize, SquaredL2Distance)
        self.normalize = self.distance.normalize_embeddings
        self.normalizes_features = self.normalize
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        self.generator = torch.Generator().manual_seed(int(seed))
        if miner is None:
            key = str("semi-hard" if strategy is None else strategy).lower().replace("_", "-")
            if key not in STRATEGIES:
                raise ConfigError(f"strategy: unknown {strategy!r}; expected one of: {_VALID_NAMES}")
            self.strategy = key
            miner = _STRATEGY_MINERS.get(key, key)
        self.miner = build_miner(
            miner, "miner", margin=margin, distance=self.distance, generator=self.generator
        )
        if self.miner.output != "triplets":
            raise ConfigError(f"miner: {type(self.miner).__name__} gives pairs; the triplet loss needs triplets")
        if strategy is None and not hasattr(self, "strategy"):
            self.strategy = _miner_name(self.miner)
        if isinstance(self.miner, RandomViolatingMiner):
            self.generator = self.miner.generator  # the one whose state is checkpointed
        #: the selection function (of :mod:`facemetric.losses.triplet_selection`) in use
        self._select = self.miner.select if isinstance(self.miner, TripletMiner) else None
        self.last_triplets: tuple[Tensor, Tensor, Tensor] | None = None

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, strategy={self.strategy!r}, distance={self.distance!r}, "
            f"miner={self.miner!r}"
        )

    def select(self, d: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Selected ``(a, p, n)`` for the matrix ``d = self.distance.pairwise(x)`` (not
        differentiated)."""
        return self.miner.mine(d.detach(), labels)

    def forward(
        self, embeddings: Tensor, labels: Tensor, indices_tuple: tuple[Tensor, ...] | None = None
    ) -> Tensor:
        check_inputs(embeddings, labels, dim=self.embedding_dim)
        labels = labels.to(embeddings.device)
        d = self.distance.pairwise(embeddings)
        if indices_tuple is not None:
            a, p, n = (t.to(d.device) for t in check_indices(indices_tuple, len(labels), "triplets"))
        else:
            a, p, n = self.miner.mine_for_loss(embeddings, labels, d, self.distance)
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
        terms = F.relu(self.distance.margin(d_ap, d_an) + self.margin)
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


def _miner_name(miner: BaseMiner) -> str:
    for name in MINERS.names():
        if type(miner) is MINERS.get(name):
            return name
    return type(miner).__name__
