"""Atomic checkpoint files: written to a temporary file in the same folder, then renamed.

A process killed while saving leaves the previous checkpoint intact (``os.replace`` is atomic
on POSIX and Windows). :func:`latest_checkpoint` finds the newest complete one for resume.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from facemetric.errors import FacemetricError
from facemetric.io import atomic_torch_save, atomic_write, atomic_write_bytes  # noqa: F401

_NAME = re.compile(r"^checkpoint-epoch(\d+)\.pt$")


def checkpoint_path(directory: str | os.PathLike, epoch: int) -> Path:
    return Path(directory) / f"checkpoint-epoch{epoch:04d}.pt"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the complete checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def prune_checkpoints(directory: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for _, p in list_checkpoints(directory)[:-keep]:
        p.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FacemetricError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt or foreign file
        raise FacemetricError(f"{path}: not a readable facemetric checkpoint ({exc.__class__.__name__})") from None
