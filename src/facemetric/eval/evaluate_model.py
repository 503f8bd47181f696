"""Evaluate a saved model on a pair protocol (the API behind ``facemetric evaluate``).

The distinct images of the pairs are embedded once through
:func:`facemetric.inference.batch.embed_files` (the one embedding function, as
:meth:`facemetric.inference.FaceEmbedder.embed` and the training validation: evaluation and
inference share exactly the same preprocessing, flip rule and normalisation), then scored with the LFW protocol using the card's
distance (squared L2 between L2-normalised embeddings by default; Euclidean between raw
descriptors for dlib's model); the result is JSON (stable keys) plus an ROC plot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from facemetric.data.protocols import read_lfw_pairs
from facemetric.eval.quality import _stats, quality_analysis
from facemetric.eval.verification import evaluate_verification
from facemetric.inference.batch import embed_files
from facemetric.inference.embedder import load_model
from facemetric.io import atomic_write_bytes
from facemetric.report.plots import error_reject_plot, roc_plot


def evaluate_model(
    model: str | os.PathLike,
    data: str | os.PathLike,
    pairs: str | os.PathLike,
    flip: bool = False,
    out: str | os.PathLike | None = None,
    batch_size: int = 64,
    far_target: float = 1e-3,
    progress: bool = True,
    quality: bool = False,
    face_select: str | None = None,
) -> dict[str, Any]:
    """Verification metrics of ``model`` on the LFW-format ``pairs`` file over images in ``data``.

    ``pairs`` may be relative to ``data`` (e.g. ``pairs.txt``). With ``out``, writes the JSON
    report there and ``<out stem>-roc.png`` beside it. ``quality=True`` adds a ``"quality"``
    section: :func:`facemetric.eval.quality.quality_analysis` of the pre-normalisation feature
    norms (the card's distance, as the main metrics; ``image_norms``: norm statistics over the
    distinct images; ``lowest_norm_images``: the 5 lowest-norm images) and, with ``out``,
    writes the error-versus-reject plot ``<out stem>-quality.png``. ``face_select`` overrides
    the card's alignment ``select`` (``"largest"``, ``"center"``, ``"score"``) for photos with
    several faces; the report's ``alignment`` section counts how the faces were found
    (``counts``) and says it per photo (``photos``: ``{path: {"how", "why", "faces", "box"}}``).
    """
    pairs_path = Path(pairs)
    if not pairs_path.is_file() and (Path(data) / pairs_path).is_file():
        pairs_path = Path(data) / pairs_path
    pair_set = read_lfw_pairs(pairs_path, data)
    embedder = load_model(model)
    embedder.set_face_select(face_select)
    unique = sorted(set(pair_set.paths1) | set(pair_set.paths2))
    position = {p: i for i, p in enumerate(unique)}
    # a protocol needs every photo of its pairs: a photo that cannot be embedded is an error
    r = embed_files(embedder, unique, flip=flip, batch_size=batch_size, skip_failures=False, progress=progress)
    emb, norms = r.embeddings, (r.norms if quality else None)
    i1 = np.array([position[p] for p in pair_set.paths1])
    i2 = np.array([position[p] for p in pair_set.paths2])
    distance = getattr(embedder, "distance_kind", "squared_l2")  # the card's distance
    metrics = evaluate_verification(
        emb[i1], emb[i2], issame=pair_set.issame, folds=pair_set.fold, distance=distance,
        far_target=far_target,
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
    if getattr(embedder, "aligner", None) is not None:  # the card's detection + alignment step
        # counts per way a face was found, and per photo how (facemetric.align.fallback)
        report["alignment"] = {**embedder.aligner.spec, "counts": dict(embedder.aligner.counts),
                               "photos": r.found}
    if norms is not None:
        q = quality_analysis(
            emb[i1], emb[i2], pair_set.issame, norms[i1], norms[i2], folds=pair_set.fold,
            distance=distance, far_target=far_target,
        )
        q["image_norms"] = _stats(norms)
        q["lowest_norm_images"] = [
            {"path": unique[j], "norm": float(norms[j])}
            for j in np.argsort(norms, kind="stable")[:5]
        ]
        if out is not None:
            q["figure"] = Path(out).stem + "-quality.png"
        report["quality"] = q
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, json.dumps(report, indent=2).encode())
        roc_plot({report["model_name"] or "model": (metrics["roc"]["fpr"], metrics["roc"]["tpr"])},
                 out.with_name(out.stem + "-roc.png"))
        if norms is not None:
            error_reject_plot(report["quality"], out.with_name(out.stem + "-quality.png"))
    return report
