"""The clustering job behind ``facemetric cluster``: photos (a folder searched recursively, or a
``facemetric embed`` file) -> embeddings -> clusters -> ``clusters.csv``, ``metrics.json``
(when identities are known) and an HTML page of thumbnails.

* Photos are listed with :func:`facemetric.data.image_io.find_images` (symlink loops, broken
  links, names that are not valid UTF-8 ... are skipped with their reason) and embedded with
  :func:`facemetric.inference.batch.embed_files` (the one embedding function) through the
  embedder passed in; photos it cannot embed are skipped with their reason. Every skip is
  counted in the result, never fatal to the batch.
* When the folder is an identity folder (every photo ``FOLDER/<name>/<photo>``) the clusters
  are scored against the folder names (:func:`facemetric.cluster.clustering_metrics`).
* The edge threshold (:func:`edge_threshold`): given; else the model's impostor tail
  (:func:`facemetric.eval.open_set.cluster_threshold`: about 0.1 impostor edges per photo);
  else the card's 1:1 threshold as a cosine.
* Every output file is written atomically (:mod:`facemetric.io`): a failed or killed run
  leaves no partial ``clusters.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemetric.cluster.graph import METHODS, cluster_embeddings
from facemetric.cluster.metrics import clustering_metrics
from facemetric.data.folder import IdentityFolder
from facemetric.data.image_io import display_path, find_images, is_valid_name
from facemetric.errors import FacemetricError
from facemetric.eval.embedding_set import EmbeddingSet
from facemetric.eval.open_set import cluster_threshold
from facemetric.inference.batch import embed_files
from facemetric.inference.model_card import card_similarity_threshold
from facemetric.io import atomic_write_text
from facemetric.report.cluster_html import write_cluster_report


def edge_threshold(card: Mapping[str, Any], num_photos: int, threshold: float | None = None) -> tuple[float, str]:
    """``(edge threshold, where it came from)``: ``threshold`` when given (a cosine in
    ``[-1, 1]``); else from the model's impostor tail for ``num_photos`` photos; else the
    card's 1:1 threshold (its error names ``--threshold`` when it has none usable)."""
    if threshold is not None:
        if not -1.0 <= float(threshold) <= 1.0:
            raise FacemetricError(f"--threshold: expected a cosine similarity in [-1, 1], got {threshold}")
        return float(threshold), "--threshold"
    if card.get("impostor_tail"):
        return cluster_threshold(card["impostor_tail"], num_photos), f"model's impostor tail, {num_photos} photos"
    try:
        return card_similarity_threshold(card), "model card"
    except FacemetricError as exc:
        raise FacemetricError(f"{exc.args[0].removeprefix('threshold: ')} (use --threshold, a cosine similarity)") from None


@dataclass
class Photos:
    """Embedded photos ready to cluster: ``embeddings [n, D]``, their ``paths``, ``truth``
    (identity per photo, or None), the model ``card``, ``skipped`` (``{printable path:
    reason}``), ``folder`` (shown paths are relative to it) and ``source_name`` (the model)."""

    embeddings: np.ndarray
    paths: list[Path]
    truth: list[str] | None
    card: Mapping[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)
    folder: Path | None = None
    source_name: str = ""


def photos_from_folder(folder: Path, embedder: Any, *, model_name: str = "", min_images: int = 1,
                       people: Path | None = None, batch_size: int = 32, progress: bool = False) -> Photos:
    """List the photos of ``folder`` (recursively; or, with ``min_images`` / ``people``, the
    identities of an identity folder) and embed them. One-line errors when there is no photo
    or no face in any of them."""
    if not folder.is_dir():
        raise FacemetricError(f"{folder}: folder not found")
    skipped: dict[str, str] = {}
    if min_images != 1 or people is not None:
        if people is not None and not people.is_file() and (folder / people).is_file():
            people = folder / people
        data = IdentityFolder(folder, min_images=min_images, identities=people)
        paths = list(data.paths)
        skipped.update(data.skip_report())
    else:
        paths, bad = find_images(folder)
        skipped.update({display_path(p): s.reason for p, s in bad.items()})
    good = [p for p in paths if is_valid_name(p)]
    skipped.update({display_path(p): "file name is not valid UTF-8" for p in paths if not is_valid_name(p)})
    if not good:
        raise FacemetricError(f"{folder}: no images found")
    r = embed_files(embedder, good, batch_size=batch_size, progress=progress)
    by_name = {os.fspath(p): p for p in good}
    kept = [by_name[k] for k in r.kept]
    skipped.update({display_path(by_name[k]): why for k, why in r.skipped.items()})
    if not kept:
        raise FacemetricError(f"{folder}: no face found in any of {len(good)} images")
    rel = [p.relative_to(folder) for p in kept]
    truth = [r_.parts[0] for r_ in rel] if all(len(r_.parts) == 2 for r_ in rel) else None
    return Photos(r.embeddings, kept, truth, embedder.card, skipped, folder, model_name)


def photos_from_embeddings(file: Path, folder: Path | None = None, *, min_images: int = 1,
                           people: Path | None = None) -> Photos:
    """The photos of a ``facemetric embed`` file (no model run), scored against its
    identities; ``min_images`` / ``people`` select identities as for a folder."""
    s = EmbeddingSet.load(file)
    if people is not None or min_images != 1:
        root = Path(s.meta.get("data") or ".")
        if people is not None and not people.is_file() and (root / people).is_file():
            people = root / people
        s = s.select(people, min_images)
    if len(s) == 0:
        raise FacemetricError(f"{file}: holds no embeddings")
    skipped = {str(p): why for p, why in (s.meta.get("skipped") or {}).items()}
    folder = folder or (Path(s.meta["data"]) if s.meta.get("data") else None)
    return Photos(s.embeddings, [Path(p) for p in s.paths.tolist()], s.identities.tolist(), s.card,
                  skipped, folder, str(s.meta.get("model")))


@dataclass
class ClusterResult:
    """``labels`` (cluster per kept photo), ``threshold`` and its ``source``, ``seconds`` (the
    clustering step), ``metrics`` (vs the known identities, or None), the written files."""

    photos: Photos
    labels: np.ndarray
    threshold: float
    source: str
    seconds: float
    metrics: dict[str, Any] | None
    csv_path: Path
    report_path: Path | None

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels)


def clusters_csv(paths: Sequence[Path], labels: np.ndarray) -> str:
    """``path,cluster`` rows (CSV text with a header)."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["path", "cluster"])
    for p, c in zip(paths, labels.tolist(), strict=True):
        w.writerow([os.fspath(p), c])
    return buf.getvalue()


def cluster_photos(photos: Photos, out: Path, *, method: str = "chinese-whispers",
                   threshold: float | None = None, k: int = 20, thumbnails: bool = True,
                   title: str | None = None) -> ClusterResult:
    """Cluster ``photos`` and write ``out/clusters.csv``, ``out/metrics.json`` (identities
    known) and, with ``thumbnails``, ``out/index.html`` + ``out/thumbs/`` (all atomic)."""
    if method not in METHODS:
        raise FacemetricError(f"--method: expected one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(k, bool) or k < 1:
        raise FacemetricError(f"--k: expected an integer >= 1, got {k}")
    n = len(photos.paths)
    t, source = edge_threshold(photos.card, n, threshold)
    emb = np.asarray(photos.embeddings, dtype=np.float64)
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    start = time.perf_counter()
    labels = cluster_embeddings(e, method=method, threshold=t, k=min(k, n))
    seconds = time.perf_counter() - start
    csv_path = atomic_write_text(out / "clusters.csv", clusters_csv(photos.paths, labels))
    metrics = None
    if photos.truth is not None:
        metrics = clustering_metrics(photos.truth, labels)
        metrics.update(method=method, threshold=t, k=k, skipped=len(photos.skipped), seconds=round(seconds, 3))
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    report = None
    if thumbnails:
        shown = title or f"Clusters of {photos.folder}"
        report = write_cluster_report(out, photos.paths, labels, folder=photos.folder, metrics=metrics,
                                      title=shown,
                                      settings=f"{photos.source_name}, {method}, threshold {t:.3f} ({source}), k {k}")
    return ClusterResult(photos, labels, t, source, seconds, metrics, csv_path, report)


__all__ = [
    "ClusterResult",
    "Photos",
    "cluster_photos",
    "clusters_csv",
    "edge_threshold",
    "photos_from_embeddings",
    "photos_from_folder",
]
