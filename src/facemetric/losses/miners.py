"""Miners: ``miner(embeddings, labels) -> indices_tuple`` (the pytorch-metric-learning shape).

A miner chooses which tuples of a batch a pair or triplet loss is computed on:

* triplet miners return ``(a, p, n)``: three ``LongTensor`` index vectors, one entry per
  triplet (anchor, positive of the anchor's identity, negative of another identity);
* pair miners return ``(a1, p, a2, n)``: positive pairs ``(a1[i], p[i])`` and negative pairs
  ``(a2[j], n[j])``.

Every miner takes a distance object (:mod:`facemetric.distances`: ``SquaredL2Distance``,
``EuclideanDistance``, ``LpDistance``, ``CosineSimilarity``; default squared L2 on
L2-normalised embeddings, FaceNet's) and computes the batch matrix with it, without gradient.
:meth:`BaseMiner.mine` does the choosing on a precomputed matrix, which a loss that already
has the matrix calls instead. For a similarity (``is_inverted``) the margins keep their
meaning: ``margin`` is the gap ``s(a,p) - s(a,n)`` a triplet must reach.

The triplet miners ARE the selection functions of :mod:`facemetric.losses.triplet_selection`
(one implementation): ``SemiHardMiner`` -> ``semi_hard``, ``RandomViolatingMiner`` ->
``random_violating`` (facenet's ``select_triplets``), ``BatchHardMiner`` -> ``batch_hard``,
``AllTripletsMiner`` -> ``all_violating``; for the same matrix, labels and generator state
they return the same index tuples.

Build one by name with :func:`build_miner` (``MINERS`` is the registry): ``semi-hard``,
``random-violating``, ``batch-hard`` (alias ``hard``), ``all`` (alias ``all-triplets``),
``all-pairs``, ``pair-margin``, ``consecutive-triplets`` (the batch is ``a, p, n, a, p, n,
...``: two-phase training).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from facemetric.distances import BaseDistance, SquaredL2Distance, build_distance
from facemetric.errors import ConfigError, FacemetricError
from facemetric.losses.base import check_inputs
from facemetric.losses.triplet_selection import (
    all_violating,
    batch_hard,
    label_masks,
    random_violating,
    semi_hard,
)
from facemetric.registry import Registry

IndicesTuple = tuple[Tensor, ...]


def _margin(value: Any, name: str = "margin") -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if math.isnan(value):
        raise ConfigError(f"{name}: expected a number, got nan")
    return value


class BaseMiner:
    """``miner(embeddings [B, D], labels [B]) -> indices_tuple``; see the module docstring."""

    #: ``"triplets"`` (``(a, p, n)``) or ``"pairs"`` (``(a1, p, a2, n)``)
    output: str = "triplets"

    def __init__(self, distance: BaseDistance | str | dict | None = None) -> None:
        self.distance = build_distance(SquaredL2Distance() if distance is None else distance)

    def __call__(self, embeddings: Tensor, labels: Tensor) -> IndicesTuple:
        check_inputs(embeddings, labels)
        with torch.no_grad():
            matrix = self.distance.pairwise(embeddings.detach())
            return self.mine(matrix, labels.to(matrix.device))

    def mine(self, matrix: Tensor, labels: Tensor) -> IndicesTuple:
        """The tuples for ``matrix = self.distance.pairwise(embeddings)`` (not differentiated)."""
        raise NotImplementedError

    def mine_for_loss(
        self, embeddings: Tensor, labels: Tensor, matrix: Tensor, distance: BaseDistance
    ) -> IndicesTuple:
        """The tuples for a loss that already computed ``matrix = distance.pairwise(embeddings)``:
        that matrix is reused when this miner measures with the same distance, else the miner
        computes its own (not differentiated either way)."""
        with torch.no_grad():
            if self.distance == distance:
                return self.mine(matrix.detach(), labels)
            return self(embeddings, labels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(distance={self.distance!r})"


class TripletMiner(BaseMiner):
    """A triplet miner running one selection function ``fn(d, labels, margin) -> (a, p, n)``
    on the matrix turned into a distance (``-s`` for a similarity)."""

    select: Callable[..., IndicesTuple]

    def __init__(self, margin: float = 0.2, distance: BaseDistance | str | dict | None = None):
        super().__init__(distance)
        self.margin = _margin(margin)

    def mine(self, matrix: Tensor, labels: Tensor) -> IndicesTuple:
        return type(self).select(self.distance.as_distance(matrix.detach()), labels, self.margin)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(margin={self.margin}, distance={self.distance!r})"


class SemiHardMiner(TripletMiner):
    """FaceNet's semi-hard negative per ordered anchor-positive pair:
    :func:`~facemetric.losses.triplet_selection.semi_hard`."""

    select = staticmethod(semi_hard)


class BatchHardMiner(TripletMiner):
    """Hardest positive and hardest negative per anchor (Hermans et al. 2017):
    :func:`~facemetric.losses.triplet_selection.batch_hard` (``margin`` unused)."""

    select = staticmethod(batch_hard)


class AllTripletsMiner(TripletMiner):
    """Every triplet violating the margin: :func:`~facemetric.losses.triplet_selection.all_violating`.
    ``margin=None`` (or ``inf``) returns every valid triplet."""

    select = staticmethod(all_violating)

    def __init__(self, margin: float | None = 0.2, distance=None):
        super().__init__(math.inf if margin is None else margin, distance)


class RandomViolatingMiner(TripletMiner):
    """facenet's ``select_triplets``: one random violating negative per anchor-positive pair
    (anchor = the earlier index): :func:`~facemetric.losses.triplet_selection.random_violating`.

    The random choice comes from ``generator`` (a ``torch.Generator``; a new one seeded with
    ``seed`` if not given, or with a seed drawn from torch's global generator if ``seed`` is
    None too).
    """

    def __init__(
        self,
        margin: float = 0.2,
        distance: BaseDistance | str | dict | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(margin, distance)
        if generator is None:
            if seed is None:
                seed = int(torch.randint(0, 2**62, (1,)))
            generator = torch.Generator().manual_seed(int(seed))
        self.generator = generator

    @staticmethod
    def select(d: Tensor, labels: Tensor, margin: float, generator=None) -> IndicesTuple:
        return random_violating(d, labels, margin, generator=generator)

    def mine(self, matrix: Tensor, labels: Tensor) -> IndicesTuple:
        d = self.distance.as_distance(matrix.detach())
        return random_violating(d, labels, self.margin, generator=self.generator)


class ConsecutiveTripletsMiner(BaseMiner):
    """The batch IS a list of triplets: rows ``(3i, 3i+1, 3i+2)`` are ``(a, p, n)``, as in the
    mini-batches of facenet's two-phase training (:mod:`facemetric.train.two_phase`); a
    trailing incomplete triplet is ignored. The matrix and labels are not looked at."""

    def mine(self, matrix: Tensor, labels: Tensor) -> IndicesTuple:
        t = torch.arange(matrix.shape[0] // 3, device=matrix.device) * 3
        return t, t + 1, t + 2


class AllPairsMiner(BaseMiner):
    """Every ordered positive pair ``(i, j)`` (``i != j``, same identity) and every ordered
    negative pair (different identities), row-major (each unordered pair twice, as
    pytorch-metric-learning's ``get_all_pairs_indices``)."""

    output = "pairs"

    def mine(self, matrix: Tensor, labels: Tensor) -> IndicesTuple:
        pos, neg = label_masks(labels.to(matrix.device))
        a1, p = pos.nonzero(as_tuple=True)
        a2, n = neg.nonzero(as_tuple=True)
        return a1, p, a2, n


class PairMarginMiner(BaseMiner):
    """The pairs that give a non-zero contrastive term: positive pairs less alike than
    ``pos_margin`` (distance ``> pos_margin``; similarity ``< pos_margin``) and negative pairs
    more alike than ``neg_margin`` (distance ``< neg_margin``; similarity ``> neg_margin``),
    ordered and row-major like :class:`AllPairsMiner`."""

    output = "pairs"

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0, distance=None):
        super().__init__(distance)
        self.pos_margin = _margin(pos_margin, "pos_margin")
        self.neg_margin = _margin(neg_margin, "neg_margin")

    def mine(self, matrix: Tensor, labels: Tensor) -> IndicesTuple:
        pos, neg = label_masks(labels.to(matrix.device))
        m = matrix.detach()
        pos = pos & (self.distance.margin(m, torch.full_like(m, self.pos_margin)) > 0)
        neg = neg & (self.distance.margin(torch.full_like(m, self.neg_margin), m) > 0)
        a1, p = pos.nonzero(as_tuple=True)
        a2, n = neg.nonzero(as_tuple=True)
        return a1, p, a2, n


MINERS: Registry[BaseMiner] = Registry("miner")
MINERS.register("semi-hard", "semihard", "semi_hard")(SemiHardMiner)
MINERS.register("random-violating", "random_violating")(RandomViolatingMiner)
MINERS.register("batch-hard", "hard", "batch_hard")(BatchHardMiner)
MINERS.register("all", "all-triplets", "all_triplets")(AllTripletsMiner)
MINERS.register("all-pairs", "all_pairs")(AllPairsMiner)
MINERS.register("consecutive-triplets", "consecutive_triplets")(ConsecutiveTripletsMiner)
MINERS.register("pair-margin", "pair_margin")(PairMarginMiner)


def build_miner(spec: Any, where: str = "miner", **defaults: Any) -> BaseMiner:
    """A miner from an instance (returned as is), a name, or ``{name: ..., <options>}``.

    ``defaults`` (e.g. the loss's ``margin``, ``distance``, ``generator``) fill the options
    the spec does not set and the miner accepts; unknown options in the spec are an error.
    """
    if isinstance(spec, BaseMiner):
        return spec
    opts: dict[str, Any] = {}
    if isinstance(spec, dict):
        opts = dict(spec)
        spec = opts.pop("name", None)
    if not isinstance(spec, str):
        raise ConfigError(f"{where}: expected a miner name or {{name: ...}}, got {spec!r}")
    factory = MINERS.get(spec.lower())
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: not an option of miner {spec!r}; expected one of: "
            f"{', '.join(accepted)}"
        )
    for key, value in defaults.items():
        if key in accepted and key not in opts and value is not None:
            opts[key] = value
    try:
        return factory(**opts)
    except FacemetricError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def loss_distance(spec: Any, normalize: bool, default: type[BaseDistance]) -> BaseDistance:
    """A loss's distance: ``default(normalize_embeddings=normalize)`` for None, an object as
    is, a name built with ``normalize_embeddings=normalize`` (``cosine`` always normalises),
    a mapping ``{name: ..., <options>}`` with its own options."""
    if spec is None:
        return default(normalize_embeddings=bool(normalize))
    if isinstance(spec, str):
        built = build_distance(spec, "distance")
        if built.normalize_embeddings != bool(normalize) and not built.is_inverted:
            built = type(built)(normalize_embeddings=bool(normalize))
        return built
    return build_distance(spec, "distance")


def triplets_to_pairs(indices: IndicesTuple) -> IndicesTuple:
    """``(a, p, n) -> (a, p, a, n)``: a triplet's positive and negative pair (PML's
    ``convert_to_pairs``); a pair tuple is returned unchanged."""
    if len(indices) == 4:
        return indices
    a, p, n = indices
    return a, p, a, n


def check_indices(indices: Any, batch: int, kind: str) -> IndicesTuple:
    """``indices`` as a tuple of 1-D ``LongTensor`` s of matching lengths with values in
    ``[0, batch)``: 3 for ``kind="triplets"``, 3 or 4 for ``kind="pairs"`` (triplets are turned
    into pairs); else a one-line error naming ``indices_tuple``."""
    want = "(a, p, n)" if kind == "triplets" else "(a1, p, a2, n) or (a, p, n)"
    sizes = (3,) if kind == "triplets" else (3, 4)
    if not isinstance(indices, (tuple, list)) or len(indices) not in sizes:
        raise FacemetricError(f"indices_tuple: expected {want}, got {type(indices).__name__}")
    out = []
    for t in indices:
        t = torch.as_tensor(t)
        if t.ndim != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise FacemetricError(f"indices_tuple: expected 1-D integer index vectors {want}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= batch):
            raise FacemetricError(f"indices_tuple: indices must lie in [0, {batch})")
        out.append(t.long())
    lengths = [len(t) for t in out]
    groups = [lengths] if len(out) == 3 else [lengths[:2], lengths[2:]]
    if any(len(set(g)) != 1 for g in groups):
        raise FacemetricError(f"indices_tuple: index vectors of unequal lengths {lengths}")
    return tuple(out) if kind == "triplets" else triplets_to_pairs(tuple(out))
