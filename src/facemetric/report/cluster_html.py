"""An HTML page of face clusters: one thumbnail grid per cluster (largest first, singletons
last), thumbnails written as small JPEGs into ``<out>/thumbs/``, and optionally the clustering
metrics against known labels. Every file is written atomically (:mod:`facemetric.io`): a
killed run leaves the previous page or thumbnail, never a torn one. Shown paths that are not
valid UTF-8 are escaped (``\\xNN``)."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facemetric.data.image_io import load_image
from facemetric.io import atomic_write, atomic_write_text

THUMB_SIZE = 96
METRIC_KEYS = ("pairwise_precision", "pairwise_recall", "pairwise_f1", "bcubed_precision",
               "bcubed_recall", "bcubed_f1", "nmi", "num_clusters", "num_singletons", "num_classes",
               "num_points")


def cluster_order(labels: Any) -> list[int]:
    """Cluster ids, largest first (ties: smaller id first); singletons always last."""
    labels = np.asarray(labels)
    ids, sizes = np.unique(labels, return_counts=True)
    order = sorted(zip(ids.tolist(), sizes.tolist(), strict=True), key=lambda x: (x[1] == 1, -x[1], x[0]))
    return [c for c, _ in order]


def write_thumbnail(src: str | os.PathLike, dst: Path, size: int = THUMB_SIZE) -> bool:
    """A JPEG thumbnail of ``src`` fitting ``size`` x ``size``; False when it cannot be read."""
    loaded = load_image(src)  # the one loader: EXIF orientation, 16-bit, size limits
    if loaded.skip is not None:
        return False
    im = Image.fromarray(loaded.array)
    im.thumbnail((size, size))
    try:
        atomic_write(dst, lambda fh: im.save(fh, "JPEG", quality=80))
    except (OSError, ValueError):
        return False
    return True


def write_cluster_report(
    out: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    labels: Any,
    *,
    folder: str | os.PathLike | None = None,
    metrics: Mapping[str, Any] | None = None,
    title: str = "Face clusters",
    settings: str = "",
    thumb_size: int = THUMB_SIZE,
) -> Path:
    """Write ``out/index.html`` and ``out/thumbs/NNNNNN.jpg``; returns the page's path.
    ``folder``: shown paths are made relative to it."""
    out = Path(out)
    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels)
    if len(paths) != labels.shape[0]:
        raise ValueError(f"paths ({len(paths)}) and labels ({labels.shape[0]}) differ in length")
    names = []
    for i, p in enumerate(paths):
        ok = write_thumbnail(p, thumbs / f"{i:06d}.jpg", thumb_size)
        names.append(f"thumbs/{i:06d}.jpg" if ok else None)

    def shown(p: str | os.PathLike) -> str:
        if folder is not None:
            try:
                p = Path(p).relative_to(folder)
            except ValueError:
                pass
        return os.fsencode(p).decode("utf-8", errors="backslashreplace")

    sections = []
    for c in cluster_order(labels):
        members = np.flatnonzero(labels == c).tolist()
        cells = []
        for i in members:
            label = html.escape(shown(paths[i]))
            img = (f'<img src="{names[i]}" alt="{label}" title="{label}">' if names[i]
                   else f'<span class="missing" title="{label}">?</span>')
            cells.append(f"<figure>{img}<figcaption>{label}</figcaption></figure>")
        kind = "singleton" if len(members) == 1 else f"{len(members)} photos"
        sections.append(f'<section><h2>cluster {c} <small>({kind})</small></h2><div class="grid">{"".join(cells)}</div></section>')

    metrics_html = ""
    if metrics:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{metrics[k]:.4f}</td></tr>" if isinstance(metrics[k], float)
            else f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(metrics[k]))}</td></tr>"
            for k in METRIC_KEYS if k in metrics
        )
        metrics_html = f"<h2>Against the folder labels</h2><table>{rows}</table>"
    n_clusters = int(np.unique(labels).size)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
td {{ border: 1px solid #ccc; padding: 4px 8px; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 6px; }}
figure {{ margin: 0; width: {thumb_size}px; text-align: center; }}
figcaption {{ font-size: 0.65em; overflow-wrap: anywhere; }}
.missing {{ display: inline-block; width: {thumb_size}px; height: {thumb_size}px; background: #eee; }}
section {{ border-top: 1px solid #ddd; }} h2 small {{ color: #777; font-weight: normal; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(paths)} photos in {n_clusters} clusters. {html.escape(settings)}</p>
{metrics_html}
{"".join(sections)}
</body></html>
"""
    return atomic_write_text(out / "index.html", page)


__all__ = ["cluster_order", "write_cluster_report", "write_thumbnail"]
