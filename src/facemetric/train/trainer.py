"""The training loop.

Per step: ``emb = model(x)``; ``loss = loss_fn(emb, y)``; backward; optional gradient clipping;
``optimizer.step()``; ``loss_fn.after_step()`` (non-gradient state such as center-loss
centers); ``scheduler.step()``; EMA update. After every epoch a checkpoint holding model, loss
state, optimizer, scheduler, EMA and RNG states is written atomically; :meth:`Trainer.fit` with
``resume=True`` continues from the newest one, so 2 epochs == 1 epoch + resume + 1 epoch.
An interruption (Ctrl-C, SIGKILL) at any point leaves the last complete checkpoint and no
temporary file (a SIGKILLed writer's temporary is removed by the next write in the folder).
Batch order depends only on (seed, epoch) through the batch sampler's ``set_epoch``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from facemetric.errors import FacemetricError
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
    ) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device)
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
        self.progress = progress
        self.log_every = max(1, int(log_every))
        self.config = config or {}
        self.epoch = 0  # completed epochs
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        if len(batch_sampler) == 0:
            raise FacemetricError("sampler: the data cannot fill a single batch")

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
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng_state(),
            "history": self.history,
            "config": self.config,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != "facemetric-checkpoint/1":
            raise FacemetricError("checkpoint: not a facemetric training checkpoint")
        self.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        self.loss_fn.load_extra_state_from_checkpoint(state.get("loss_extra") or {})
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state.get("history", []))

    def save_checkpoint(self) -> Path | None:
        if self.run_dir is None:
            return None
        path = checkpoint_path(self.run_dir.checkpoints, self.epoch)
        atomic_torch_save(self.state_dict(), path)
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
            checkpoint = latest_checkpoint(self.run_dir.checkpoints)
            if checkpoint is None:
                self.run_dir.truncate_metrics_after(0)
                return False
        self.load_state_dict(load_checkpoint(checkpoint))
        if self.run_dir is not None:
            self.run_dir.truncate_metrics_after(self.epoch)
        return True

    # ------------------------------------------------------------------------- training
    def train_step(self, images: Tensor, labels: Tensor) -> dict[str, float]:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        embeddings = self.model(images)
        if not torch.isfinite(embeddings).all():
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
        if self.run_dir is not None:
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
                self.model.train()
                self.loss_fn.train()
                for source in (self.batch_sampler, self.dataset):  # order/augmentation per epoch
                    if hasattr(source, "set_epoch"):
                        source.set_epoch(self.epoch)
                meter = _Meter()
                images_seen = 0
                t0 = time.perf_counter()
                for step, (images, labels) in enumerate(self._batches()):
                    values = self.train_step(images, labels)
                    n = int(labels.shape[0])
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
                if self.evaluator is not None and self.eval_every > 0 and (
                    self.epoch % self.eval_every == 0 or self.epoch == self.epochs
                ):
                    self._log({"epoch": self.epoch, "split": "val", **self.evaluate()})
                bar.epoch_done(self.history[-2:] if self.history[-1]["split"] == "val" else self.history[-1:])
                if not all(math.isfinite(v) for v in meter.means().values()):
                    raise FacemetricError(f"training diverged in epoch {self.epoch}")
                self.save_checkpoint()
        return self.history
