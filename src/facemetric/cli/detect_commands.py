"""``facemetric detect``: faces in photos and folders -> ``detections.json`` (boxes, scores,
landmarks when the detector gives them) and an HTML page of the photos with their boxes drawn.
A thin wrapper over :func:`facemetric.align.build_detector` and
:func:`facemetric.report.detection_html.detect_photos`; registered in :mod:`facemetric.cli.main`."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from facemetric.cli.options import QuietOpt
from facemetric.errors import FacemetricError


def detect(
    photos: Annotated[list[Path], typer.Argument(help="photos and/or folders of photos (searched recursively)", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (detections.json, index.html, images/)")] = Path("detections"),
    detector: Annotated[str, typer.Option("--detector", help="ssd-res10, dlib-hog, center or ssd (with --model)")] = "ssd-res10",
    model: Annotated[str | None, typer.Option("--model", "-m", help="with --detector ssd: the trained detector.pt or its run directory")] = None,
    landmarks: Annotated[str | None, typer.Option(help="SSD detectors: a landmark model placing points in each box (dlib5-port, dlib68-port, learned5 ...); dlib-hog: 5 or 68")] = None,
    threshold: Annotated[float | None, typer.Option(help="SSD detectors: keep faces scoring above this (default 0.5); dlib-hog: its adjust_threshold")] = None,
    batch_size: Annotated[int, typer.Option(help="photos per forward pass")] = 32,
    device: Annotated[str | None, typer.Option(help="SSD detectors: cpu, cuda, cuda:1 ... (default: cuda when available)")] = None,
    html_page: Annotated[bool, typer.Option("--html/--no-html", help="write index.html with the boxes drawn")] = True,
    quiet: QuietOpt = False,
) -> None:
    """Detect faces: boxes (pixels) and scores as JSON, and an HTML page with the boxes drawn.

    Unreadable photos are skipped and listed with their reasons (in the JSON too)."""
    from facemetric.align import DETECTORS, build_detector
    from facemetric.report.detection_html import collect_photos, detect_photos

    if batch_size < 1:
        raise FacemetricError(f"--batch-size: expected a positive integer, got {batch_size}")
    factory = DETECTORS.get(detector)  # unknown names: one line listing the known ones
    accepted = inspect.signature(factory).parameters
    opts: dict[str, object] = {}
    for name, value in (("threshold", threshold), ("device", device), ("model", model),
                        ("landmarks", landmarks)):
        if value is None:
            continue
        if name not in accepted:
            raise FacemetricError(f"--{name}: not an option of the {detector} detector")
        opts[name] = value
    if "batch_size" in accepted:
        opts["batch_size"] = batch_size
    paths, skipped = collect_photos(photos)  # bad inputs fail before the model loads
    det = build_detector(detector, **opts)
    settings = {"detector": detector, **{k: v for k, v in opts.items() if k != "batch_size"}}
    job = detect_photos(paths, det, out, batch_size=batch_size, skipped=skipped, settings=settings,
                        html_page=html_page, progress=not quiet)
    for p, why in job.skipped.items():
        typer.echo(f"skipped {p}: {why}")
    c = job.counts
    rate = f" ({c['photos'] / job.seconds:.1f} photos/s)" if job.seconds > 0 else ""
    typer.echo(f"{c['photos']} photos, {c['with_faces']} with a face, {c['faces']} faces, "
               f"{c['skipped']} skipped{rate}")
    typer.echo(f"wrote {out / 'detections.json'}" + (f" and {out / 'index.html'}" if html_page else ""))


__all__ = ["detect"]
