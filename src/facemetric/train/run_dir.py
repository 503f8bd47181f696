"""The run directory: resolved config, git revision, metrics (JSON lines), checkpoints, report.

Layout::

    <run>/config.yaml        the resolved configuration (defaults + file + overrides)
    <run>/run.json           git revision, dirty flag, command line, versions, start time
    <run>/metrics.jsonl      one JSON object per line (train epochs, validation results)
    <run>/checkpoints/       checkpoint-epochNNNN.pt, written atomically
    <run>/report.md          a human-readable summary written at the end
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from facemetric.errors import ConfigError
from facemetric.io import atomic_write_bytes, git_revision


def saved_config(run_dir: str | os.PathLike | None) -> Path:
    """The ``config.yaml`` a run directory saved (what ``--resume`` trains on), or a one-line
    ConfigError when ``run_dir`` is not a run directory."""
    if run_dir is None or not (Path(run_dir) / "config.yaml").is_file():
        raise ConfigError(f"resume: {run_dir} is not a run directory (no config.yaml)")
    return Path(run_dir) / "config.yaml"


def default_run_path(name: str, root: str | os.PathLike = "runs") -> Path:
    """``<root>/<name>-<YYYYmmdd-HHMMSS>``: a new run's folder when none is given."""
    return Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    """A run directory (created if needed)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def write_config(self, config: dict[str, Any]) -> None:
        text = yaml.safe_dump(config, sort_keys=False)
        atomic_write_bytes(self.path / "config.yaml", text.encode())

    def write_run_info(self, extra: dict[str, Any] | None = None) -> None:
        import torch

        info = {
            "git": git_revision(),
            "command": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "host": platform.node(),
            **(extra or {}),
        }
        atomic_write_bytes(self.path / "run.json", json.dumps(info, indent=2).encode())

    def log_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=False) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        with open(self.metrics_path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def truncate_metrics_after(self, epoch: int) -> None:
        """On resume, drop records of epochs after the checkpoint (they will be redone);
        ``epoch=0`` (no checkpoint yet) drops them all. A torn last line (a kill during
        :meth:`log_metrics`) is dropped too."""
        if not self.metrics_path.exists():
            return
        records = []
        with open(self.metrics_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if isinstance(r, dict) and int(r.get("epoch", 0)) <= epoch:
                    records.append(r)
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write_bytes(self.metrics_path, text.encode())

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        atomic_write_bytes(target, text.encode())
        return target
