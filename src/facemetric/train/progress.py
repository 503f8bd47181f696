"""A rich progress bar for training: epoch/step, loss, accuracy, images/s and ETA."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _fmt(values: dict[str, Any], keys: tuple[str, ...]) -> str:
    parts = []
    for k in keys:
        if k in values and isinstance(values[k], (int, float)):
            parts.append(f"{k}={values[k]:.4g}")
    return " ".join(parts)


class TrainProgress:
    """Context manager; a no-op when ``enabled`` is False."""

    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.epochs = epochs
        self.steps = steps_per_epoch
        self.console = Console(stderr=True)
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(
                "train", total=self.epochs * self.steps, epoch=1, epochs=self.epochs, stats="", rate=""
            )
        return self

    def start_at(self, epoch: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=epoch * self.steps, epoch=epoch + 1)

    def update(self, epoch: int, step: int, stats: dict[str, float], rate: float) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=epoch * self.steps + step,
                epoch=epoch + 1,
                stats=_fmt(stats, ("loss", "accuracy", "active_triplets")),
                rate=f"{rate:,.0f} img/s",
            )

    def epoch_done(self, records: list[dict[str, Any]]) -> None:
        if self._progress is not None:
            for r in records:
                keys = ("loss", "accuracy", "images_per_s") if r["split"] == "train" else (
                    "accuracy_mean", "val", "auc", "eer")
                self._progress.console.print(f"epoch {r['epoch']} {r['split']}: {_fmt(r, keys)}")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
