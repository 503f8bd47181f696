"""Embed many photo files, one bad photo at a time: ``embed_files(embedder, paths)``.

Each file is decoded (and, when the card has an alignment step, detected and aligned) on its
own, so an unreadable photo or one without a face is *skipped with its reason* instead of
failing the batch; the decoded inputs are then embedded, as they are decoded, by the one
embedding function (:meth:`facemetric.inference.FaceEmbedder.embed_batches`, i.e.
:func:`facemetric.inference.embedding.embed_batches` with the card's flip and normalisation
rules) -- exactly what :meth:`~facemetric.inference.FaceEmbedder.embed` computes (same decode,
crop, resize, colour order, normalisation, flip rule and L2 normalisation), decoding every
file once. With an alignment step, files are detected in chunks of ``batch_size`` (one
detector pass per chunk) and every embedded file records how its face was found
(:attr:`EmbeddedFiles.found`: ``{"how", "why", "faces", "box"}``, see
:mod:`facemetric.align.fallback`). A rich progress bar (on stderr) counts the files.
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
    #: per embedded path, how its face was found (only with an alignment step)
    found: dict[str, dict] = field(default_factory=dict)


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

    found: dict[str, dict] = {}

    def fail(name: str, exc: BaseException | str) -> None:
        if not skip_failures:
            msg = str(exc)
            raise FacemetricError(msg if name in msg else f"{name}: {msg}") from None
        skipped[name] = path_problem(name) or (
            _reason(exc, name) if isinstance(exc, BaseException) else _reason(Exception(exc), name)
        )

    def inputs(names: list[str]):
        """``(name, network input or None)`` of a chunk of files, in order."""
        readable = []
        for name in names:
            problem = path_problem(name)  # "file not found", "is a directory", "symlink loop", ...
            if problem is not None:
                fail(name, FacemetricError(f"{name}: {problem}"))
                yield name, None
            else:
                readable.append(name)
        if aligner is None:
            sources: list[Any] = [(n, n, None) for n in readable]
        else:
            sources = []
            for n, a in zip(readable, aligner.align_many(readable), strict=True):
                if a.chip is None:
                    fail(n, a.error or "no face found")
                    sources.append((n, None, None))
                else:
                    sources.append((n, a.chip, a.found))
        for name, source, how in sources:
            if source is None:
                yield name, None
                continue
            try:
                x = decode_and_resize(source, prep)
            except (FacemetricError, OSError, ValueError) as exc:
                fail(name, exc)
                yield name, None
                continue
            if how is not None:
                found[name] = how.to_dict()
            yield name, x

    def decoded_batches(bar: Progress, task: Any):
        """Network inputs of the readable files, ``batch_size`` at a time; records kept/skipped."""
        pending: list[np.ndarray] = []
        names = [os.fspath(p) for p in paths]
        for start in range(0, len(names), batch_size):
            for name, x in inputs(names[start : start + batch_size]):
                if x is not None:
                    kept.append(name)
                    pending.append(x)
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
        found=found,
    )


__all__ = ["EmbeddedFiles", "embed_files"]
