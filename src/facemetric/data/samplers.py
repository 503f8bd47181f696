"""Batch samplers for ``DataLoader(dataset, batch_sampler=...)``; each yields index lists.

The order depends only on ``(seed, epoch)``: call ``set_epoch(epoch)`` before iterating (as
with ``DistributedSampler``), so a run resumed at epoch ``e`` sees exactly the batches an
uninterrupted run would have seen. Global RNG state is never used.

:data:`SAMPLERS` (``sampler.name`` in a recipe) builds a sampler by name from the training
dataset and the run's seed: ``uniform`` (``batch_size``, ``drop_last``) and ``pk`` /
``people-x-images`` (``people_per_batch``, ``images_per_person``, ``batches_per_epoch``,
``allow_repeats``).

Data-parallel training (torchrun): :meth:`shard` ``(rank, world_size)`` makes a sampler yield
only this rank's part of each *global* batch. ``batch_size`` / ``people_per_batch`` stay the
global numbers, so a recipe trains on the same batches whatever the number of processes: the
global batches are those of one process (same ``(seed, epoch)``), and the parts, gathered in
rank order, are the global batch in its original order (:func:`shard_sizes`). ``uniform``
splits each batch into contiguous parts whose sizes differ by at most one; ``pk`` splits the
P identities of a batch, each rank getting whole identities (all K images of each).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from facemetric.errors import ConfigError, DataError
from facemetric.registry import Registry


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    """A ``torch.Generator`` whose seed is a hash (numpy ``SeedSequence``) of (seed, epoch)."""
    entropy = [int(seed) % 2**64, int(epoch) % 2**64, int(salt)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed((int(state[0]) << 31) ^ int(state[1]))  # < 2**63
    return g


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"sampler.{field}: expected a positive integer, got {value!r}")
    return int(value)


def _check_epoch(epoch: Any) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"set_epoch: expected a non-negative integer, got {epoch!r}")
    return int(epoch)


def shard_sizes(total: int, world_size: int) -> list[int]:
    """Sizes of the ``world_size`` contiguous parts of ``total`` items, in rank order:
    ``total // world_size``, plus one for the first ``total % world_size`` ranks."""
    base, extra = divmod(int(total), int(world_size))
    return [base + (1 if r < extra else 0) for r in range(int(world_size))]


def _shard_slice(total: int, rank: int, world_size: int) -> slice:
    sizes = shard_sizes(total, world_size)
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def _check_shard(rank: Any, world_size: Any) -> tuple[int, int]:
    for name, v, lo in (("world_size", world_size, 1), ("rank", rank, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"shard: expected {name} an integer >= {lo}, got {v!r}")
    if rank >= world_size:
        raise ValueError(f"shard: rank {rank} is not below world_size {world_size}")
    return int(rank), int(world_size)


class UniformBatchSampler:
    """All ``num_samples`` indices, shuffled per epoch by (seed, epoch), in batches.

    ``len = ceil(num_samples / batch_size)`` (``floor`` with ``drop_last``). After
    :meth:`shard` each batch is this rank's contiguous part of the global batch; a last global
    batch with fewer samples than processes is dropped then (every rank needs a sample).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0,
                 drop_last: bool = False) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
            raise DataError(f"uniform sampler: expected a number of samples, got {num_samples!r}")
        self.num_samples = int(num_samples)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        if self.num_samples < 1:
            raise DataError("uniform sampler: the dataset is empty")
        if self.drop_last and self.num_samples < self.batch_size:
            raise DataError(
                f"uniform sampler: drop_last with batch_size={self.batch_size} leaves no batch "
                f"for {self.num_samples} samples"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = _check_epoch(epoch)

    def shard(self, rank: int, world_size: int) -> UniformBatchSampler:
        """Yield only rank ``rank``'s part of each global batch (of ``world_size`` parts)."""
        rank, world_size = _check_shard(rank, world_size)
        if world_size > self.batch_size:
            raise ConfigError(
                f"sampler.batch_size: the global batch of {self.batch_size} cannot be split over "
                f"{world_size} processes; expected at least one sample per process"
            )
        self.rank, self.world_size = rank, world_size
        return self

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (1 if rest >= self.world_size else 0)

    def __iter__(self) -> Iterator[list[int]]:
        g = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(self.num_samples, generator=g).tolist()
        for b in range(len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield batch[_shard_slice(len(batch), self.rank, self.world_size)]


def describe_identity_counts(labels: Sequence[Any] | np.ndarray | torch.Tensor) -> dict[str, Any]:
    """Summary of images per identity: ``num_images``, ``num_identities``,
    ``min_per_identity``, ``median_per_identity``, ``max_per_identity`` (None when empty) and
    ``identities_with_2_or_more``."""
    arr = _labels_array(labels)
    if arr.size == 0:
        return {"num_images": 0, "num_identities": 0, "min_per_identity": None,
                "median_per_identity": None, "max_per_identity": None,
                "identities_with_2_or_more": 0}
    _, counts = np.unique(arr, return_counts=True)
    return {
        "num_images": int(arr.size),
        "num_identities": int(counts.size),
        "min_per_identity": int(counts.min()),
        "median_per_identity": float(np.median(counts)),
        "max_per_identity": int(counts.max()),
        "identities_with_2_or_more": int((counts >= 2).sum()),
    }


def _format_counts(info: dict[str, Any]) -> str:
    if info["num_identities"] == 0:
        return "no images"
    return (
        f"{info['num_images']} images of {info['num_identities']} identities, "
        f"{info['min_per_identity']}-{info['max_per_identity']} images each "
        f"(median {info['median_per_identity']:g}), "
        f"{info['identities_with_2_or_more']} with at least 2"
    )


def _labels_array(labels: Any) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"PK sampler: expected a 1-D sequence of labels, got shape {arr.shape}")
    return arr


class PKBatchSampler:
    """P x K batches (facenet's ``sample_people``): P distinct identities, K images each.

    Eligible identities have at least 2 images and, unless ``allow_repeats``, at least K.
    Per epoch the eligible identities are shuffled and consumed P at a time, reshuffled when
    exhausted (a batch never repeats an identity). An identity with >= K images gives K
    distinct images; with fewer (only if ``allow_repeats``) it gives all of its images and
    the rest drawn with replacement. A batch is ``[id1 x K, id2 x K, ...]``, so
    ``batch_size = P * K``. Default ``batches_per_epoch = max(1, eligible // P)``. After
    :meth:`shard` a rank yields the whole identities of its part of the P (``P // N`` or one
    more), all K images of each.
    """

    def __init__(
        self,
        labels: Sequence[Any] | np.ndarray | torch.Tensor,
        people_per_batch: int,
        images_per_person: int,
        seed: int = 0,
        batches_per_epoch: int | None = None,
        allow_repeats: bool = False,
    ) -> None:
        arr = _labels_array(labels)
        p, k = people_per_batch, images_per_person
        for field, v in (("people_per_batch", p), ("images_per_person", k)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2:
                raise DataError(
                    f"PK sampler: {field} must be an integer >= 2 "
                    f"(a triplet needs two identities with two images each), got {v!r}"
                )
        if arr.size == 0:
            raise DataError("PK sampler: the labels are empty")
        self.people_per_batch = int(p)
        self.images_per_person = int(k)
        self.allow_repeats = bool(allow_repeats)
        self.seed = int(seed)
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self.min_images = 2 if self.allow_repeats else max(2, self.images_per_person)

        _, inverse = np.unique(arr, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse)
        groups = np.split(order, np.cumsum(counts)[:-1])
        self.identity_indices: list[list[int]] = [
            g.tolist() for g in groups if len(g) >= self.min_images
        ]
        n_eligible = len(self.identity_indices)
        if n_eligible < self.people_per_batch:
            how = "with repeats" if self.allow_repeats else "without repeats"
            raise DataError(
                f"PK sampler: needs {self.people_per_batch} identities with at least "
                f"{self.min_images} images (K={self.images_per_person} {how}), the data has "
                f"{n_eligible} ({_format_counts(describe_identity_counts(arr))})"
            )
        if batches_per_epoch is None:
            self.batches_per_epoch = max(1, n_eligible // self.people_per_batch)
        else:
            self.batches_per_epoch = _positive_int("batches_per_epoch", batches_per_epoch)

    @property
    def batch_size(self) -> int:
        return self.people_per_batch * self.images_per_person

    @property
    def num_identities(self) -> int:
        """Number of eligible identities."""
        return len(self.identity_indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = _check_epoch(epoch)

    def shard(self, rank: int, world_size: int) -> PKBatchSampler:
        """Yield only rank ``rank``'s identities of each global batch (of ``world_size`` parts)."""
        rank, world_size = _check_shard(rank, world_size)
        if world_size > self.people_per_batch:
            raise ConfigError(
                f"sampler.people_per_batch: {self.people_per_batch} identities per batch cannot be "
                f"split over {world_size} processes; expected at least one identity per process"
            )
        self.rank, self.world_size = rank, world_size
        return self

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _images(self, ident: int, g: torch.Generator) -> list[int]:
        idx = self.identity_indices[ident]
        k = self.images_per_person
        perm = torch.randperm(len(idx), generator=g).tolist()
        if len(idx) >= k:
            return [idx[i] for i in perm[:k]]
        extra = torch.randint(len(idx), (k - len(idx),), generator=g).tolist()
        return [idx[i] for i in perm] + [idx[i] for i in extra]

    def __iter__(self) -> Iterator[list[int]]:
        g = epoch_generator(self.seed, self.epoch, salt=1)
        n = self.num_identities
        queue: list[int] = []
        for _ in range(self.batches_per_epoch):
            chosen: list[int] = []
            i = 0
            while len(chosen) < self.people_per_batch:
                if i >= len(queue):
                    queue.extend(torch.randperm(n, generator=g).tolist())
                if queue[i] in chosen:
                    i += 1
                else:
                    chosen.append(queue.pop(i))
            mine = range(self.people_per_batch)[_shard_slice(self.people_per_batch, self.rank, self.world_size)]
            batch: list[int] = []
            for i, ident in enumerate(chosen):
                images = self._images(ident, g)  # drawn on every rank: the generator stays in step
                if i in mine:
                    batch.extend(images)
            yield batch


SAMPLERS: Registry[Any] = Registry("sampler")


@SAMPLERS.register("uniform")
def uniform_sampler(dataset: Any, seed: int, batch_size: int = 128, drop_last: bool = False) -> UniformBatchSampler:
    """Every index once per epoch, shuffled, in batches of ``batch_size``."""
    return UniformBatchSampler(len(dataset), batch_size=batch_size, seed=seed, drop_last=drop_last)


@SAMPLERS.register("pk", "people-x-images")
def pk_sampler(
    dataset: Any,
    seed: int,
    people_per_batch: int = 10,
    images_per_person: int = 10,
    batches_per_epoch: int | None = None,
    allow_repeats: bool = False,
) -> PKBatchSampler:
    """``people_per_batch`` identities x ``images_per_person`` images per batch (facenet)."""
    labels = dataset.labels.tolist() if hasattr(dataset.labels, "tolist") else list(dataset.labels)
    return PKBatchSampler(
        labels,
        people_per_batch=people_per_batch,
        images_per_person=images_per_person,
        seed=seed,
        batches_per_epoch=batches_per_epoch,
        allow_repeats=allow_repeats,
    )
