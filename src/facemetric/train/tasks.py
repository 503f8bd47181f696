"""Training tasks: what ``facemetric train --config RECIPE`` trains, chosen by the recipe's
top-level ``task`` key.

``embedding`` (the default, :func:`facemetric.train.experiment.run_experiment`) trains a face
embedding; other tasks (``detection``: an SSD face detector; ``dense``: FCN/HED/FSDS pixel-level
heads) register a runner in :data:`TASKS` with the same signature::

    runner(config, overrides, run_dir, resume, progress) -> result

``config`` is a YAML path, a dict or None; ``overrides`` are ``key.sub=value`` strings; with
``resume`` the run directory's saved ``config.yaml`` is used. A result has ``run_dir`` (a Path),
``final`` (a dict of final metrics by split) and ``summary()`` (one human-readable line) — the
CLI prints both lines. Every runner writes the usual run directory (config, git revision, metrics
as JSON lines, atomic checkpoints, report) through :class:`facemetric.train.run_dir.RunDir`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facemetric.errors import ConfigError
from facemetric.registry import Registry
from facemetric.train.config import read_yaml
from facemetric.train.dense_task import run_dense
from facemetric.train.detection_task import run_detection_task
from facemetric.train.experiment import run_experiment
from facemetric.train.landmark_task import run_landmark_task

TaskRunner = Callable[..., Any]

#: task name -> runner ``(config, overrides, run_dir, resume, progress) -> result``
TASKS: Registry[Any] = Registry("task")
TASKS.register("embedding")(run_experiment)
TASKS.register("dense")(run_dense)
TASKS.register("landmarks")(run_landmark_task)
TASKS.register("detection")(run_detection_task)


def _override_task(overrides: list[str]) -> str | None:
    for text in overrides:
        key, sep, value = text.partition("=")
        if sep and key.strip() == "task":
            return value.strip()
    return None


def _yaml_task(path: Path) -> Any:
    """The ``task`` key of a YAML recipe (read with the config reader's own checks/messages)."""
    return read_yaml(path).get("task")


def task_of(
    config: dict[str, Any] | str | os.PathLike | None,
    overrides: list[str] | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> str:
    """The task a recipe asks for: a ``task=...`` override, else the saved run's config (with
    ``resume``), else the recipe's ``task`` key, else ``embedding``."""
    task = _override_task(list(overrides or []))
    if task is None:
        if resume and run_dir is not None and (Path(run_dir) / "config.yaml").is_file():
            task = _yaml_task(Path(run_dir) / "config.yaml")
        elif isinstance(config, dict):
            task = config.get("task")
        elif config is not None:
            task = _yaml_task(Path(config))
    if task is None:
        return "embedding"
    if not isinstance(task, str) or task.lower() not in TASKS:
        raise ConfigError(f"task: expected one of {', '.join(TASKS.names())}, got {task!r}")
    return task.lower()


def train_from_config(
    config: dict[str, Any] | str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Any:
    """Train whatever the recipe's ``task`` names (the API behind ``facemetric train``).
    Under torchrun (``WORLD_SIZE > 1``) only the ``embedding`` task trains data-parallel; the
    others are refused rather than run as N copies writing one run directory."""
    task = task_of(config, overrides, run_dir, resume)
    if task != "embedding" and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError(
            f"task: {task!r} trains in one process; under torchrun (WORLD_SIZE > 1) only the "
            "'embedding' task trains data-parallel"
        )
    runner = TASKS.get(task)
    return runner(config, overrides=overrides, run_dir=run_dir, resume=resume, progress=progress)


__all__ = ["TASKS", "task_of", "train_from_config"]
