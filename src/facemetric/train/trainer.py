"""The training loop.

Per step: ``emb = model(x)``; ``loss = loss_fn(emb, y)``; backward; optional gradient clipping;
``optimizer.step()``; ``loss_fn.after_step()`` (non-gradient state such as center-loss
centers); ``scheduler.step()``; EMA update. After every epoch a checkpoint holding model, loss
state, optimizer, scheduler, EMA and RNG states is written atomically; :meth:`Trainer.fit` with
``resume=True`` continues from the newest one, so 2 epochs == 1 epoch + resume + 1 epoch.
An interruption (Ctrl-C, SIGKILL) at any point leaves the last complete checkpoint and no
temporary file (a SIGKILLed writer's temporary is removed by the next write in the folder).
Batch order depends only on (seed, epoch) through the batch sampler's ``set_epoch``.

Precision (``precision``): ``fp32``; ``bf16`` and ``fp16`` run the backbone under
``torch.autocast``; its embeddings are cast to float32 and the loss (heads, margins, angles,
triplet distances) is computed outside autocast in float32. ``fp16`` needs CUDA (on CPU it is
refused with a one-line error: use ``bf16``) and uses a ``torch.amp.GradScaler`` (gradients
unscaled before clipping; a step with inf/NaN gradients is skipped by the scaler).
``channels_last`` stores the backbone and its input batches in NHWC; ``compile`` wraps the
forward in ``torch.compile`` (the checkpointed module stays the plain one).

Data parallel (a torchrun launch: :mod:`facemetric.distributed` has a process group): the
batch sampler is sharded by rank (:meth:`shard`; the recipe's batch size is the *global*
batch), the backbone is wrapped in ``DistributedDataParallel`` (``sync_batchnorm``: its
BatchNorms become ``SyncBatchNorm``, CUDA only), and the loss sees the *global* batch: the
embeddings are all-gathered with their gradients, the labels gathered, and every rank computes
the same loss on the same global batch (triplet mining, center updates and classifier heads all
see what one process would see; see :func:`facemetric.distributed.all_gather_with_grad` for
why DDP's gradient averaging then yields the 1-process gradient). The loss module's own
parameters (a classifier) get identical gradients on every rank and stay replicated; they are
broadcast from rank 0 at the start. A loss that gathers the batch itself
(``gathers_global_batch``) gets this rank's part instead, and one whose parameters are split by
rows over the ranks (``sharded``, Partial FC) is not broadcast; its optimizer state is gathered
into full rows in checkpoints and sliced again on resume. Rank 0 alone logs, evaluates and
writes checkpoints. A
checkpoint holds the plain model (no ``module.`` prefix) and nothing per rank, so a run resumes
with any number of processes and continues with the same global batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from facemetric import distributed
from facemetric.errors import ConfigError, FacemetricError
from facemetric.io import atomic_torch_save
from facemetric.losses.base import EmbeddingLoss
from facemetric.train.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
)
from facemetric.train.progress import TrainProgress
from facemetric.train.run_dir import RunDir
from facemetric.train.seed import rng_state, set_rng_state

Evaluator = Callable[[nn.Module], dict[str, Any]]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FacemetricError(f"train.device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FacemetricError(f"train.device: {name!r} requested but CUDA is not available")
    return device


#: ``train.precision`` -> the autocast dtype (None: no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` if ``device`` can train in it, else a one-line ConfigError."""
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision: expected one of 'fp32', 'bf16', 'fp16', got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision: fp16 needs a CUDA device (train.device is {device.type}); "
            "use bf16 on CPU"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: this GPU does not support bf16; use fp16")
    return precision


class _Meter:
    """Batch-size-weighted running means of the loss and the loss's stats."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, values: dict[str, float], n: int) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * n
        self.count += n

    def means(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


class Trainer:
    """Trains ``model`` with ``loss_fn`` on ``dataset`` batched by ``batch_sampler``.

    ``dataset`` either has ``get_batch(indices) -> (images, labels)`` (in-memory data, used
    directly) or is a map-style dataset read through a ``DataLoader``. ``evaluator(model)``,
    if given, is called every ``eval_every`` epochs (and after the last) and returns metrics.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: EmbeddingLoss,
        dataset: torch.utils.data.Dataset,
        batch_sampler: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        epochs: int,
        run_dir: RunDir | str | Path | None = None,
        ema: Any = None,
        grad_clip: float = 0.0,
        device: str | torch.device = "cpu",
        evaluator: Evaluator | None = None,
        eval_every: int = 0,
        keep_checkpoints: int = 2,
        num_workers: int = 0,
        progress: bool = True,
        log_every: int = 10,
        config: dict[str, Any] | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        sync_batchnorm: bool = False,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.device = distributed.device_for_rank(self.device)
        self.precision = check_precision(str(precision), self.device)
        self.channels_last = bool(channels_last)
        self.world_size = distributed.world_size()
        self.is_main = distributed.is_main_process()
        if sync_batchnorm and self.world_size > 1:
            if self.device.type != "cuda":
                raise ConfigError(
                    "train.sync_batchnorm: PyTorch's SyncBatchNorm runs on CUDA devices only "
                    f"(train.device is {self.device.type}); set it to false"
                )
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same Parameter objects
        self.model = model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loss_fn = loss_fn.to(self.device)
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.epochs = int(epochs)
        self.run_dir = RunDir(run_dir) if isinstance(run_dir, (str, Path)) else run_dir
        self.ema = ema
        self.grad_clip = float(grad_clip or 0.0)
        self.evaluator = evaluator
        self.eval_every = int(eval_every or 0)
        self.keep_checkpoints = int(keep_checkpoints)
        self.num_workers = int(num_workers)
        self.progress = progress and self.is_main
        self.log_every = max(1, int(log_every))
        self.config = config or {}
        #: a loss whose parameters are split by rows over the ranks (Partial FC): kept out of
        #: the broadcast, its optimizer state gathered into checkpoints and sliced on resume
        self.sharded_loss = bool(getattr(loss_fn, "sharded", False))
        #: a loss that all-gathers the batch itself: it gets this rank's part
        self.loss_gathers = bool(getattr(loss_fn, "gathers_global_batch", False))
        self.epoch = 0  # completed epochs
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        if self.world_size > 1:
            if not hasattr(batch_sampler, "shard"):
                raise ConfigError(
                    f"sampler: {type(batch_sampler).__name__} cannot be sharded over processes; "
                    "use 'uniform' or 'pk' with torchrun"
                )
            batch_sampler.shard(distributed.rank(), self.world_size)
            if not self.sharded_loss:
                self._broadcast_loss_state()
            self.net: nn.Module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        else:
            self.net = self.model
        if compile:
            self.net = torch.compile(self.net)  # type: ignore[assignment]
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self._last_batch_size = 0
        if len(batch_sampler) == 0:
            raise FacemetricError("sampler: the data cannot fill a single batch")

    def _broadcast_loss_state(self) -> None:
        """Rank 0's loss parameters and buffers (classifier, centers) on every rank."""
        with torch.no_grad():
            for t in list(self.loss_fn.parameters()) + list(self.loss_fn.buffers()):
                torch.distributed.broadcast(t.data, src=0)

    # ----------------------------------------------------------------------------- data
    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        if hasattr(self.dataset, "get_batch"):
            for indices in self.batch_sampler:
                yield self.dataset.get_batch(indices)
        else:
            loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_sampler=self.batch_sampler,
                num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=False,
            )
            yield from loader

    def _clip_params(self) -> Iterable[Tensor]:
        for group in self.optimizer.param_groups:
            yield from group["params"]

    # ----------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "facemetric-checkpoint/1",
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "loss_extra": self.loss_fn.extra_state_for_checkpoint(),
            "optimizer": self._optimizer_state(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "world_size": self.world_size,  # informational: resume works with any number
            "rng": rng_state(),
            "history": self.history,
            "config": self.config,
        }

    def _sharded_params(self) -> list[tuple[int, Tensor]]:
        """``(index in the optimizer's state_dict, parameter)`` of a sharded loss's parameters."""
        if not self.sharded_loss:
            return []
        index = {id(p): i for i, p in enumerate(p for g in self.optimizer.param_groups for p in g["params"])}
        return [(index[id(p)], p) for p in self.loss_fn.parameters() if id(p) in index]

    def _optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state_dict; a sharded loss's per-row state (momentum, Adam moments)
        all-gathered into full rows in rank order (collective: every rank calls it)."""
        state = self.optimizer.state_dict()
        shards = self._sharded_params()
        if not shards:
            return state
        state = {**state, "state": dict(state["state"])}
        for i, p in shards:
            if i not in state["state"]:
                continue
            entry = dict(state["state"][i])  # not the live dict: the optimizer keeps its shard
            for key, value in entry.items():
                if isinstance(value, Tensor) and value.ndim >= 1 and value.shape == p.shape:
                    entry[key] = distributed.all_gather_no_grad(value)
            state["state"][i] = entry
        return state

    def _slice_sharded_optimizer_state(self) -> None:
        """After loading full-row optimizer state: keep this rank's rows of each shard."""
        for _, p in self._sharded_params():
            rows = int(p.shape[0])
            sizes = distributed.all_gather_no_grad(torch.tensor([rows], device=p.device)).tolist()
            start = int(sum(sizes[: distributed.rank()]))
            state = self.optimizer.state.get(p, {})
            for key, value in list(state.items()):
                if (isinstance(value, Tensor) and value.ndim >= 1 and value.shape[1:] == p.shape[1:]
                        and value.shape[0] != rows):
                    state[key] = value[start : start + rows].clone()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != "facemetric-checkpoint/1":
            raise FacemetricError("checkpoint: not a facemetric training checkpoint")
        self.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        self.loss_fn.load_extra_state_from_checkpoint(state.get("loss_extra") or {})
        self.optimizer.load_state_dict(state["optimizer"])
        self._slice_sharded_optimizer_state()
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state.get("history", []))

    def save_checkpoint(self) -> Path | None:
        """Write this epoch's checkpoint (rank 0 writes; every rank takes part in gathering a
        sharded loss's state; None on the other ranks or without a run dir)."""
        if self.run_dir is None:
            return None
        state = self.state_dict()
        if not self.is_main:
            return None
        path = checkpoint_path(self.run_dir.checkpoints, self.epoch)
        atomic_torch_save(state, path)
        prune_checkpoints(self.run_dir.checkpoints, self.keep_checkpoints)
        return path

    def resume(self, checkpoint: str | Path | None = None) -> bool:
        """Restore the given checkpoint, or the newest in the run directory. False if none.

        The run's ``metrics.jsonl`` is cut back to the restored epoch; with no checkpoint at
        all (a run killed during its first epoch) it is emptied, since training restarts from
        epoch 0 and would otherwise log its first epochs twice.
        """
        if checkpoint is None:
            if self.run_dir is None:
                raise FacemetricError("resume: needs a run directory or a checkpoint path")
            checkpoint = distributed.broadcast_object(latest_checkpoint(self.run_dir.checkpoints))
            if checkpoint is None:
                if self.is_main:
                    self.run_dir.truncate_metrics_after(0)
                return False
        self.load_state_dict(load_checkpoint(checkpoint))
        if self.run_dir is not None and self.is_main:
            self.run_dir.truncate_metrics_after(self.epoch)
        return True

    # ------------------------------------------------------------------------- training
    def forward(self, images: Tensor) -> Tensor:
        """The backbone's float32 embeddings of a batch, under the run's precision."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            embeddings = self.net(images)
        return embeddings.float()

    def train_step(self, images: Tensor, labels: Tensor) -> dict[str, float]:
        labels = labels.to(self.device, non_blocking=True)
        embeddings = self.forward(images)
        finite = bool(torch.isfinite(embeddings).all())
        self._last_batch_size = int(labels.shape[0])
        if self.world_size > 1 and not self.loss_gathers:
            # the global batch, in rank order (gradients flow back); checked on every rank alike
            embeddings = distributed.all_gather_with_grad(embeddings)
            labels = distributed.all_gather_no_grad(labels)
            self._last_batch_size = int(labels.shape[0])
            finite = bool(torch.isfinite(embeddings).all())
        elif self.world_size > 1:  # the loss gathers: agree on the global size and finiteness
            count = distributed.all_reduce_sum(torch.tensor([labels.shape[0], int(not finite)],
                                                            device=self.device))
            self._last_batch_size, finite = int(count[0]), int(count[1]) == 0
        if not finite:
            raise FacemetricError(
                f"training diverged: the model produced NaN/inf embeddings at step {self.global_step} "
                "(lower optimizer.lr or set train.grad_clip)"
            )
        loss = self.loss_fn(embeddings, labels)
        if not torch.isfinite(loss):
            raise FacemetricError(
                f"training diverged: loss is {float(loss)} at step {self.global_step} "
                "(lower optimizer.lr or set train.grad_clip)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(list(self._clip_params()), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(list(self._clip_params()), self.grad_clip)
            self.optimizer.step()
        self.loss_fn.after_step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.global_step += 1
        return {"loss": float(loss.detach()), **self.loss_fn.stats}

    def evaluate(self) -> dict[str, Any]:
        if self.evaluator is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        try:
            if self.ema is not None:
                with self.ema.swapped(self.model):
                    return self.evaluator(self.model)
            return self.evaluator(self.model)
        finally:
            self.model.train(was_training)

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.run_dir is not None and self.is_main:
            self.run_dir.log_metrics(record)

    def fit(
        self, resume: bool | str | Path = False, until_epoch: int | None = None
    ) -> list[dict[str, Any]]:
        """Train until ``epochs`` are complete (or, if given, ``until_epoch``: stop early, e.g.
        for a time budget, and continue later with ``resume``); returns the metric records."""
        if resume:
            self.resume(None if resume is True else resume)
        steps_per_epoch = len(self.batch_sampler)
        with TrainProgress(self.epochs, steps_per_epoch, enabled=self.progress) as bar:
            bar.start_at(self.epoch)
            stop = self.epochs if until_epoch is None else min(self.epochs, int(until_epoch))
            while self.epoch < stop:
                self.net.train()
                self.loss_fn.train()
                for source in (self.batch_sampler, self.dataset):  # order/augmentation per epoch
                    if hasattr(source, "set_epoch"):
                        source.set_epoch(self.epoch)
                meter = _Meter()
                images_seen = 0
                t0 = time.perf_counter()
                for step, (images, labels) in enumerate(self._batches()):
                    values = self.train_step(images, labels)
                    n = self._last_batch_size or int(labels.shape[0])  # the global batch
                    meter.add(values, n)
                    images_seen += n
                    if (step + 1) % self.log_every == 0 or step + 1 == steps_per_epoch:
                        rate = images_seen / max(time.perf_counter() - t0, 1e-9)
                        bar.update(self.epoch, step + 1, meter.means(), rate)
                elapsed = time.perf_counter() - t0
                self.epoch += 1
                record: dict[str, Any] = {
                    "epoch": self.epoch,
                    "split": "train",
                    "step": self.global_step,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "images_per_s": images_seen / max(elapsed, 1e-9),
                    "seconds": elapsed,
                    **meter.means(),
                }
                self._log(record)
                if self.evaluator is not None and self.eval_every > 0 and self.is_main and (
                    self.epoch % self.eval_every == 0 or self.epoch == self.epochs
                ):
                    self._log({"epoch": self.epoch, "split": "val", **self.evaluate()})
                bar.epoch_done(self.history[-2:] if self.history[-1]["split"] == "val" else self.history[-1:])
                if not all(math.isfinite(v) for v in meter.means().values()):
                    raise FacemetricError(f"training diverged in epoch {self.epoch}")
                self.save_checkpoint()
        distributed.barrier()  # ranks leave together (rank 0 may have been evaluating)
        return self.history
