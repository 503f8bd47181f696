"""Exponential moving average of a model's weights (facenet's ``moving_average_decay``).

Each :meth:`ModelEMA.update` (call it after ``optimizer.step()``) does, for every floating
parameter and buffer ``x`` with average ``a``::

    n = number of updates so far, this one included (TF's num_updates = global_step)
    d = min(decay, (1 + n) / (10 + n))   if use_num_updates (TF ExponentialMovingAverage)
    d = decay                            otherwise
    a <- d * a + (1 - d) * x

Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are copied. The average starts
from the model's weights at construction.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from facemetric.errors import ConfigError


class ModelEMA:
    """Averaged copy of a model; ``.module`` is a frozen deep copy usable for inference."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, use_num_updates: bool = True):
        d = float(decay)
        if not math.isfinite(d) or not 0.0 <= d <= 1.0:
            raise ConfigError(f"train.ema_decay: expected a number in [0, 1], got {decay!r}")
        self.decay = d
        self.use_num_updates = bool(use_num_updates)
        self.num_updates = 0
        self.module = copy.deepcopy(model)
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self, num_updates: int | None = None) -> float:
        """The decay used by the update number ``num_updates`` (1-based)."""
        n = self.num_updates + 1 if num_updates is None else num_updates
        if self.use_num_updates:
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``a <- d * a + (1 - d) * x`` for floating tensors; integer buffers copied."""
        self.num_updates += 1
        d = self.current_decay(self.num_updates)
        avg = self.module.state_dict()
        cur = model.state_dict()
        if avg.keys() != cur.keys():
            missing = sorted(set(avg) ^ set(cur))
            raise ValueError(f"ModelEMA.update: model tensors differ from the average: {missing}")
        for key, a in avg.items():
            x = cur[key].detach().to(device=a.device)
            if a.is_floating_point() or a.is_complex():
                a.mul_(d).add_(x.to(a.dtype), alpha=1.0 - d)
            else:
                a.copy_(x)

    def state_dict(self) -> dict[str, Any]:
        """Averaged tensors plus ``num_updates``/``decay``/``use_num_updates``."""
        return {
            "module": self.module.state_dict(),
            "num_updates": self.num_updates,
            "decay": self.decay,
            "use_num_updates": self.use_num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the averaged tensors and the update count (``decay`` stays as configured)."""
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state.get("num_updates", 0))

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Copy the averaged parameters and buffers into ``model`` (in place)."""
        model.load_state_dict(self.module.state_dict())

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``model``; restore its own on exit.

        Tensors are copied in place, so optimizer references to the parameters stay valid.
        """
        with torch.no_grad():
            backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                model.load_state_dict(backup)

    def to(self, device: torch.device | str) -> ModelEMA:
        """Move the averaged copy to ``device``."""
        self.module.to(device)
        return self
