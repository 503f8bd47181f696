"""facenet's two-phase triplet selection (davidsandberg/facenet ``train_tripletloss.py``).

Two ways to train a triplet (or contrastive) loss:

* **online (in-batch) mining** -- the default with any batch sampler (``sampler: pk``): every
  training batch is P people x K images and the loss's miner selects triplets inside that
  batch, from its distance matrix, at every step;
* **two-phase selection** -- this module (``sampler: {name: two-phase, ...}``). Each round:

  1. sample ``people_per_batch`` people x ``images_per_person`` images (a large sample:
     facenet uses 45 x 40 = 1,800 images), deterministically per ``(seed, epoch)``
     (:class:`~facemetric.data.samplers.PKBatchSampler`);
  2. embed the whole sample with the current model (``model.eval()``, no gradient, in chunks
     of ``embed_batch_size``): the model's forward as the trainer calls it, not the
     inference embedder (no flip, no normalisation -- the loss normalises). Deviation:
     facenet embeds with batch-norm in training mode (batch statistics, no update of the
     moving averages); eval mode here uses the running statistics and, like facenet, leaves
     them untouched;
  3. select triplets on the sample with the loss's own miner (``strategy:
     random-violating`` is facenet's ``select_triplets``; ``semi-hard`` etc. work as well),
     so a negative can come from any of the sampled people, not only from one mini-batch;
  4. shuffle the triplets and train on them in mini-batches of ``batch_size`` images
     (``batch_size / 3`` triplets laid out ``a, p, n, a, p, n, ...``), which the loss reads
     with a :class:`~facemetric.losses.miners.ConsecutiveTripletsMiner`.

  An epoch is ``batches_per_epoch`` mini-batches (facenet's ``epoch_size``); rounds follow one
  another until the epoch is full. Deviation: facenet finishes the round in progress when
  the epoch is full; here the epoch stops at exactly ``batches_per_epoch`` mini-batches (the
  trainer and the schedule need a fixed epoch length).

Resume: a round depends only on ``(seed, epoch)``, the model and the loss's generator
(checkpointed), so the trainer's per-epoch checkpoints resume a two-phase run exactly like an
online one; nothing else is saved. :attr:`TwoPhaseSampler.last_round` describes the last
selection (``people``, ``images``, ``triplets``, ``indices``, ``selected``) for logging and
tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from facemetric.data.samplers import SAMPLERS, PKBatchSampler, epoch_generator
from facemetric.errors import ConfigError, FacemetricError
from facemetric.inference.embedding import embed_batches
from facemetric.losses.miners import BaseMiner, ConsecutiveTripletsMiner

#: rounds in a row without a single selected triplet before the epoch gives up
MAX_EMPTY_ROUNDS = 20


class TwoPhaseSampler:
    """A batch sampler that selects triplets on a large embedded sample (module docstring).

    Call :meth:`bind` with the model, the loss and the training dataset before iterating
    (``build_experiment`` does); ``len`` is ``batches_per_epoch``.
    """

    def __init__(
        self,
        labels: Any,
        people_per_batch: int = 45,
        images_per_person: int = 40,
        batch_size: int = 90,
        batches_per_epoch: int = 100,
        seed: int = 0,
        embed_batch_size: int = 256,
        allow_repeats: bool = False,
    ) -> None:
        for field, value, lo in (
            ("batch_size", batch_size, 3),
            ("batches_per_epoch", batches_per_epoch, 1),
            ("embed_batch_size", embed_batch_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"sampler.{field}: expected an integer >= {lo}, got {value!r}")
        if batch_size % 3:
            raise ConfigError(f"sampler.batch_size: expected a multiple of 3 (triplets), got {batch_size}")
        self.people = PKBatchSampler(  # one sample per round, drawn lazily: as many as needed
            labels, people_per_batch, images_per_person, seed=seed,
            batches_per_epoch=1 << 30, allow_repeats=allow_repeats,
        )
        self.batch_size = int(batch_size)
        self.batches_per_epoch = int(batches_per_epoch)
        self.embed_batch_size = int(embed_batch_size)
        self.seed = int(seed)
        self.epoch = 0
        self.model: nn.Module | None = None
        self.selector: BaseMiner | None = None
        self.dataset: Any = None
        self.device = torch.device("cpu")
        self.last_round: dict[str, Any] = {}
        self.rounds = 0  # rounds of the current epoch so far

    @property
    def people_per_batch(self) -> int:
        return self.people.people_per_batch

    @property
    def images_per_person(self) -> int:
        return self.people.images_per_person

    def bind(self, model: nn.Module, loss: nn.Module, dataset: Any, device: Any = "cpu") -> None:
        """Use ``model`` to embed samples of ``dataset`` and ``loss.miner`` to select; the loss
        then gets a :class:`ConsecutiveTripletsMiner` (its mini-batches are triplets)."""
        miner = getattr(loss, "miner", None)
        if isinstance(miner, ConsecutiveTripletsMiner) and self.selector is not None:
            miner = self.selector  # bound before
        if not isinstance(miner, BaseMiner) or miner.output != "triplets":
            raise ConfigError(
                "sampler.name: two-phase needs a loss with a triplet miner (loss.name: triplet, "
                "or contrastive with a triplet miner)"
            )
        self.selector = miner
        loss.miner = ConsecutiveTripletsMiner(distance=getattr(loss, "distance", None))
        self.model = model
        self.dataset = dataset
        self.device = torch.device(device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.people.set_epoch(self.epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    # ------------------------------------------------------------------------------ rounds
    def _images(self, indices: list[int]) -> Tensor:
        if hasattr(self.dataset, "get_batch"):
            return self.dataset.get_batch(indices)[0]
        return torch.stack([self.dataset[i][0] for i in indices])

    @torch.no_grad()
    def embed(self, indices: list[int]) -> Tensor:
        """The model's raw embeddings of ``indices`` (eval mode, chunks, CPU float32 result),
        through the one embedding function
        (:func:`facemetric.inference.embedding.embed_batches`, no flip, not normalised)."""
        assert self.model is not None
        chunks = (
            self._images(indices[start : start + self.embed_batch_size])
            for start in range(0, len(indices), self.embed_batch_size)
        )
        return embed_batches(self.model, chunks, normalize=False, device=self.device).embeddings

    def select(self, indices: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        """Embed the sample ``indices`` and select triplets on it (positions in ``indices``)."""
        assert self.selector is not None
        labels = torch.as_tensor(self.dataset.labels)[torch.as_tensor(indices)].long()
        embeddings = self.embed(indices)
        if not torch.isfinite(embeddings).all():
            raise FacemetricError(
                "training diverged: the model produced NaN/inf embeddings for the triplet "
                "selection sample (lower optimizer.lr or set train.grad_clip)"
            )
        return self.selector(embeddings, labels)

    def __iter__(self) -> Iterator[list[int]]:
        if self.model is None:
            raise FacemetricError("two-phase sampler: bind(model, loss, dataset) before training")
        g = epoch_generator(self.seed, self.epoch, salt=2)
        samples = iter(self.people)
        per_batch = self.batch_size // 3
        yielded = empty = 0
        self.rounds = 0
        while yielded < self.batches_per_epoch:
            indices = next(samples)
            a, p, n = self.select(indices)
            self.rounds += 1
            self.last_round = {
                "people": len(set(torch.as_tensor(self.dataset.labels)[indices].tolist())),
                "images": len(indices),
                "triplets": int(a.numel()),
                "indices": indices,
                "selected": (a, p, n),
            }
            if a.numel() == 0:
                empty += 1
                if empty >= MAX_EMPTY_ROUNDS:
                    raise FacemetricError(
                        f"two-phase sampler: no triplet selected in {empty} samples in a row "
                        "(the margin is met everywhere: training has converged, or raise loss.margin)"
                    )
                continue
            empty = 0
            order = torch.randperm(a.numel(), generator=g)
            idx = torch.as_tensor(indices)
            flat = torch.stack([idx[a[order]], idx[p[order]], idx[n[order]]], dim=1).reshape(-1)
            for start in range(0, order.numel(), per_batch):
                yield flat[3 * start : 3 * (start + per_batch)].tolist()
                yielded += 1
                if yielded == self.batches_per_epoch:
                    return


@SAMPLERS.register("two-phase", "two_phase")
def two_phase_sampler(
    dataset: Any,
    seed: int,
    people_per_batch: int = 45,
    images_per_person: int = 40,
    batch_size: int = 90,
    batches_per_epoch: int = 100,
    embed_batch_size: int = 256,
    allow_repeats: bool = False,
) -> TwoPhaseSampler:
    """facenet's two-phase selection: embed P x K, select, train on the triplets (module doc)."""
    labels = dataset.labels.tolist() if hasattr(dataset.labels, "tolist") else list(dataset.labels)
    return TwoPhaseSampler(
        labels, people_per_batch=people_per_batch, images_per_person=images_per_person,
        batch_size=batch_size, batches_per_epoch=batches_per_epoch, seed=seed,
        embed_batch_size=embed_batch_size, allow_repeats=allow_repeats,
    )
