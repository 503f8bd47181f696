"""Embed many photo files, one bad photo at a time: ``embed_files(embedder, paths)``.

Each file is decoded (and, when the card has an alignment step, detected and aligned) on its
own, so an unreadable photo or one without a face is *skipped with its reason* instead of
failing the batch; the decoded inputs are then embedded, as they are decoded, by the one
embedding function (:meth:`facemetric.inference.FaceEmbedder.embed_batches`, i.e.
:func:`facemetric.inference.embedding.embed_batches` with the card's flip and normalisation
rules) -- exactly what :meth:`~facemetric.inference.FaceEmbedder.embed` computes (same decode,
crop, resize, colour order, normalisation, flip rule and L2 normalisation), decoding every
file once. A rich progress bar (on stderr) counts the files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from facemetric.data.image_io import path_problem
from facemetric.data.transforms import decode_and_resize, to_tensor
from facemetric.errors import FacemetricError


@dataclass
class EmbeddedFiles:
    """The result of :func:`embed_files`: ``embeddings [n_kept, D]`` (float32, as the card
    says: L2-normalised unless ``normalize_embeddings: false``), ``kept`` (the embedded
    paths, in input order), ``skipped`` (``{path: reason}``), ``norms`` (pre-normalisation
    feature norms ``[n_kept]``) and ``alignment`` (the aligner's counts, or None)."""

    embeddings: np.ndarray
    kept: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    norms: np.ndarray | None = None
    alignment: dict[str, int] | None = None


def _reason(exc: BaseException, name: str) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = text.removeprefix(f"{name}: ")
    return "no face found" if text.startswith("no face found") else text


def embed_files(
    embedder: Any,
    paths: Sequence[str | os.PathLike],
    *,
    flip: bool = False,
    batch_size: int = 64,
    skip_failures: bool = True,
    progress: bool = True,
    description: str = "embedding",
) -> EmbeddedFiles:
    """Embeddings of the photo files ``paths`` (see the module docstring).

    ``skip_failures=False`` raises the first failure as a one-line
    :class:`~facemetric.errors.FacemetricError` naming the file instead. Missing files are
    skipped with ``"file not found"``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise FacemetricError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    prep = embedder.preprocessing
    aligner = getattr(embedder, "aligner", None)
    kept: list[str] = []
    skipped: dict[str, str] = {}

    def decoded_batches(bar: Progress, task: Any):
        """Network inputs of the readable files, ``batch_size`` at a time; records kept/skipped."""
        pending: list[np.ndarray] = []
        for p in paths:
            name = os.fspath(p)
            try:
                problem = path_problem(name)  # "file not found", "is a directory", "symlink loop", ...
                if problem is not None:
                    raise FacemetricError(f"{name}: {problem}")
                source: Any = aligner([name])[0] if aligner is not None else name
                pending.append(decode_and_resize(source, prep))
            except (FacemetricError, OSError, ValueError) as exc:
                if not skip_failures:
                    msg = str(exc)
                    raise FacemetricError(msg if name in msg else f"{name}: {msg}") from None
                skipped[name] = path_problem(name) or _reason(exc, name)
            else:
                kept.append(name)
            bar.advance(task)
            if len(pending) == batch_size:
                yield to_tensor(np.stack(pending), prep)
                pending.clear()
        if pending:
            yield to_tensor(np.stack(pending), prep)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # on stderr, so that stdout (e.g. ``identify --json``) stays clean
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task(description, total=len(paths))
        result = embedder.embed_batches(decoded_batches(bar, task), flip)
    emb, norms = result.numpy()
    return EmbeddedFiles(
        embeddings=emb.astype(np.float32, copy=False),
        kept=kept,
        skipped=skipped,
        norms=norms,
        alignment=None if aligner is None else dict(aligner.counts),
    )


__all__ = ["EmbeddedFiles", "embed_files"]
