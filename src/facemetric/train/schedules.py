"""Learning-rate schedules, stepped once per optimizer step.

``build_scheduler(name, optimizer, steps_per_epoch, epochs, warmup_epochs, **options)``
returns a :class:`StepLRSchedule` (a ``torch.optim.lr_scheduler.LRScheduler``). Call its
``step()`` after every ``optimizer.step()``. After ``k`` calls the lr of every param group is
``lr(k) = warmup(k) * schedule(k, base_lr)`` where ``base_lr`` is the group's initial lr, the
fractional epoch is ``k / steps_per_epoch`` and

* ``warmup(k) = (k + 1) / W`` for ``k < W``, else 1, with
  ``W = max(1, round(warmup_epochs * steps_per_epoch))`` steps when ``warmup_epochs > 0``
  (the first step's lr is ``base_lr / W``, never 0);
* ``constant``: ``base_lr``;
* ``step`` (``milestones``, ``gamma=0.1``): ``base_lr * gamma ** #{m in milestones :
  k >= m * steps_per_epoch}`` (epochs may be fractional);
* ``cosine`` (``min_lr=0``): ``min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2`` with
  ``t = clamp(k - W, 0, T)``, ``T = epochs * steps_per_epoch - W`` (annealing over the
  epochs after warm-up, reaching ``min_lr`` at the end);
* ``file`` (``path``): davidsandberg/facenet's learning-rate schedule file, see
  :func:`read_schedule_file`. Its values are ABSOLUTE learning rates: the optimizer's
  configured lr is ignored. Epochs in the file are numbered from 1 as in facenet's
  ``train_softmax.py`` (``for epoch in range(1, max_nrof_epochs + 1)``): the lr of the
  trainer's 0-based epoch ``e = k // steps_per_epoch`` is the file's value for epoch ``e + 1``.

``state_dict()`` holds plain numbers only (step count and base lrs), so a scheduler rebuilt
with the same arguments and given ``load_state_dict`` continues exactly where it stopped.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from facemetric.errors import ConfigError
from facemetric.registry import Registry

#: ``lr_at(step, base_lr) -> lr`` before warm-up is applied.
LrFunction = Callable[[int, float], float]

#: factories ``(steps_per_epoch, epochs, warmup_steps, **options) -> LrFunction``.
SCHEDULES: Registry[LrFunction] = Registry("schedule")


# ----------------------------------------------------------------------------- schedule file
def _parse_line(raw: str, where: str) -> tuple[int, float] | None:
    text = raw.split("#", 1)[0].strip()
    if not text:
        return None
    bad = ConfigError(f"{where}: expected 'epoch: learning_rate', got {raw.strip()!r}")
    parts = text.split(":")
    if len(parts) != 2:
        raise bad
    epoch_s, lr_s = parts[0].strip(), parts[1].strip()
    try:
        epoch = int(epoch_s)
    except ValueError:
        raise bad from None
    if lr_s == "-":  # facenet: '-' means stop training (lr = -1)
        lr = -1.0
    else:
        try:
            lr = float(lr_s)
        except ValueError:
            raise bad from None
    if epoch < 0:
        raise ConfigError(f"{where}: expected a non-negative epoch, got {epoch}")
    if not math.isfinite(lr):
        raise ConfigError(f"{where}: expected a finite learning rate, got {lr_s!r}")
    return epoch, lr


def read_schedule_file(path: str | os.PathLike[str]) -> list[tuple[int, float]]:
    """Parse a facenet lr schedule file into ``[(epoch, lr), ...]`` in file order.

    Lines are ``epoch: learning_rate``; ``#`` starts a comment; blank lines are ignored; an
    lr of ``-`` or any negative number means "stop training". Epochs must strictly increase.
    Errors are ConfigErrors naming ``file:line``; a missing or empty file is a ConfigError.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"schedule.path: learning-rate schedule file not found: {str(p)!r}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"schedule.path: cannot read {str(p)!r}: {exc}") from None
    entries: list[tuple[int, float]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        where = f"{p}:{lineno}"
        entry = _parse_line(raw, where)
        if entry is None:
            continue
        if entries and entry[0] <= entries[-1][0]:
            raise ConfigError(
                f"{where}: epochs must increase, got {entry[0]} after {entries[-1][0]}"
            )
        entries.append(entry)
    if not entries:
        raise ConfigError(f"{p}: no 'epoch: learning_rate' lines")
    return entries


def lr_from_schedule(entries: Sequence[tuple[int, float]], epoch: int) -> float:
    """facenet's ``get_learning_rate_from_file`` rule: go through the lines in order; while
    ``e_i <= epoch`` take ``lr_i``; stop at the first ``e_i > epoch``. (Past the last line
    its lr stays in force.) Raises ConfigError if the first line's epoch is > ``epoch``."""
    lr: float | None = None
    for e_i, lr_i in entries:
        if e_i <= epoch:
            lr = lr_i
        else:
            break
    if lr is None:
        raise ConfigError(
            f"schedule file: no learning rate for epoch {epoch} (its first line is for epoch "
            f"{entries[0][0]}; expected a line for epoch 0)"
        )
    return lr


def schedule_file_stop_epoch(path: str | os.PathLike[str]) -> int | None:
    """The first (1-based) epoch whose lr in the schedule file is negative, or None if the
    file never says stop. facenet stops there: epochs ``1 .. stop-1`` are trained, i.e.
    ``stop - 1`` epochs in all."""
    for epoch, lr in read_schedule_file(path):
        if lr < 0:
            return epoch
    return None


# ----------------------------------------------------------------------------- schedules
def _opt_number(field: str, value: Any, lo: float = 0.0, lo_open: bool = False) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or x < lo or (lo_open and x == lo):
        op = ">" if lo_open else ">="
        raise ConfigError(f"schedule.{field}: expected a number {op} {lo:g}, got {value!r}")
    return x


@SCHEDULES.register("constant")
def _constant(steps_per_epoch: int, epochs: int, warmup_steps: int) -> LrFunction:
    """``lr = base_lr``."""
    return lambda step, base: base


@SCHEDULES.register("step", "multistep")
def _step(steps_per_epoch: int, epochs: int, warmup_steps: int,
          milestones: Sequence[float] = (), gamma: float = 0.1) -> LrFunction:
    """``lr = base_lr * gamma ** (number of milestones reached)``; milestones in epochs."""
    if isinstance(milestones, (int, float)) and not isinstance(milestones, bool):
        milestones = [milestones]
    if not isinstance(milestones, (list, tuple)):
        raise ConfigError(f"schedule.milestones: expected a list of epochs, got {milestones!r}")
    ms = sorted(_opt_number("milestones", m) for m in milestones)
    g = _opt_number("gamma", gamma, lo_open=True)
    bounds = [m * steps_per_epoch for m in ms]

    def lr_at(step: int, base: float) -> float:
        return base * g ** sum(1 for b in bounds if step >= b)

    return lr_at


@SCHEDULES.register("cosine")
def _cosine(steps_per_epoch: int, epochs: int, warmup_steps: int,
            min_lr: float = 0.0) -> LrFunction:
    """``lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2`` after warm-up."""
    lo = _opt_number("min_lr", min_lr)
    total = epochs * steps_per_epoch - warmup_steps

    def lr_at(step: int, base: float) -> float:
        if total <= 0:
            return base
        t = min(max(step - warmup_steps, 0), total)
        return lo + (base - lo) * (1.0 + math.cos(math.pi * t / total)) / 2.0

    return lr_at


def warmup_cosine_lr(step: float, total: float, warmup: float, base: float) -> float:
    """The per-step rate of the task runners (detection, landmarks): a linear warm-up
    ``base * (step + 1) / warmup`` for ``step < warmup``, then
    ``base * (1 + cos(pi * t)) / 2`` with ``t = (step - warmup) / (total - warmup)`` clipped to
    [0, 1]."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1.0)
    return base * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


@SCHEDULES.register("file", "facenet")
def _file(steps_per_epoch: int, epochs: int, warmup_steps: int,
          path: str | os.PathLike[str] | None = None) -> LrFunction:
    """Absolute lr from a facenet schedule file (base lr ignored); "stop" epochs give lr 0."""
    if path is None or path == "":
        raise ConfigError("schedule.path: the 'file' schedule needs the path of a schedule file")
    entries = read_schedule_file(path)
    if entries[0][0] > 1:
        raise ConfigError(
            f"{path}: no learning rate for epoch 1 (the first line is for epoch "
            f"{entries[0][0]}); expected a line '0: <learning_rate>' or '1: <learning_rate>'"
        )

    def lr_at(step: int, base: float) -> float:
        lr = lr_from_schedule(entries, step // steps_per_epoch + 1)  # facenet's 1-based epochs
        return max(lr, 0.0)  # negative = "stop training": no updates from there on

    return lr_at


# ----------------------------------------------------------------------------- scheduler
class StepLRSchedule(LRScheduler):
    """``lr_k = warmup(k) * lr_at(k, base_lr)`` for every param group after ``k`` steps."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_at: LrFunction,
                 warmup_steps: int = 0, last_epoch: int = -1) -> None:
        self.lr_at = lr_at
        self.warmup_steps = int(warmup_steps)
        super().__init__(optimizer, last_epoch)

    def _factor(self, step: int) -> float:
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return 1.0

    def lr_for_step(self, step: int) -> list[float]:
        """The lrs of all param groups after ``step`` scheduler steps (pure; no side effects)."""
        return [self._factor(step) * self.lr_at(step, float(base)) for base in self.base_lrs]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return self.lr_for_step(self.last_epoch)

    def _get_closed_form_lr(self) -> list[float]:
        return self.lr_for_step(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers only (no functions): last step, base lrs, warm-up length."""
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_at")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = {k: v for k, v in state_dict.items() if k not in ("optimizer", "lr_at")}
        self.__dict__.update(state)


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"schedule.{field}: expected a positive integer, got {value!r}")
    return value


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 0.0,
    **options: Any,
) -> StepLRSchedule:
    """Scheduler ``name`` from :data:`SCHEDULES`, to be stepped after every optimizer step.

    ``warmup_epochs`` (may be fractional) adds a linear per-step warm-up to any schedule.
    Unknown names/options and bad values raise ConfigError (``schedule.<field>: ...``).
    """
    if str(name).lower() not in SCHEDULES:
        raise ConfigError(
            f"schedule.name: unknown schedule {name!r}; expected one of: "
            f"{', '.join(SCHEDULES.names())}"
        )
    factory = SCHEDULES.get(name)
    steps_per_epoch = _positive_int("steps_per_epoch", steps_per_epoch)
    epochs = _positive_int("epochs", epochs)
    warmup = _opt_number("warmup_epochs", warmup_epochs)
    if warmup > epochs:
        raise ConfigError(
            f"schedule.warmup_epochs: expected at most epochs={epochs}, got {warmup_epochs!r}"
        )
    warmup_steps = max(1, round(warmup * steps_per_epoch)) if warmup > 0 else 0
    allowed = [p for p in inspect.signature(factory).parameters
               if p not in ("steps_per_epoch", "epochs", "warmup_steps")]
    for key in options:
        if key not in allowed:
            expected = ", ".join(["warmup_epochs", *allowed])
            raise ConfigError(
                f"schedule.{key}: unknown option for {str(name).lower()!r}; "
                f"expected one of: {expected}"
            )
    lr_at = factory(steps_per_epoch, epochs, warmup_steps, **options)
    return StepLRSchedule(optimizer, lr_at, warmup_steps=warmup_steps)
