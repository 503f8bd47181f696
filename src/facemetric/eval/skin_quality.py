"""Visible skin as face quality: the share of skin pixels in the face chip, from the face parser,
analysed against verification errors exactly as ``evaluate --quality`` analyses the feature norm.

For each distinct photo of a pair protocol (LFW View 1: ``pairsDevTest.txt``), the dense model
parses the whole photo (:meth:`facemetric.dense.predict.DenseModel.predict_arrays`, at the
photo's own size) and ``skin = #{skin pixels in the chip} / #{chip pixels}``, the chip being the
centred ``chip`` box (height, width) in photo pixels -- by default ``(150, 128)`` of LFW's
250x250 photos, the centre crop the ``lfw-view1-*`` recipes embed. Occlusions (hands, glasses,
microphones), profile views and hair over the face lower it. The embedder embeds the same photos
through the one embedding path (:func:`facemetric.inference.batch.embed_files`) and
:func:`facemetric.eval.quality.quality_analysis` is run twice on the same pairs: with the skin
fractions as the quality (``skin``) and with the feature norms (``norm``), so the two signals
are compared on equal terms (pair quality = the worse side, ``min``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import track

from facemetric.data.image_io import read_image
from facemetric.data.protocols import read_lfw_pairs
from facemetric.errors import FacemetricError
from facemetric.eval.quality import _stats, quality_analysis
from facemetric.inference.batch import embed_files
from facemetric.inference.embedder import load_model
from facemetric.io import atomic_write_bytes
from facemetric.report.plots import error_reject_plot


def chip_box(shape: tuple[int, int], chip: tuple[int, int]) -> tuple[slice, slice]:
    """The centred ``chip`` box of an image of ``shape`` (clipped to the image)."""
    h, w = shape
    ch, cw = min(int(chip[0]), h), min(int(chip[1]), w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return slice(top, top + ch), slice(left, left + cw)


def skin_fractions(dense_model: Any, paths: list[str], chip: tuple[int, int] = (150, 128),
                   batch_size: int = 32, progress: bool = False, skin_class: int = 1) -> np.ndarray:
    """Skin share of the chip of each photo (float64 ``[N]``, in 0..1)."""
    out = np.zeros(len(paths), dtype=np.float64)
    starts = range(0, len(paths), batch_size)
    for s in track(starts, description="parsing", disable=not progress):
        chunk = paths[s : s + batch_size]
        preds = dense_model.predict_arrays([read_image(p, "RGB") for p in chunk], batch_size)
        for j, pred in enumerate(preds):
            lab = pred["labels"]
            box = chip_box(lab.shape, chip)
            out[s + j] = float((lab[box] == skin_class).mean())
    return out


def skin_quality(model: str | os.PathLike, parser: Any, data: str | os.PathLike, pairs: str | os.PathLike,
                 chip: tuple[int, int] = (150, 128), flip: bool = False, align: bool = True,
                 out: str | os.PathLike | None = None, batch_size: int = 64, progress: bool = True) -> dict[str, Any]:
    """The analysis of the module docstring; JSON (``skin``, ``norm``: quality_analysis each;
    ``skin_images``: skin statistics and the 5 lowest-skin photos), with ``out`` also written
    (atomically) with ``<stem>-skin.png``, the skin error-versus-reject plot."""
    dense = load_model(parser) if isinstance(parser, (str, os.PathLike)) else parser
    if "fcn" not in getattr(dense, "heads", []):
        raise FacemetricError(f"{parser}: not a dense model with a parsing head")
    pairs_path = Path(pairs)
    if not pairs_path.is_file() and (Path(data) / pairs_path).is_file():
        pairs_path = Path(data) / pairs_path
    pair_set = read_lfw_pairs(pairs_path, data)
    embedder = load_model(model, align=align)
    unique = sorted(set(pair_set.paths1) | set(pair_set.paths2))
    pos = {p: i for i, p in enumerate(unique)}
    r = embed_files(embedder, unique, flip=flip, batch_size=batch_size, skip_failures=False, progress=progress)
    skin = skin_fractions(dense, unique, chip, progress=progress)
    i1 = np.array([pos[p] for p in pair_set.paths1])
    i2 = np.array([pos[p] for p in pair_set.paths2])
    distance = getattr(embedder, "distance_kind", "squared_l2")
    common = dict(folds=pair_set.fold, distance=distance)
    report: dict[str, Any] = {
        "model": str(model), "parser": str(parser), "data": str(data), "pairs": str(pairs_path),
        "chip": [int(chip[0]), int(chip[1])], "align": bool(align), "flip": bool(flip),
        "num_images": len(unique), "num_pairs": int(len(i1)),
        "skin": quality_analysis(r.embeddings[i1], r.embeddings[i2], pair_set.issame, skin[i1], skin[i2], **common),
        "norm": quality_analysis(r.embeddings[i1], r.embeddings[i2], pair_set.issame, r.norms[i1], r.norms[i2], **common),
        "skin_images": {**_stats(skin), "lowest": [
            {"path": unique[j], "skin": float(skin[j])} for j in np.argsort(skin, kind="stable")[:5]]},
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        report["figure"] = out.stem + "-skin.png"
        error_reject_plot(report["skin"], out.with_name(out.stem + "-skin.png"),
                          title="visible skin in the chip as quality")
        atomic_write_bytes(out, json.dumps(report, indent=2).encode())
    return report


def skin_quality_summary(report: dict[str, Any]) -> str:
    """Two lines: each signal's Spearman correlation with correctness and accuracy after
    rejecting the 10 % lowest-quality pairs (vs random)."""
    lines = []
    for key in ("skin", "norm"):
        q = report[key]
        pt = next((p for p in q["curve"] if abs(p["reject_fraction"] - 0.1) < 1e-9), q["curve"][-1])
        rho = q.get("spearman")
        rho = "n/a" if rho is None else f"{rho:.3f}"
        lines.append(f"{key}: spearman(quality, correct)={rho}; accuracy {q['accuracy']:.4f} -> "
                     f"{pt['norm']['accuracy']:.4f} rejecting the lowest {pt['reject_fraction']:.0%} "
                     f"(random {pt['random']['accuracy']:.4f})")
    return "\n".join(lines)


__all__ = ["chip_box", "skin_fractions", "skin_quality", "skin_quality_summary"]
