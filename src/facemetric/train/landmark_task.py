"""Training task ``landmarks``: the learned 5-point model (:mod:`facemetric.align.landmark_net`)
on lfw-5590 (``facemetric train --config configs/landmarks-5point.yaml``).

>>> from facemetric.train.landmark_task import run_landmark_task
>>> result = run_landmark_task("configs/landmarks-5point.yaml", run_dir="runs/lm")  # doctest: +SKIP
>>> result.final["test"]["nme"]                                                     # doctest: +SKIP

Data: the ``train`` split of ``data.annotations`` (lfw-5590's ``annotations.csv``, read by
:func:`facemetric.data.face_boxes.read_face_boxes`) for training, its ``test`` split for the
test metrics (:mod:`facemetric.eval.landmarks`: NME by inter-ocular distance, failure rate
``> eval.threshold``, per point). Each photo is decoded once. The crop of every face is
defined by a box (:func:`~facemetric.align.landmark_net.crop_matrix`): ``data.boxes:
labelled`` uses the hand-labelled box; a detector name (``ssd-res10``, ``dlib-hog``, any
:data:`facemetric.align.DETECTORS` name, options in ``data.detector_options``) runs that
detector once per photo and keeps the detection that overlaps the labelled box most (IoU
``>= data.min_iou``); a photo where it finds none keeps the labelled box and is counted
(``fallback_boxes``). Detector boxes are cached as JSON in ``data.cache_dir`` (keyed by
detector, options and the annotation file), so later runs reuse them.

Training: each epoch visits the training faces in a seeded random order with the box jittered
(``augment.shift`` of the box side, crop scale ``1 +- augment.scale``, rotation ``+-
augment.angle`` degrees), a horizontal flip with probability 1/2 (left/right points swapped)
and brightness/contrast jitter ``+- augment.color``; the loss is the mean over faces and
points of ``|y - g|_1 / d`` in crop units (``d``: the face's inter-ocular distance in the same
units), AdamW with a cosine schedule (``schedule.warmup_epochs`` linear warm-up). Every
random draw of epoch ``e`` comes from generators seeded with ``(seed, e)``, so ``--resume``
(from the newest checkpoint in ``<run>/checkpoints``) continues the same run. The network
starts from the training set's mean shape, or with ``model.init`` (a trained landmark model's
run directory or artifact, same network options and margin) from that model's weights (e.g.
fine-tuning a model trained on labelled boxes to a detector's boxes).

Run directory: ``config.yaml``, ``run.json``, ``metrics.jsonl`` (``split: train`` per epoch,
``split: test`` every ``train.eval_every`` epochs and at the end), ``checkpoints/``,
``report.md``, ``report.html`` (with ``test_examples.png``: test faces with the labelled
points in green and the predictions in red, worst first) and the artifact
``landmark_model/`` (what ``build_landmarker("learned5", path=RUN)`` loads).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from facemetric.align.backends import build_detector
from facemetric.align.landmark_net import (
    ARTIFACT_DIR,
    LandmarkNet,
    crop_face,
    flip_units,
    from_crop_units,
    load_landmark_model,
    normalise_crops,
    predict_units,
    save_landmark_model,
    to_crop_units,
)
from facemetric.data.face_boxes import FaceBoxRecord, read_face_boxes
from facemetric.data.image_io import load_image
from facemetric.errors import ConfigError, FacemetricError
from facemetric.eval.landmarks import EYES, landmark_metrics
from facemetric.io import atomic_torch_save, atomic_write_bytes
from facemetric.report.html import render_report
from facemetric.train.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
)
from facemetric.train.config import apply_overrides, read_yaml, resolve_paths
from facemetric.train.progress import TrainProgress
from facemetric.train.run_dir import RunDir, default_run_path, saved_config
from facemetric.train.schedules import warmup_cosine_lr
from facemetric.train.trainer import resolve_device

DEFAULTS: dict[str, Any] = {
    "task": "landmarks",
    "name": "landmarks-5point",
    "seed": 0,
    "data": {
        "annotations": None,
        "boxes": "labelled",
        "detector_options": {},
        "min_iou": 0.3,
        "cache_dir": None,
        "limit": None,
        "test_limit": None,
    },
    "model": {"width": 16, "size": 64, "margin": 0.25, "dropout": 0.1, "init": None},
    "augment": {"shift": 0.05, "scale": 0.1, "angle": 10.0, "flip": True, "color": 0.2},
    "optimizer": {"lr": 2e-3, "weight_decay": 1e-4},
    "schedule": {"warmup_epochs": 1.0},
    "train": {"epochs": 30, "batch_size": 64, "device": "auto", "keep_checkpoints": 2, "eval_every": 5,
              "threads": 0},
    "eval": {"flip": True, "threshold": 0.1},
}

_PATHS = (("data", "annotations"), ("data", "cache_dir"), ("model", "init"))


def _fail(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {value!r}")


def _int(lo: int, none: bool = False):
    def check(key: str, v: Any) -> Any:
        if v is None and none:
            return None
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise _fail(key, f"an integer >= {lo}" + (" or null" if none else ""), v)
        return v
    return check


def _num(lo: float, hi: float = math.inf, lo_open: bool = False):
    def check(key: str, v: Any) -> float:
        try:
            x = float(v) if not isinstance(v, bool) and v is not None else math.nan
        except (TypeError, ValueError):
            x = math.nan
        if not (math.isfinite(x) and (x > lo if lo_open else x >= lo) and x <= hi):
            raise _fail(key, f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}]", v)
        return x
    return check


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _fail(key, "true or false", v)
    return v


def _str(key: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _fail(key, "a non-empty string", v)
    return v


def _path(key: str, v: Any) -> Any:
    if v is not None and (not isinstance(v, str) or not v.strip()):
        raise _fail(key, "a path", v)
    return v


def _mapping(key: str, v: Any) -> dict:
    if not isinstance(v, dict):
        raise _fail(key, "a mapping of options", v)
    return v


def _size(key: str, v: Any) -> int:
    v = _int(32)(key, v)
    if v % 32:
        raise _fail(key, "a multiple of 32", v)
    return v


def _task(key: str, v: Any) -> str:
    if not isinstance(v, str) or v.lower() != "landmarks":
        raise _fail(key, "'landmarks'", v)
    return "landmarks"


SCHEMA: dict[tuple[str | None, str], Any] = {
    (None, "task"): _task,
    (None, "name"): _str,
    (None, "seed"): _int(0),
    ("data", "annotations"): _path,
    ("data", "boxes"): _str,
    ("data", "detector_options"): _mapping,
    ("data", "min_iou"): _num(0.0, 1.0),
    ("data", "cache_dir"): _path,
    ("data", "limit"): _int(1, none=True),
    ("data", "test_limit"): _int(1, none=True),
    ("model", "width"): _int(4),
    ("model", "size"): _size,
    ("model", "margin"): _num(0.0, 2.0),
    ("model", "dropout"): _num(0.0, 0.9),
    ("model", "init"): _path,
    ("augment", "shift"): _num(0.0, 0.5),
    ("augment", "scale"): _num(0.0, 0.5),
    ("augment", "angle"): _num(0.0, 90.0),
    ("augment", "flip"): _bool,
    ("augment", "color"): _num(0.0, 0.9),
    ("optimizer", "lr"): _num(0.0, lo_open=True),
    ("optimizer", "weight_decay"): _num(0.0),
    ("schedule", "warmup_epochs"): _num(0.0),
    ("train", "epochs"): _int(1),
    ("train", "batch_size"): _int(1),
    ("train", "device"): _str,
    ("train", "keep_checkpoints"): _int(0),
    ("train", "eval_every"): _int(0),
    ("train", "threads"): _int(0),
    ("eval", "flip"): _bool,
    ("eval", "threshold"): _num(0.0, lo_open=True),
}


def _merge(base: dict[str, Any], update: dict[str, Any], source: str, where: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key not in base:
            raise ConfigError(f"{source}: unknown key {where + key!r}; expected one of {sorted(base)}")
        if isinstance(base[key], dict) and key != "detector_options":
            if not isinstance(value, dict):
                raise _fail(where + key, "a mapping of options", value)
            out[key] = _merge(base[key], value, source, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_landmark_config(
    config: dict[str, Any] | str | os.PathLike | None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Defaults <- the recipe (a YAML path: its relative paths against its folder; a dict:
    against the working directory) <- ``key.sub=value`` overrides, checked key by key; every
    problem is one ConfigError line naming the key."""
    if isinstance(config, dict):
        raw, base, source = dict(config), os.getcwd(), "config"
    elif config is None:
        raw, base, source = {}, os.getcwd(), "config"
    else:
        raw, base, source = read_yaml(Path(config)), Path(config).parent, str(config)
    merged = _merge(DEFAULTS, resolve_paths(raw, base, _PATHS), source)
    overridden = apply_overrides(merged, list(overrides or []))
    merged = resolve_paths(_merge(DEFAULTS, overridden, "overrides"), os.getcwd(), _PATHS)
    for (section, key), check in SCHEMA.items():
        node = merged if section is None else merged[section]
        node[key] = check(key if section is None else f"{section}.{key}", node[key])
    if merged["data"]["annotations"] is None:
        raise ConfigError("data.annotations: required (the path of lfw-5590's annotations.csv)")
    if not Path(merged["data"]["annotations"]).is_file():
        raise ConfigError(f"data.annotations: {merged['data']['annotations']} does not exist")
    return merged


# -- data ------------------------------------------------------------------------------------


@dataclass
class FaceSet:
    """Decoded photos of one split with their crop boxes and labelled landmarks."""

    records: list[FaceBoxRecord]
    images: list[np.ndarray]
    boxes: np.ndarray  # [N, 4]
    truth: np.ndarray  # [N, 5, 2]
    skipped: list[str] = field(default_factory=list)
    #: [N] bool: the box is a detection (False: the labelled box stood in for a missed face)
    detected: np.ndarray | None = None

    @property
    def fallback(self) -> int:
        """How many faces kept their labelled box because the detector missed them."""
        return 0 if self.detected is None else int((~self.detected).sum())

    def __len__(self) -> int:
        return len(self.records)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area - inter, 1e-9)


def match_detection(labelled: np.ndarray, detected: np.ndarray, min_iou: float) -> np.ndarray | None:
    """The detected box ``[4]`` overlapping ``labelled`` most, if its IoU is ``>= min_iou``."""
    if len(detected) == 0:
        return None
    iou = _iou(np.asarray(labelled, dtype=np.float64), np.asarray(detected, dtype=np.float64))
    best = int(np.argmax(iou))
    return np.asarray(detected[best], dtype=np.float64) if iou[best] >= min_iou else None


_DETECT_BATCH = 32


def _cache_key(data: dict[str, Any]) -> str:
    ann = Path(data["annotations"])
    stat = ann.stat()
    text = json.dumps([data["boxes"], data["detector_options"], str(ann), stat.st_size, stat.st_mtime_ns],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def detector_boxes(
    data: dict[str, Any], records: list[FaceBoxRecord], images: list[np.ndarray], cache_dir: Path,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes [N, 4], detected [N] bool)``: each photo's detection matched to its labelled box
    (:func:`match_detection`), the labelled box where none matches; every photo's detections
    are cached in ``cache_dir`` and reused."""
    name = data["boxes"]
    cache = cache_dir / f"boxes-{name}-{_cache_key(data)}.json"
    stored: dict[str, list[list[float]]] = {}
    if cache.is_file():
        try:
            stored = json.loads(cache.read_text())["detections"]
        except (OSError, ValueError, KeyError, TypeError):
            stored = {}
    todo = [i for i, r in enumerate(records) if r.relpath not in stored]
    if todo:
        detector = build_detector(name, **data["detector_options"])
        bar = TrainProgress(1, len(todo), enabled=progress)
        with bar:
            for start in range(0, len(todo), _DETECT_BATCH):
                chunk = todo[start:start + _DETECT_BATCH]
                found = detector.detect([images[i] for i in chunk])
                for i, faces in zip(chunk, found, strict=True):
                    stored[records[i].relpath] = [list(map(float, f.box)) for f in faces]
                bar.update(0, start + len(chunk), {}, 0.0)
        cache_dir.mkdir(parents=True, exist_ok=True)
        payload = {"detector": name, "options": data["detector_options"], "annotations": data["annotations"],
                   "detections": stored}
        atomic_write_bytes(cache, json.dumps(payload).encode())
    boxes = np.zeros((len(records), 4))
    detected = np.zeros(len(records), dtype=bool)
    for i, r in enumerate(records):
        det = np.asarray(stored[r.relpath], dtype=np.float64).reshape(-1, 4)
        match = match_detection(r.box, det, float(data["min_iou"]))
        detected[i] = match is not None
        boxes[i] = r.box if match is None else match
    return boxes, detected


def load_face_set(
    data: dict[str, Any], split: str, limit: int | None, cache_dir: Path, progress: bool = False
) -> FaceSet:
    """Decode the photos of ``split`` (the first ``limit``) and choose their boxes."""
    records = read_face_boxes(data["annotations"], split=split)
    if limit is not None:
        records = records[:limit]
    kept, images, skipped = [], [], []
    for r in records:
        loaded = load_image(r.path)
        if loaded.skip is not None:
            skipped.append(f"{r.relpath}: {loaded.skip.reason}")
            continue
        kept.append(r)
        images.append(loaded.array)
    if not kept:
        raise FacemetricError(f"data.annotations: no readable photo in the {split!r} split")
    truth = np.stack([np.asarray(r.landmarks, dtype=np.float64) for r in kept])
    if data["boxes"] == "labelled":
        boxes, detected = np.stack([np.asarray(r.box, dtype=np.float64) for r in kept]), None
    else:
        boxes, detected = detector_boxes(data, kept, images, cache_dir, progress)
    return FaceSet(kept, images, boxes, truth, skipped, detected)


# -- batches ------------------------------------------------------------------------------------


def _iod_units(units: np.ndarray) -> np.ndarray:
    return np.linalg.norm(units[:, 0] - units[:, 1], axis=1)


def make_batch(
    faces: FaceSet, idx: np.ndarray, size: int, margin: float, augment: dict[str, Any] | None,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(crops uint8 [B, S, S, 3], targets [B, 5, 2] crop units)`` for faces ``idx``; with
    ``augment`` (and ``rng``) the box jitter and flip of the module docstring."""
    crops = np.zeros((len(idx), size, size, 3), dtype=np.uint8)
    targets = np.zeros((len(idx), 5, 2))
    for j, i in enumerate(idx):
        jitter: dict[str, Any] = {}
        if augment is not None and rng is not None:
            s, sc, a = augment["shift"], augment["scale"], math.radians(augment["angle"])
            jitter = {"shift": tuple(rng.uniform(-s, s, 2)), "scale": float(rng.uniform(1 - sc, 1 + sc)),
                      "angle": float(rng.uniform(-a, a))}
        crop, m = crop_face(faces.images[i], faces.boxes[i], size, margin, **jitter)
        units = to_crop_units(faces.truth[i], m, size)
        if augment is not None and rng is not None and augment["flip"] and rng.random() < 0.5:
            crop, units = crop[:, ::-1], flip_units(units)
        crops[j], targets[j] = crop, units
    return crops, targets


def _color_jitter(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    if amount <= 0:
        return x
    b = x.shape[0]
    contrast = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * amount
    bright = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * amount
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + bright).clamp_(-1, 1)


def landmark_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over faces and points of ``|pred - target|_1 / d`` with ``d`` the target's
    inter-ocular distance (points 0 and 1) in the same units."""
    iod = (target[:, 0] - target[:, 1]).norm(dim=1).clamp_min(1e-6)
    return ((pred - target).abs().sum(dim=2) / iod[:, None]).mean()


# -- evaluation ---------------------------------------------------------------------------------


def predict_face_set(model: LandmarkNet, faces: FaceSet, margin: float, flip: bool, device: str,
                     batch_size: int = 256) -> np.ndarray:
    """Image-pixel predictions ``[N, 5, 2]`` on the faces' boxes (no jitter)."""
    model.eval()
    out = np.zeros((len(faces), 5, 2))
    size = model.size
    for start in range(0, len(faces), batch_size):
        idx = np.arange(start, min(start + batch_size, len(faces)))
        crops = np.zeros((len(idx), size, size, 3), dtype=np.uint8)
        mats = []
        for j, i in enumerate(idx):
            crops[j], m = crop_face(faces.images[i], faces.boxes[i], size, margin)
            mats.append(m)
        units = predict_units(model, crops, flip, device)
        for j, i in enumerate(idx):
            out[i] = from_crop_units(units[j], mats[j], size)
    return out


def evaluate_face_set(pred: np.ndarray, faces: FaceSet, threshold: float) -> dict[str, Any]:
    """``{"nme", "failure_rate", "per_point", ..., "eyes": {...}}`` on all five points and on
    the eye centres alone (the points dlib's 5-point model also gives)."""
    all5 = landmark_metrics(pred, faces.truth, threshold=threshold)
    all5["eyes"] = landmark_metrics(pred, faces.truth, points=EYES, threshold=threshold)
    return all5


# -- report -------------------------------------------------------------------------------------


def example_grid(faces: FaceSet, pred: np.ndarray, per_face_nme: np.ndarray, path: Path,
                 columns: int = 8, rows: int = 3, size: int = 128, margin: float = 0.4) -> Path:
    """A PNG of test faces (``rows`` of ``columns``: the worst, the median and the best by
    NME): labelled points green, predictions red, NME written under each face."""
    order = np.argsort(-per_face_nme)
    n = len(order)
    picks = [order[:columns], order[max(0, n // 2 - columns // 2):][:columns], order[-columns:][::-1]][:rows]
    cell = size + 14
    sheet = Image.new("RGB", (columns * size, rows * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(picks):
        for c, i in enumerate(row):
            crop, m = crop_face(faces.images[i], faces.boxes[i], size, margin)
            x0, y0 = c * size, r * cell
            sheet.paste(Image.fromarray(crop), (x0, y0))
            for pts, colour in ((to_crop_units(faces.truth[i], m, size), "#00d000"),
                                (to_crop_units(pred[i], m, size), "#ff2020")):
                for u, v in pts * size + (size - 1) / 2.0:
                    draw.ellipse([x0 + u - 2, y0 + v - 2, x0 + u + 2, y0 + v + 2], outline=colour)
            draw.text((x0 + 3, y0 + size), f"{per_face_nme[i]:.3f}", fill="black")
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _report_markdown(config: dict[str, Any], history: list[dict[str, Any]], data: dict[str, Any],
                     test: dict[str, Any] | None) -> str:
    lines = [f"# Run `{config['name']}` (task: landmarks)", "", "## Setup", ""]
    for section in ("data", "model", "augment", "optimizer", "schedule", "train", "eval"):
        lines.append(f"- **{section}**: `{json.dumps(config[section])}`")
    lines += ["", "## Data", ""] + [f"- {k}: {v}" for k, v in data.items()]
    lines += ["", "## Training", "", "| epoch | loss | faces/s |", "|---|---|---|"]
    for r in history:
        if r["split"] == "train":
            lines.append(f"| {r['epoch']} | {r['loss']:.4f} | {r['faces_per_s']:.0f} |")
    tests = [r for r in history if r["split"] == "test"]
    if tests:
        lines += ["", "## Test split (NME by inter-ocular distance)", "",
                  "| epoch | NME (5 points) | failure (5) | NME (eyes) | failure (eyes) |", "|---|---|---|---|---|"]
        for r in tests:
            lines.append(f"| {r['epoch']} | {r['nme']:.4f} | {r['failure_rate']:.4f} | "
                         f"{r['eyes']['nme']:.4f} | {r['eyes']['failure_rate']:.4f} |")
    if test:
        lines += ["", "### Per point (last evaluation)", "", "| point | NME | failure |", "|---|---|---|"]
        for name, v in test["per_point"].items():
            lines.append(f"| {name} | {v['nme']:.4f} | {v['failure_rate']:.4f} |")
    return "\n".join(lines) + "\n"


def _report_html(config: dict[str, Any], test: dict[str, Any], data: dict[str, Any]) -> str:
    rows = [[name, v["nme"], v["failure_rate"]] for name, v in test["per_point"].items()]
    rows += [["all five (per face)", test["nme"], test["failure_rate"]],
             ["eye centres (per face)", test["eyes"]["nme"], test["eyes"]["failure_rate"]]]
    intro = (f"Test split: {test['faces']} faces on {data['boxes']} boxes; NME = error / inter-ocular "
             f"distance, failure = NME > {test['threshold']:g}.")
    return render_report(
        f"Landmarks: {config['name']}", intro, ["point", "NME", "failure rate"], rows,
        [("test_examples.png", "test faces: worst, median, best row (green labelled, red predicted)")],
        [f"{k}: {v}" for k, v in data.items()],
    )


# -- runner -------------------------------------------------------------------------------------


@dataclass
class LandmarkTrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    final: dict[str, Any]
    model: LandmarkNet

    def summary(self) -> str:
        t = self.final.get("test")
        if not t:
            return "landmarks: no test evaluation"
        return (f"test NME {t['nme']:.4f} (failure {t['failure_rate']:.4f}) on 5 points, eyes NME "
                f"{t['eyes']['nme']:.4f} (failure {t['eyes']['failure_rate']:.4f}), {t['faces']} faces")


def run_landmark_task(
    config: dict[str, Any] | str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> LandmarkTrainResult:
    """Train the 5-point landmark model (the ``landmarks`` task; see the module docstring)."""
    if resume:
        config = saved_config(run_dir)
    cfg = load_landmark_config(config, overrides)
    if run_dir is None:
        run_dir = default_run_path(cfg['name'])
    rd = RunDir(run_dir)
    data_cfg, model_cfg, train_cfg = cfg["data"], cfg["model"], cfg["train"]
    cache_dir = Path(data_cfg["cache_dir"]) if data_cfg["cache_dir"] else rd.path / "cache"
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    if int(train_cfg["threads"]):
        torch.set_num_threads(int(train_cfg["threads"]))
    train = load_face_set(data_cfg, "train", data_cfg["limit"], cache_dir, progress)
    test = load_face_set(data_cfg, "test", data_cfg["test_limit"], cache_dir, progress)
    data_summary = {
        "annotations": data_cfg["annotations"], "boxes": data_cfg["boxes"],
        "train_faces": len(train), "test_faces": len(test),
        "train_fallback_boxes": train.fallback, "test_fallback_boxes": test.fallback,
        "skipped_photos": len(train.skipped) + len(test.skipped),
    }
    rd.write_config(cfg)
    rd.write_run_info({"data": data_summary})

    size, margin = int(model_cfg["size"]), float(model_cfg["margin"])
    device = str(resolve_device(str(train_cfg["device"])))
    model = LandmarkNet(int(model_cfg["width"]), size, 5, float(model_cfg["dropout"]))
    if model_cfg["init"]:
        init, card = load_landmark_model(model_cfg["init"])
        if init.options() != model.options() or float(card["crop"]["margin"]) != margin:
            raise ConfigError(
                f"model.init: {model_cfg['init']} is a {init.options()} network with margin "
                f"{card['crop']['margin']}, the recipe asks for {model.options()} with margin {margin}"
            )
        model.load_state_dict(init.state_dict())
    else:
        _, mean_targets = make_batch(train, np.arange(len(train)), size, margin, None, None)
        model.set_mean_shape(mean_targets.mean(axis=0))
    model.to(device)
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(cfg["optimizer"]["weight_decay"])},
         {"params": no_decay, "weight_decay": 0.0}], lr=float(cfg["optimizer"]["lr"]))
    epochs, batch = int(train_cfg["epochs"]), int(train_cfg["batch_size"])
    steps = max(1, math.ceil(len(train) / batch))
    start_epoch = 0
    history: list[dict[str, Any]] = []
    if resume:
        ckpt = latest_checkpoint(rd.checkpoints)
        if ckpt is not None:
            state = load_checkpoint(ckpt)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch = int(state["epoch"])
        rd.truncate_metrics_after(start_epoch)
        history = rd.read_metrics()
    elif rd.metrics_path.exists():
        rd.metrics_path.unlink()

    test_metrics: dict[str, Any] | None = None
    pred: np.ndarray | None = None
    every = int(train_cfg["eval_every"])
    with TrainProgress(epochs, steps, enabled=progress) as bar:
        bar.start_at(start_epoch)
        for epoch in range(start_epoch, epochs):
            model.train()
            rng = np.random.default_rng([seed, epoch])
            gen = torch.Generator().manual_seed(seed * 100003 + epoch)
            torch.manual_seed(seed * 100003 + epoch)  # dropout
            order = rng.permutation(len(train))
            t0, total, seen = time.perf_counter(), 0.0, 0
            for step in range(steps):
                idx = order[step * batch:(step + 1) * batch]
                crops, targets = make_batch(train, idx, size, margin, cfg["augment"], rng)
                x = _color_jitter(normalise_crops(crops), float(cfg["augment"]["color"]), gen).to(device)
                y = torch.as_tensor(targets, dtype=torch.float32, device=device)
                lr = warmup_cosine_lr(epoch * steps + step, epochs * steps,
                            float(cfg["schedule"]["warmup_epochs"]) * steps, float(cfg["optimizer"]["lr"]))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = landmark_loss(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.update(epoch, step + 1, {"loss": total / seen}, rate)
            record = {"epoch": epoch + 1, "split": "train", "loss": total / seen, "lr": lr,
                      "faces_per_s": seen / max(time.perf_counter() - t0, 1e-9)}
            rd.log_metrics(record)
            history.append(record)
            bar.epoch_done([{**record, "images_per_s": record["faces_per_s"]}])
            if (every and (epoch + 1) % every == 0) or epoch + 1 == epochs:
                pred = predict_face_set(model, test, margin, bool(cfg["eval"]["flip"]), device)
                test_metrics = evaluate_face_set(pred, test, float(cfg["eval"]["threshold"]))
                trecord = {"epoch": epoch + 1, "split": "test", **test_metrics}
                rd.log_metrics(trecord)
                history.append(trecord)
                if bar.enabled:
                    bar.console.print(f"epoch {epoch + 1} test: NME {test_metrics['nme']:.4f} "
                                      f"failure {test_metrics['failure_rate']:.4f} eyes NME "
                                      f"{test_metrics['eyes']['nme']:.4f}")
            atomic_torch_save({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "config": cfg}, checkpoint_path(rd.checkpoints, epoch + 1))
            prune_checkpoints(rd.checkpoints, int(train_cfg["keep_checkpoints"]))

    if pred is None:  # a resumed run that had already finished: evaluate what it holds
        pred = predict_face_set(model, test, margin, bool(cfg["eval"]["flip"]), device)
        test_metrics = evaluate_face_set(pred, test, float(cfg["eval"]["threshold"]))
    assert test_metrics is not None
    per_face = np.linalg.norm(pred - test.truth, axis=2).mean(axis=1) / np.linalg.norm(
        test.truth[:, 0] - test.truth[:, 1], axis=1)
    example_grid(test, pred, per_face, rd.path / "test_examples.png")
    rd.write_text("report.md", _report_markdown(cfg, history, data_summary, test_metrics))
    rd.write_text("report.html", _report_html(cfg, test_metrics, data_summary))
    model.cpu()
    save_landmark_model(rd.path / ARTIFACT_DIR, model, margin=margin, card={
        "name": cfg["name"], "trained_on_boxes": data_cfg["boxes"],
        "detector_options": data_cfg["detector_options"], "training_data": data_summary,
        "test_metrics": {k: test_metrics[k] for k in ("faces", "nme", "failure_rate", "threshold")}
        | {"eyes_nme": test_metrics["eyes"]["nme"], "eyes_failure_rate": test_metrics["eyes"]["failure_rate"],
           "flip": bool(cfg["eval"]["flip"])},
        "epochs": epochs,
        **({"initialised_from": model_cfg["init"]} if model_cfg["init"] else {}),
    })
    final = {"train": next((r for r in reversed(history) if r["split"] == "train"), {}), "test": test_metrics}
    return LandmarkTrainResult(rd.path, history, final, model)


__all__ = [
    "DEFAULTS",
    "LandmarkTrainResult",
    "evaluate_face_set",
    "landmark_loss",
    "load_face_set",
    "load_landmark_config",
    "make_batch",
    "match_detection",
    "predict_face_set",
    "run_landmark_task",
]
