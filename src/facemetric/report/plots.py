"""Matplotlib figures (Agg backend, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def feature_scatter(
    features: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    title: str = "",
    class_names: Sequence[str] | None = None,
) -> None:
    """Scatter of 2-D features coloured by class (the center-loss paper's Fig. 3 style)."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] != 2:
        raise ValueError(f"features: expected [N, 2] for a scatter plot, got {features.shape}")
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=110)
    cmap = plt.get_cmap("tab10")
    for c in np.unique(labels):
        pts = features[labels == c]
        name = class_names[c] if class_names is not None else str(c)
        ax.scatter(pts[:, 0], pts[:, 1], s=4, color=cmap(int(c) % 10), label=name, alpha=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(markerscale=3, fontsize=6, loc="upper right", ncol=2, frameon=False)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def roc_plot(curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike) -> None:
    """ROC curves (FPR on a log axis) of several models: ``{label: (fpr, tpr)}``."""
    fig, ax = plt.subplots(figsize=(4.5, 4.0), dpi=110)
    for label, (fpr, tpr) in curves.items():
        fpr = np.maximum(np.asarray(fpr), 1e-5)
        ax.plot(fpr, tpr, label=label, lw=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
