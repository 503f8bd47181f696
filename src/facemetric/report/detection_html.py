"""Face detection over photos and folders: ``detections.json`` (JSON first) and an HTML page of
the photos with their boxes drawn (``facemetric detect``).

:func:`collect_photos` turns command-line inputs into photo paths: a file is taken as given
(each real file once), a folder is searched recursively
(:func:`facemetric.data.image_io.find_images`; entries that cannot be photos are skipped with
their reason). :func:`detect_photos` decodes them ``batch_size`` at a time with the one loader
(:func:`facemetric.data.image_io.load_image`; unreadable photos are skipped with their reason),
runs any detector with ``detect(list of RGB uint8 arrays) -> list of faces per photo`` (the
:data:`facemetric.align.DETECTORS` backends) and writes, atomically, into ``out``:

* ``detections.json``: ``{"detector", "settings", "counts": {"photos", "with_faces", "faces",
  "skipped"}, "seconds", "photos_per_second", "photos": [{"path", "width", "height", "faces":
  [{"box": [x0, y0, x1, y1] (pixels, x1/y1 exclusive), "score", "landmarks" (when the
  detector gives them: [[x, y], ...]), "layout", "source" (only for a face not found by the detector itself, see
  :mod:`facemetric.align.fallback`)}], "image"}], "skipped": {path: reason}}``;
* ``images/NNNNNN.jpg``: each photo (longer side at most ``image_size`` px) with its boxes
  (green, score above the box) and landmarks (red dots) drawn;
* ``index.html``: the annotated photos in a grid, each with its name and scores, largest
  face first; the skipped photos with their reasons;
* with ``chip`` (a function ``(photo RGB uint8, face) -> chip RGB uint8``, e.g. an alignment
  template: ``facemetric align``): ``chips/NNNNNN_K.png``, the aligned chip of face ``K`` of
  photo ``NNNNNN``, named by the face's ``"chip"`` entry in the JSON and shown on the page.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from facemetric.data.image_io import display_path, file_skip, find_images, is_valid_name, load_image
from facemetric.errors import FacemetricError
from facemetric.io import atomic_write, atomic_write_text

__all__ = ["DetectionJob", "collect_photos", "detect_photos", "draw_faces", "write_detection_page"]

IMAGE_SIZE = 480
_IMAGE_NAME = re.compile(r"^\d{6}\.jpg$")
_CHIP_NAME = re.compile(r"^\d{6}_\d+\.png$")


def collect_photos(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], dict[str, str]]:
    """Photo paths from files and folders, in the order given (folders: sorted paths), each
    real file once; and ``{printable path: reason}`` for folder entries that cannot be photos.
    A missing input, or one that is neither a file nor a folder, is a one-line error."""
    if not inputs:
        raise FacemetricError("detect: give photos or folders of photos")
    photos: list[Path] = []
    skipped: dict[str, str] = {}
    seen: set[tuple[int, int]] = set()

    def add(path: Path) -> None:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            photos.append(path)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found, bad = find_images(path)
            for p in found:
                add(p)
            skipped.update({display_path(p): s.reason for p, s in bad.items()})
            continue
        skip = file_skip(path)
        if skip is not None:
            raise FacemetricError(f"{display_path(path)}: {skip.reason}")
        if not is_valid_name(path):
            skipped[display_path(path)] = "name is not valid UTF-8"
            continue
        add(path)
    if not photos:
        where = ", ".join(display_path(p) for p in inputs)
        raise FacemetricError(f"{where}: no photos found (image files: .jpg, .png, ...)")
    return photos, skipped


@dataclass
class DetectionJob:
    """What :func:`detect_photos` found: ``records`` (one dict per photo, the JSON's
    ``photos``), ``skipped`` and the timing."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "photos": len(self.records),
            "with_faces": sum(1 for r in self.records if r["faces"]),
            "faces": sum(len(r["faces"]) for r in self.records),
            "skipped": len(self.skipped),
        }


def _face_json(face: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"box": [round(float(v), 2) for v in face.box],
                           "score": round(float(face.score), 6)}
    if getattr(face, "source", "detector") != "detector":  # a fallback: how it was found
        out["source"] = face.source
    if getattr(face, "landmarks", None) is not None:
        out["landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks]
        out["layout"] = face.layout
    return out


def draw_faces(image: np.ndarray, faces: Sequence[dict[str, Any]], max_side: int = IMAGE_SIZE) -> Image.Image:
    """``image`` (RGB uint8) scaled so that its longer side is at most ``max_side``, with each
    face's box (green), score and landmarks (red) drawn."""
    im = Image.fromarray(image)
    scale = min(1.0, max_side / max(im.size))
    if scale < 1.0:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    draw = ImageDraw.Draw(im)
    width = max(2, round(max(im.size) / 200))
    for face in faces:
        x0, y0, x1, y1 = (v * scale for v in face["box"])
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(0, 230, 0), width=width)
        label = f"{face['score']:.2f}"
        ty = y0 - 12 if y0 >= 12 else y1 + 1
        draw.rectangle((x0, ty, x0 + 6 * len(label) + 3, ty + 11), fill=(0, 230, 0))
        draw.text((x0 + 2, ty), label, fill=(0, 0, 0))
        for x, y in face.get("landmarks") or []:
            r = max(1.5, width * 0.8)
            draw.ellipse((x * scale - r, y * scale - r, x * scale + r, y * scale + r), fill=(255, 40, 40))
    return im


def _chunks(items: Sequence[Path], size: int) -> Iterable[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def detect_photos(
    photos: Sequence[Path],
    detector: Any,
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    skipped: dict[str, str] | None = None,
    settings: dict[str, Any] | None = None,
    html_page: bool = True,
    progress: bool = True,
    chip: Callable[[np.ndarray, Any], np.ndarray] | None = None,
) -> DetectionJob:
    """Detect faces in ``photos`` (see the module docstring); returns the :class:`DetectionJob`
    after writing ``out/detections.json`` (and ``out/index.html`` + ``out/images/`` with
    ``html_page``)."""
    if batch_size < 1:
        raise FacemetricError(f"--batch-size: expected a positive integer, got {batch_size}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FacemetricError(f"{display_path(out)}: --out exists and is not a folder")
    job = DetectionJob(skipped=dict(skipped or {}))
    images_dir = out / "images"
    chips_dir = out / "chips"
    written: set[str] = set()
    chips_written: set[str] = set()
    columns = (TextColumn("detecting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    start = time.perf_counter()
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task("detect", total=len(photos))
        for chunk in _chunks(photos, batch_size):
            arrays, names = [], []
            for path in chunk:
                loaded = load_image(path, "RGB")
                if loaded.skip is not None:
                    job.skipped[display_path(path)] = loaded.skip.reason
                else:
                    arrays.append(loaded.array)
                    names.append(path)
            found = detector.detect(arrays) if arrays else []
            for path, image, faces in zip(names, arrays, found, strict=True):
                record: dict[str, Any] = {
                    "path": display_path(path), "width": int(image.shape[1]),
                    "height": int(image.shape[0]), "faces": [_face_json(f) for f in faces],
                }
                if chip is not None:
                    for k, (face, entry) in enumerate(zip(faces, record["faces"], strict=True)):
                        name = f"{len(job.records):06d}_{k}.png"
                        pic = Image.fromarray(chip(image, face))
                        atomic_write(chips_dir / name, lambda fh, pic=pic: pic.save(fh, "PNG"))
                        chips_written.add(name)
                        entry["chip"] = f"chips/{name}"
                if html_page:
                    name = f"{len(job.records):06d}.jpg"
                    pic = draw_faces(image, record["faces"])
                    atomic_write(images_dir / name, lambda fh, pic=pic: pic.save(fh, "JPEG", quality=85))
                    written.add(name)
                    record["image"] = f"images/{name}"
                job.records.append(record)
            bar.advance(task, len(chunk))
    job.seconds = time.perf_counter() - start
    if not job.records:  # nothing readable: an error, and nothing written
        first, why = next(iter(job.skipped.items()))
        more = f" (and {len(job.skipped) - 1} more)" if len(job.skipped) > 1 else ""
        raise FacemetricError(f"no readable photo: {first}: {why}{more}")
    if html_page and images_dir.is_dir():  # drawings of an earlier run with more photos
        for entry in os.scandir(images_dir):
            if _IMAGE_NAME.match(entry.name) and entry.name not in written:
                os.unlink(entry.path)
    if chip is not None and chips_dir.is_dir():  # chips of an earlier run with more faces
        for entry in os.scandir(chips_dir):
            if _CHIP_NAME.match(entry.name) and entry.name not in chips_written:
                os.unlink(entry.path)
    report = {
        "detector": repr(detector),
        "settings": dict(settings or {}),
        "counts": job.counts,
        "seconds": round(job.seconds, 3),
        "photos_per_second": round(len(job.records) / job.seconds, 2) if job.seconds > 0 else None,
        "photos": job.records,
        "skipped": job.skipped,
    }
    atomic_write_text(out / "detections.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    if html_page:
        write_detection_page(out / "index.html", report)
    return job


def write_detection_page(path: str | os.PathLike, report: dict[str, Any], title: str = "Face detections") -> Path:
    """The HTML page of a ``detections.json`` report (its ``image`` drawings must exist)."""
    c = report["counts"]
    cells = []
    for r in report["photos"]:
        name = html.escape(r["path"])
        scores = ", ".join(f"{f['score']:.2f}" for f in r["faces"]) or "no face"
        cls = "" if r["faces"] else ' class="none"'
        chips = "".join(f'<img class="chip" src="{html.escape(f["chip"])}" alt="chip {k}">'
                        for k, f in enumerate(r["faces"]) if "chip" in f)
        cells.append(
            f'<figure{cls}><img src="{html.escape(r["image"])}" alt="{name}" title="{name}">{chips}'
            f"<figcaption>{name}<br>{len(r['faces'])} face(s): {html.escape(scores)}</figcaption></figure>"
        )
    skipped = "".join(f"<li>{html.escape(p)}: {html.escape(why)}</li>" for p, why in report["skipped"].items())
    skipped_html = f"<h2>Skipped ({len(report['skipped'])})</h2><ul>{skipped}</ul>" if skipped else ""
    settings = ", ".join(f"{k} {v}" for k, v in report["settings"].items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; max-width: 320px; text-align: center; }}
figure img {{ max-width: 320px; max-height: 320px; }}
figure.none img {{ outline: 3px solid #d33; }}
figure img.chip {{ width: 96px; height: 96px; margin: 2px; }}
figcaption {{ font-size: 0.7em; overflow-wrap: anywhere; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{c['photos']} photos, {c['with_faces']} with a face, {c['faces']} faces, {c['skipped']} skipped.
Detector: {html.escape(report['detector'])}{'; ' + html.escape(settings) if settings else ''}.
Boxes in green with their scores; photos without a face outlined in red.</p>
<div class="grid">{''.join(cells)}</div>
{skipped_html}
</body></html>
"""
    return atomic_write_text(path, page)
