"""Matplotlib figures (Agg backend, no display needed)."""

from __future__ import annotations

import os
import textwrap
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
    """Scatter of 2-D features coloured by class (the center-loss paper's Fig. 3 style).

    The title is wrapped to the figure's width (explicit ``\\n`` kept) and the legend sits
    outside the axes, to the right, so it never covers points; the saved image is cropped to
    everything drawn (``bbox_inches="tight"``), so no title or label is cut off.
    """
    fig = scatter_figure(features, labels, title, class_names)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)


def scatter_figure(features: np.ndarray, labels: np.ndarray, title: str = "",
                   class_names: Sequence[str] | None = None) -> plt.Figure:
    """The figure :func:`feature_scatter` saves (the caller closes it)."""
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2 or features.shape[1] != 2:
        raise ValueError(f"features: expected [N, 2] for a scatter plot, got {features.shape}")
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=110)
    cmap = plt.get_cmap("tab10")
    for c in np.unique(labels):
        pts = features[labels == c]
        name = class_names[c] if class_names is not None else str(c)
        ax.scatter(pts[:, 0], pts[:, 1], s=4, color=cmap(int(c) % 10), label=name, alpha=0.8)
    ax.set_title(_wrap(title, 62), fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(markerscale=3, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False, borderaxespad=0.0, handletextpad=0.2)
    ax.tick_params(labelsize=7)
    return fig


def _wrap(title: str, width: int) -> str:
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n")) if title else ""


def roc_plot(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    min_far: float | None = None,
    title: str = "",
) -> None:
    """ROC curves (FPR on a log axis) of several models: ``{label: (fpr, tpr)}``.

    The FAR axis starts at ``min_far`` -- pass ``1 / number of impostor pairs``, the finest
    FAR the pairs resolve; by default the smallest positive FPR of the curves, which is that
    step. Points below it (FPR 0) are drawn at ``min_far``. The legend is placed where it
    covers the fewest curve points (lower right, where ROC curves rarely go, by default).
    """
    fig = roc_figure(curves, min_far, title)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)


def roc_figure(curves: dict[str, tuple[Sequence[float], Sequence[float]]],
               min_far: float | None = None, title: str = "") -> plt.Figure:
    """The figure :func:`roc_plot` saves (the caller closes it)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.0), dpi=110)
    if min_far is None:
        positive = [float(np.min(np.asarray(f)[np.asarray(f) > 0])) for f, _ in curves.values()
                    if np.any(np.asarray(f) > 0)]
        min_far = min(positive) if positive else 1e-3
    if not (0 < min_far < 1):
        raise ValueError(f"min_far: expected a number in (0, 1), got {min_far!r}")
    for label, (fpr, tpr) in curves.items():
        fpr = np.maximum(np.asarray(fpr, dtype=float), min_far)
        ax.plot(fpr, tpr, label=label, lw=1.2)
    ax.set_xscale("log")
    ax.set_xlim(min_far, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(f"false accept rate (from {min_far:.2g})")
    ax.set_ylabel("true accept rate")
    if title:
        ax.set_title(_wrap(title, 60), fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def error_reject_plot(result: dict, path: str | os.PathLike, title: str = "") -> None:
    """Error-versus-reject curves of :func:`facemetric.eval.quality.quality_analysis`.

    Left: k-fold accuracy vs the fraction of pairs rejected; right: FNMR at each FMR level
    (log axis, 0 drawn at 1e-4; undefined points left out). Solid: lowest pair quality
    (feature norm) rejected first; dashed: random rejection (mean over seeds, ±1 std shaded).
    """
    curve = result["curve"]
    r = np.array([p["reject_fraction"] for p in curve])
    fig, (ax_acc, ax_fn) = plt.subplots(1, 2, figsize=(8.4, 3.6), dpi=110)
    acc_n = np.array([p["norm"]["accuracy"] for p in curve])
    acc_r = np.array([p["random"]["accuracy"] for p in curve])
    std_r = np.array([p["random"]["accuracy_std"] for p in curve])
    label = f"reject low {result['pair_quality']} norm"
    ax_acc.plot(r, acc_n, "o-", color="C0", lw=1.4, ms=3, label=label)
    ax_acc.plot(r, acc_r, "s--", color="C7", lw=1.2, ms=3, label="reject at random")
    ax_acc.fill_between(r, acc_r - std_r, acc_r + std_r, color="C7", alpha=0.2, lw=0)
    ax_acc.set_xlabel("fraction of pairs rejected")
    ax_acc.set_ylabel("k-fold accuracy")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(fontsize=7)
    rho = result.get("spearman")
    ax_acc.set_title(
        title or (f"Spearman(quality, correct) = {rho:.3f}" if rho is not None else "quality"),
        fontsize=9,
    )
    plotted, lowest = False, 1.0
    for i, key in enumerate(result.get("fmr_levels", [])):
        for kind, style in (("norm", "o-"), ("random", "s--")):
            pts = [(p["reject_fraction"], p[kind]["fnmr"][key]) for p in curve]
            pts = [(x, max(y, 1e-4)) for x, y in pts if y is not None]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            label = f"FMR {key}, {'norm' if kind == 'norm' else 'random'}"
            ax_fn.plot(xs, ys, style, color=f"C{i + 1}", lw=1.2, ms=3, label=label)
            lowest = min(lowest, *ys)
            plotted = True
    ax_fn.set_xlabel("fraction of pairs rejected")
    ax_fn.set_ylabel("FNMR = 1 - TAR")
    if plotted:
        ax_fn.set_ylim(lowest / 2, 1.5)
        ax_fn.set_yscale("log")
        ax_fn.legend(fontsize=7)
    else:
        ax_fn.text(
            0.5, 0.5, "too few impostor pairs", ha="center", va="center",
            transform=ax_fn.transAxes, fontsize=8,
        )
    ax_fn.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def cmc_plot(curves: dict[str, Sequence[float]], path: str | os.PathLike, title: str = "") -> None:
    """Cumulative match characteristic curves ``{label: [CMC(1), CMC(2), ...]}`` (rank on a
    log axis)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.0), dpi=110)
    for label, cmc in curves.items():
        cmc = np.asarray(cmc, dtype=float)
        ax.plot(np.arange(1, cmc.size + 1), cmc, label=label, lw=1.2, marker="." if cmc.size <= 20 else None)
    ax.set_xscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
