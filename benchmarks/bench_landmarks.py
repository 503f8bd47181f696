"""The landmark table of issue 14: the learned 5-point model (``learned5``) against dlib's
5-point shape predictor on the lfw-5590 ``test`` split (1,439 photos), on detector boxes.

    python benchmarks/bench_landmarks.py --model runs/landmarks-5point [--boxes ssd-res10]
        [--annotations ../shared/data/lfw-5590/annotations.csv] [--limit N] [--json out.json]

Boxes: every photo goes through ``--boxes`` (default ``ssd-res10``; any
:data:`facemetric.align.DETECTORS` name, or ``labelled``); the detection overlapping the
labelled box most (IoU >= 0.3) is the face's box, and where the detector misses it the
labelled box stands in (counted). Detections are cached next to the training run's
(``--cache-dir``). dlib's predictor is also run on dlib's own HOG detector's boxes (the boxes it
was trained on; needs ``dlib-bin``), on the photos HOG finds, and the learned model is scored on
that same subset.

Scores (:mod:`facemetric.eval.landmarks`): NME = error / inter-ocular distance of the labelled
eye centres, failure = per-face NME > 0.1. dlib's model gives eye *corners* and the nose
*base*: it is scored on the two eye centres (mean of each eye's corners) only; the learned
model on those and on all five points. ``ms/face``: landmarks only (crop + network, or the
regression trees), one thread, after one warm-up face.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from facemetric.align.landmarks import build_landmarker
from facemetric.eval.landmarks import dlib5_eye_centres, eye_metrics, landmark_metrics
from facemetric.train.landmark_task import FaceSet, load_face_set

REPO = Path(__file__).resolve().parents[1]
ANNOTATIONS = REPO.parent / "shared" / "data" / "lfw-5590" / "annotations.csv"


def predict(landmarker, faces: FaceSet, idx: np.ndarray, boxes: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """``(points [len(idx), P, 2], seconds per face)``."""
    boxes = faces.boxes if boxes is None else boxes
    landmarker.predict(faces.images[idx[0]], boxes[idx[0]][None])  # warm-up
    out = []
    t0 = time.perf_counter()
    for i in idx:
        out.append(landmarker.predict(faces.images[i], boxes[i][None])[0])
    return np.stack(out), (time.perf_counter() - t0) / len(idx)


def dlib_landmarker():
    for name in ("dlib5-port", "dlib5"):
        try:
            return name, build_landmarker(name)
        except Exception as exc:  # noqa: BLE001 - report and try the next
            print(f"{name}: unavailable ({exc})")
    return None, None


def row(name: str, boxes: str, faces: int, eyes: dict, all5: dict | None, ms: float) -> dict:
    return {"model": name, "boxes": boxes, "faces": faces,
            "eyes_nme": eyes["nme"], "eyes_failure": eyes["failure_rate"],
            "nme5": None if all5 is None else all5["nme"],
            "failure5": None if all5 is None else all5["failure_rate"],
            "per_point5": None if all5 is None else {k: v["nme"] for k, v in all5["per_point"].items()},
            "ms_per_face": ms * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the learned model's run directory or landmark_model/")
    ap.add_argument("--boxes", default="ssd-res10")
    ap.add_argument("--annotations", default=str(ANNOTATIONS))
    ap.add_argument("--cache-dir", default=str(REPO / "runs" / "cache" / "landmarks"))
    ap.add_argument("--limit", type=int, default=None, help="first N test photos")
    ap.add_argument("--no-hog", action="store_true", help="skip dlib's HOG-box rows")
    ap.add_argument("--no-dlib", action="store_true", help="the learned model's rows only")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    data = {"annotations": args.annotations, "boxes": args.boxes, "detector_options": {}, "min_iou": 0.3}
    cache = Path(args.cache_dir)
    faces = load_face_set(data, "test", args.limit, cache)
    n = len(faces)
    every = np.arange(n)
    print(f"test photos: {n}, boxes: {args.boxes}, labelled box stood in for {faces.fallback} missed faces")
    rows = []
    for flip in (False, True):
        lm = build_landmarker("learned5", path=args.model, flip=flip)
        pts, sec = predict(lm, faces, every)
        name = "learned5" + (" + flip" if flip else "")
        rows.append(row(name, args.boxes, n, eye_metrics(pts, faces.truth), landmark_metrics(pts, faces.truth), sec))
        if flip:
            learned_flip = pts
    dname, dlm = (None, None) if args.no_dlib else dlib_landmarker()
    if dlm is not None:
        pts, sec = predict(dlm, faces, every)
        rows.append(row(dname, args.boxes, n, eye_metrics(dlib5_eye_centres(pts), faces.truth), None, sec))
    if not args.no_hog:
        try:
            hog = load_face_set({**data, "boxes": "dlib-hog", "detector_options": {"landmarks": None}},
                                "test", args.limit, cache)
        except Exception as exc:  # noqa: BLE001 - dlib-bin missing: say so, keep the rest
            print(f"dlib-hog rows skipped: {exc}")
        else:
            found = np.flatnonzero(hog.detected)
            print(f"dlib-hog found {len(found)} of {n} test faces")
            truth = faces.truth[found]
            if dlm is not None:
                pts, sec = predict(dlm, hog, found)
                rows.append(row(dname, "dlib-hog (found)", len(found), eye_metrics(dlib5_eye_centres(pts), truth),
                                None, sec))
            sub = learned_flip[found]
            rows.append(row("learned5 + flip", f"{args.boxes} (same photos)", len(found),
                            eye_metrics(sub, truth), landmark_metrics(sub, truth), float("nan")))

    print()
    print("| model | boxes | faces | NME eyes | failure eyes | NME 5 points | failure 5 points | ms/face |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        five = "–" if r["nme5"] is None else f"{r['nme5']:.4f}"
        fail5 = "–" if r["failure5"] is None else f"{r['failure5']:.4f}"
        ms = "–" if not np.isfinite(r["ms_per_face"]) else f"{r['ms_per_face']:.2f}"
        print(f"| {r['model']} | {r['boxes']} | {r['faces']} | {r['eyes_nme']:.4f} | {r['eyes_failure']:.4f} | "
              f"{five} | {fail5} | {ms} |")
    for r in rows:
        if r["per_point5"]:
            print(f"{r['model']} per point NME: " + ", ".join(f"{k} {v:.4f}" for k, v in r["per_point5"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"boxes": args.boxes, "fallback": faces.fallback, "rows": rows},
                                              indent=2, default=float))


if __name__ == "__main__":
    main()
