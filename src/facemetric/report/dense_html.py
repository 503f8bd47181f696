"""Pictures of pixel-level results: colour label maps, overlays, a figure grid (photo, truth,
prediction, side outputs) as one PNG, and the HTML page of ``facemetric parse``.

Colours: background black, skin orange, hair blue (:data:`PALETTE`); overlays blend the
colour over the photo with ``alpha`` where the label is not background.
"""

from __future__ import annotations

import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facemetric.io import atomic_write_bytes

#: label -> RGB (background, skin, hair)
PALETTE = np.array([[0, 0, 0], [255, 150, 40], [40, 110, 255]], dtype=np.uint8)


def colorize(labels: np.ndarray, palette: np.ndarray = PALETTE) -> np.ndarray:
    """uint8 ``[H, W]`` labels -> uint8 ``[H, W, 3]`` colours."""
    lab = np.asarray(labels)
    return palette[np.clip(lab, 0, len(palette) - 1)]


def overlay(photo: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The photo with the label colours blended in where the label is not background."""
    p = np.asarray(photo, dtype=np.float32)
    c = colorize(labels).astype(np.float32)
    mask = (np.asarray(labels) > 0)[..., None]
    out = np.where(mask, (1 - alpha) * p + alpha * c, p)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def grey(prob: np.ndarray) -> np.ndarray:
    """A 0..1 map as a dark-on-white uint8 RGB picture (edges/skeletons drawn black)."""
    g = np.clip(np.rint(255 * (1 - np.asarray(prob, dtype=np.float32))), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, 2)


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    a = np.asarray(array)
    Image.fromarray(a, "L" if a.ndim == 2 else "RGB").save(buf, format="PNG")
    return buf.getvalue()


def figure_grid(rows: Sequence[Sequence[np.ndarray]], columns: Sequence[str], path: str | os.PathLike,
                cell: int = 96, gap: int = 2) -> None:
    """One PNG of ``rows`` x ``columns`` pictures (uint8 RGB, resized to ``cell`` px), a caption
    row on top; written atomically."""
    from PIL import ImageDraw

    n, m = len(rows), len(columns)
    head = 14
    canvas = Image.new("RGB", (m * (cell + gap) + gap, head + n * (cell + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(columns):
        draw.text((gap + j * (cell + gap) + 2, 1), str(name)[: cell // 6], fill=(0, 0, 0))
    for i, row in enumerate(rows):
        for j, pic in enumerate(row):
            img = Image.fromarray(np.asarray(pic)).resize((cell, cell), Image.BILINEAR)
            canvas.paste(img, (gap + j * (cell + gap), head + gap + i * (cell + gap)))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(path, buf.getvalue())


def parse_page(title: str, items: Sequence[dict[str, Any]], class_names: Sequence[str]) -> str:
    """The HTML page of ``facemetric parse``: per photo its picture files and class shares.
    ``items``: ``{"photo", "files": {caption: relative path}, "shares": {class: fraction}}``."""
    legend = "".join(
        f'<span style="background:rgb{tuple(int(v) for v in PALETTE[i])};color:white;padding:2px 6px">'
        f"{html.escape(n)}</span> " for i, n in enumerate(class_names) if i < len(PALETTE)
    )
    blocks = []
    for it in items:
        figs = "".join(
            f'<figure><img src="{html.escape(src)}" alt="{html.escape(cap)}"><figcaption>{html.escape(cap)}</figcaption></figure>'
            for cap, src in it["files"].items()
        )
        shares = ", ".join(f"{html.escape(k)} {v:.1%}" for k, v in it["shares"].items())
        blocks.append(f'<section><h2>{html.escape(it["photo"])}</h2><p>{shares}</p><div class="figs">{figs}</div></section>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.figs {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; text-align: center; }} img {{ width: 200px; image-rendering: pixelated; }}
figcaption {{ font-size: 0.8em; }} h2 {{ font-size: 1em; margin-top: 1.5em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{legend}</p>
{''.join(blocks)}
</body></html>
"""




def _unique_stems(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        stem = os.path.splitext(os.path.basename(n))[0] or "photo"
        k = seen.get(stem, 0)
        seen[stem] = k + 1
        out.append(stem if k == 0 else f"{stem}-{k + 1}")
    return out


def write_parse_folder(out: str | os.PathLike, names: Sequence[str], photos: Sequence[np.ndarray],
                       results: Sequence[dict[str, Any]], class_names: Sequence[str],
                       title: str = "facemetric parse") -> dict[str, Any]:
    """Write per photo ``<stem>-labels.png`` (8-bit grey, value = class index),
    ``<stem>-color.png``, ``<stem>-overlay.png`` (and ``<stem>-edges.png`` /
    ``<stem>-skeleton.png`` when the model has those heads), then ``parse.json`` (per photo: the
    files and each class's pixel share) and ``index.html``. Returns the JSON object."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries, items = [], []
    for name, stem, photo, r in zip(names, _unique_stems(names), photos, results, strict=False):
        files: dict[str, str] = {"photo": f"{stem}-photo.png"}
        pics: dict[str, np.ndarray] = {"photo": np.asarray(photo)}
        shares: dict[str, float] = {}
        if "labels" in r:
            lab = r["labels"]
            counts = np.bincount(lab.ravel(), minlength=len(class_names))[: len(class_names)]
            shares = {c: float(v) / lab.size for c, v in zip(class_names, counts, strict=False)}
            files.update({"labels": f"{stem}-labels.png", "colour": f"{stem}-color.png",
                          "overlay": f"{stem}-overlay.png"})
            pics.update({"labels": lab, "colour": colorize(lab), "overlay": overlay(photo, lab)})
        if "edges" in r:
            files["edges"] = f"{stem}-edges.png"
            pics["edges"] = grey(r["edges"])
        if "skeleton" in r:
            files["skeleton"] = f"{stem}-skeleton.png"
            pics["skeleton"] = grey(r["skeleton"])
        for key, rel in files.items():
            atomic_write_bytes(out / rel, png_bytes(pics[key]))
        entries.append({"photo": str(name), "size": [int(photo.shape[0]), int(photo.shape[1])],
                        "files": files, "shares": shares})
        items.append({"photo": str(name), "files": {k: v for k, v in files.items() if k != "labels"},
                      "shares": shares})
    report = {"class_names": list(class_names), "photos": entries, "html": "index.html"}
    atomic_write_bytes(out / "parse.json", json.dumps(report, indent=2).encode())
    atomic_write_bytes(out / "index.html", parse_page(title, items, class_names).encode())
    return report


__all__ = [
    "PALETTE", "colorize", "figure_grid", "grey", "overlay", "parse_page", "png_bytes", "write_parse_folder",
]
