"""Evaluate a saved model on a pair protocol (the API behind ``facemetric evaluate``).

The distinct images of the pairs are embedded once through
:meth:`facemetric.inference.FaceEmbedder.embed` (so evaluation and inference share exactly the
same preprocessing), then scored with the LFW protocol; the result is JSON (stable keys) plus
an ROC plot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from facemetric.eval.verification import evaluate_verification
from facemetric.train.checkpoint import atomic_write_bytes


def embed_paths(embedder: Any, paths: list[str], flip: bool = False, batch_size: int = 64,
                progress: bool = True) -> np.ndarray:
    """Normalised embeddings of ``paths`` (in order), with a progress bar."""
    from rich.progress import Progress

    out = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("embedding", total=len(paths))
        for i in range(0, len(paths), batch_size):
            chunk = paths[i : i + batch_size]
            out.append(embedder.embed(chunk, batch_size=batch_size, flip=flip))
            bar.advance(task, len(chunk))
    return np.concatenate(out)


def evaluate_model(
    model: str | os.PathLike,
    data: str | os.PathLike,
    pairs: str | os.PathLike,
    flip: bool = False,
    out: str | os.PathLike | None = None,
    batch_size: int = 64,
    far_target: float = 1e-3,
    progress: bool = True,
) -> dict[str, Any]:
    """Verification metrics of ``model`` on the LFW-format ``pairs`` file over images in ``data``.

    ``pairs`` may be relative to ``data`` (e.g. ``pairs.txt``). With ``out``, writes the JSON
    report there and ``<out stem>-roc.png`` beside it.
    """
    from facemetric.data.protocols import read_lfw_pairs
    from facemetric.inference.embedder import load_model

    pairs_path = Path(pairs)
    if not pairs_path.is_file() and (Path(data) / pairs_path).is_file():
        pairs_path = Path(data) / pairs_path
    pair_set = read_lfw_pairs(pairs_path, data)
    embedder = load_model(model)
    unique = sorted(set(pair_set.paths1) | set(pair_set.paths2))
    position = {p: i for i, p in enumerate(unique)}
    emb = embed_paths(embedder, unique, flip=flip, batch_size=batch_size, progress=progress)
    i1 = np.array([position[p] for p in pair_set.paths1])
    i2 = np.array([position[p] for p in pair_set.paths2])
    metrics = evaluate_verification(
        emb[i1], emb[i2], issame=pair_set.issame, folds=pair_set.fold, far_target=far_target
    )
    report = {
        "model": str(model),
        "model_name": embedder.card.get("name"),
        "data": str(data),
        "pairs": str(pairs_path),
        "flip": flip,
        "num_images": len(unique),
        **metrics,
    }
    if out is not None:
        from facemetric.report.plots import roc_plot

        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, json.dumps(report, indent=2).encode())
        roc_plot({report["model_name"] or "model": (metrics["roc"]["fpr"], metrics["roc"]["tpr"])},
                 out.with_name(out.stem + "-roc.png"))
    return report
