"""Training: trainer loop, optimizers, schedules, EMA, checkpoints and run directories.

``run_experiment(config_path, overrides=[...])`` is the Python twin of ``facemetric train``.
The names below are imported lazily: low-level modules (``facemetric.train.checkpoint``) are
used by the data package, which the experiment module itself imports.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "load_config": "facemetric.train.config",
    "build_experiment": "facemetric.train.experiment",
    "run_experiment": "facemetric.train.experiment",
    "TrainResult": "facemetric.train.experiment",
    "Trainer": "facemetric.train.trainer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'facemetric.train' has no attribute {name!r}")
