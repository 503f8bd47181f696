"""``facemetric detect``: faces in photos and folders -> ``detections.json`` (boxes, scores,
landmarks when the detector gives them) and an HTML page of the photos with their boxes drawn.
``facemetric align``: the same, plus an aligned chip of every face (``chips/``; the dlib-150 or
arcface-112 template), the SSDs' boxes given landmarks by a landmark model (``dlib5-port`` by
default). Thin wrappers over :func:`facemetric.align.build_detector`,
:func:`facemetric.align.chips.make_chip` and
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
    from facemetric.align import build_detector
    from facemetric.report.detection_html import collect_photos, detect_photos

    opts = _detector_options(detector, batch_size, threshold=threshold, device=device, model=model,
                             landmarks=landmarks)
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


def _detector_options(detector: str, batch_size: int, **given: object) -> dict[str, object]:
    """The options given on the command line that ``detector``'s factory takes (one line naming
    an option it does not take; an unknown detector: one line listing the known ones)."""
    from facemetric.align import DETECTORS

    if batch_size < 1:
        raise FacemetricError(f"--batch-size: expected a positive integer, got {batch_size}")
    factory = DETECTORS.get(detector)
    accepted = inspect.signature(factory).parameters
    opts: dict[str, object] = {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in accepted:
            raise FacemetricError(f"--{name}: not an option of the {detector} detector")
        opts[name] = value
    if "batch_size" in accepted:
        opts["batch_size"] = batch_size
    return opts


def align(
    photos: Annotated[list[Path], typer.Argument(help="photos and/or folders of photos (searched recursively)", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (detections.json, chips/, index.html, images/)")] = Path("aligned"),
    template: Annotated[str, typer.Option(help="chip template: dlib-150 (dlib's chip) or arcface-112")] = "dlib-150",
    size: Annotated[int | None, typer.Option(help="chip side in pixels (default: the template's)")] = None,
    detector: Annotated[str, typer.Option("--detector", help="ssd-res10, dlib-hog, center or ssd (with --model)")] = "ssd-res10",
    model: Annotated[str | None, typer.Option("--model", "-m", help="with --detector ssd: the trained detector.pt or its run directory")] = None,
    landmarks: Annotated[str | None, typer.Option(help="SSD detectors: the landmark model (default dlib5-port; learned5 needs path= via Python); dlib-hog: 5 or 68")] = None,
    threshold: Annotated[float | None, typer.Option(help="SSD detectors: keep faces scoring above this (default 0.5)")] = None,
    batch_size: Annotated[int, typer.Option(help="photos per forward pass")] = 32,
    device: Annotated[str | None, typer.Option(help="SSD detectors: cpu, cuda ... (default: cuda when available)")] = None,
    all_faces: Annotated[bool, typer.Option("--all-faces/--one-face", help="a chip for every detected face, or (default) the one face the fallback policy takes from each photo: detected, found in a zoomed-out copy, or the whole crop-shaped photo")] = False,
    select: Annotated[str, typer.Option(help="--one-face: which of several faces (largest, center, score)")] = "largest",
    html_page: Annotated[bool, typer.Option("--html/--no-html", help="write index.html with the boxes and chips")] = True,
    quiet: QuietOpt = False,
) -> None:
    """Detect and align faces: a chip per face (chips/NNNNNN_K.png), boxes, scores and
    landmarks as JSON, and an HTML page with the boxes and chips.

    By default each photo gives one face, found as the pretrained card finds it (the fallback
    policy of facemetric.align.fallback; the JSON's "source" says when it was not a plain
    detection); --all-faces aligns every detection instead."""
    from facemetric.align import TEMPLATES, build_detector
    from facemetric.align.chips import make_chip
    from facemetric.align.fallback import FallbackPolicy, PolicyDetector
    from facemetric.align.landmarks import build_landmarker
    from facemetric.inference.pretrained import DLIB_RESNET_V1_ALIGNMENT
    from facemetric.report.detection_html import collect_photos, detect_photos

    if template not in TEMPLATES:
        raise FacemetricError(f"--template: expected one of {', '.join(TEMPLATES)}, got {template!r}")
    if size is not None and not 16 <= size <= 1024:
        raise FacemetricError(f"--size: expected an integer from 16 to 1024, got {size}")
    if select not in ("largest", "center", "score"):
        raise FacemetricError(f"--select: expected one of largest, center, score, got {select!r}")
    if landmarks is None and detector in ("ssd-res10", "res10", "ssd"):
        landmarks = "dlib5-port"
    opts = _detector_options(detector, batch_size, threshold=threshold, device=device, model=model,
                             landmarks=landmarks)
    policy = None if all_faces else FallbackPolicy(
        select=select,
        # dlib's predictor was trained on HOG boxes: res10 boxes are mapped to them (the card's)
        landmark_box=DLIB_RESNET_V1_ALIGNMENT["landmark_box"].get(detector)
        if landmarks == "dlib5-port" else None,
    )
    paths, skipped = collect_photos(photos)
    if policy is None:
        det = build_detector(detector, **opts)
    else:  # the policy places the landmarks itself (on its landmark boxes)
        det = PolicyDetector(build_detector(detector, **{k: v for k, v in opts.items() if k != "landmarks"}),
                             build_landmarker(landmarks) if landmarks else None, policy)
    settings = {"detector": detector, "template": template, "size": size,
                "faces": "all" if all_faces else f"one ({select})",
                **{k: v for k, v in opts.items() if k != "batch_size"}}

    def chip(image, face):
        if face.landmarks is None:
            raise FacemetricError(f"--detector {detector}: gives no landmarks; pass --landmarks")
        return make_chip(image, face, template, size)

    job = detect_photos(paths, det, out, batch_size=batch_size, skipped=skipped, settings=settings,
                        html_page=html_page, progress=not quiet, chip=chip)
    for p, why in job.skipped.items():
        typer.echo(f"skipped {p}: {why}")
    c = job.counts
    typer.echo(f"{c['photos']} photos, {c['with_faces']} with a face, {c['faces']} chips, {c['skipped']} skipped")
    typer.echo(f"wrote {out / 'chips'} and {out / 'detections.json'}")


__all__ = ["align", "detect"]
