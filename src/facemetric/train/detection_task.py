"""Training task ``detection``: an SSD face detector on lfw-5590
(``facemetric train --config configs/ssd-tiny.yaml``).

>>> from facemetric.train.detection_task import run_detection_task
>>> result = run_detection_task("configs/ssd-tiny.yaml", run_dir="runs/ssd")  # doctest: +SKIP
>>> result.final["test"]["recall_iou50"]                                       # doctest: +SKIP

Data: the ``train`` split of ``data.annotations`` (lfw-5590's ``annotations.csv``, read by
:func:`facemetric.data.face_boxes.read_face_boxes`; one labelled face per photo) for training,
its ``test`` split for the test metrics (:func:`facemetric.eval.detection.detection_metrics`).
Each photo is decoded once and kept in memory. Other faces in a photo are not labelled:
``data.ignore`` (optional) is a JSON file of *ignore boxes* per photo
(:func:`facemetric.eval.detection.write_ignore_file`; ``benchmarks/bench_detection_accuracy.py
--write-ignore`` makes one from the res10 port's confident detections that match no label);
priors on them are neither positive nor negative in training (:mod:`facemetric.detect.matching`)
and detections on them are left out of AP.

Model: ``model`` is an architecture of :data:`facemetric.detect.ssd.SSD_ARCHS` (``name: tiny``
with its options, from scratch; ``name: res10`` starts from OpenCV's res10 weights). Each
training photo goes through :class:`facemetric.detect.augment.SSDAugment` (options in
``augment``), priors are matched (IoU 0.5, ignore regions) and the
:class:`~facemetric.detect.multibox_loss.MultiBoxLoss` (hard negatives 3:1) is minimised with
AdamW or SGD (``optimizer.name``), linear warm-up then cosine decay per step. With
``train.freeze_bn`` the BatchNorm statistics stay fixed (for fine-tuning with small batches);
``train.trainable: heads`` trains only the loc/conf convolutions (the trunk is frozen, so its
backward pass is skipped: fine-tuning res10 on a CPU). Test metrics go through
:class:`facemetric.detect.detector.SSDDetector`, the same inference path as the detector backends.
Every random draw of epoch ``e`` for photo ``i`` comes from a generator seeded with
``(seed, e, i)``, so ``--resume`` (the newest checkpoint in ``<run>/checkpoints``) continues the
same run and ``data.workers`` does not change the result.

Run directory: ``config.yaml``, ``run.json``, ``metrics.jsonl`` (``split: train`` per epoch with
loss, loc/conf parts and photos/s; ``split: test`` every ``train.eval_every`` epochs and at the
end), ``checkpoints/``, ``report.md``, ``report.html`` with ``test_examples.png`` (test photos
with the labelled box green and the detections at the operating point red, the worst first),
``test_detections.json`` (every test photo's detections down to ``eval.confidence_threshold``:
rows ``(score, xmin, ymin, xmax, ymax)`` in pixels) and the artifact ``detector.pt`` (:func:`facemetric.detect.ssd.load_ssd_artifact`).
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from facemetric.data.face_boxes import FaceBoxRecord, read_face_boxes
from facemetric.data.image_io import load_image
from facemetric.detect.augment import SSD_SAMPLERS, SSDAugment
from facemetric.detect.detection_output import DetectionOutput
from facemetric.detect.detector import SSDDetector
from facemetric.detect.matching import match_batch
from facemetric.detect.multibox_loss import MultiBoxLoss
from facemetric.detect.ssd import SSDInput, build_ssd, save_ssd_artifact
from facemetric.errors import ConfigError, FacemetricError
from facemetric.eval.detection import detection_metrics, read_ignore_file
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

__all__ = ["DEFAULTS", "DetectionTrainResult", "load_detection_config", "run_detection_task"]

DEFAULTS: dict[str, Any] = {
    "task": "detection",
    "name": "ssd-tiny",
    "seed": 0,
    "data": {"annotations": None, "ignore": None, "limit": None, "test_limit": None, "workers": 0},
    "model": {"name": "tiny"},
    "augment": {"distort": True, "expand_prob": 0.5, "max_expand_ratio": 2.0, "crop": True, "flip": True},
    "loss": {"neg_pos_ratio": 3.0, "loc_weight": 1.0, "overlap": 0.5, "neg_overlap": 0.5, "ignore_overlap": 0.5},
    "optimizer": {"name": "adamw", "lr": 3e-3, "momentum": 0.9, "weight_decay": 5e-4},
    "schedule": {"warmup_epochs": 1.0},
    "train": {"epochs": 20, "batch_size": 32, "device": "auto", "keep_checkpoints": 2, "eval_every": 0,
              "threads": 0, "freeze_bn": False, "trainable": "all"},
    "eval": {"score_threshold": 0.5, "confidence_threshold": 0.01, "nms_threshold": 0.45, "top_k": 400,
             "keep_top_k": 200, "batch_size": 64},
}

_PATHS = (("data", "annotations"), ("data", "ignore"))
_FREE = {"model"}  # sections whose keys are checked by their builder


def _fail(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {value!r}")


def _check_int(key: str, v: Any, lo: int, none: bool = False) -> int | None:
    if v is None and none:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _fail(key, f"an integer >= {lo}" + (" or null" if none else ""), v)
    return v


def _check_num(key: str, v: Any, lo: float, hi: float = math.inf, lo_open: bool = False) -> float:
    try:
        x = float(v) if not isinstance(v, bool) and v is not None else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not (math.isfinite(x) and (x > lo if lo_open else x >= lo) and x <= hi):
        raise _fail(key, f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}]", v)
    return x


def _check_bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _fail(key, "true or false", v)
    return v


_INTS = {("seed", None): 0, ("data", "limit"): 1, ("data", "test_limit"): 1, ("data", "workers"): 0,
         ("train", "epochs"): 1, ("train", "batch_size"): 1, ("train", "keep_checkpoints"): 0,
         ("train", "eval_every"): 0, ("train", "threads"): 0, ("eval", "top_k"): 1, ("eval", "keep_top_k"): 1,
         ("eval", "batch_size"): 1}
_NUMS = {("augment", "expand_prob"): (0, 1), ("augment", "max_expand_ratio"): (1, 16),
         ("loss", "neg_pos_ratio"): (0, 100), ("loss", "loc_weight"): (0, 100), ("loss", "overlap"): (0, 1),
         ("loss", "neg_overlap"): (0, 1), ("loss", "ignore_overlap"): (0, 1), ("optimizer", "momentum"): (0, 1),
         ("optimizer", "weight_decay"): (0, 1), ("schedule", "warmup_epochs"): (0, 1000),
         ("eval", "score_threshold"): (0, 1), ("eval", "confidence_threshold"): (0, 1),
         ("eval", "nms_threshold"): (0, 1)}
_BOOLS = {("augment", "distort"), ("augment", "crop"), ("augment", "flip"), ("train", "freeze_bn")}


def _merge(base: dict[str, Any], update: dict[str, Any], source: str, where: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key in _FREE and not where:
            if not isinstance(value, dict):
                raise _fail(key, "a mapping of options", value)
            out[key] = copy.deepcopy(value)
            continue
        if key not in base:
            raise ConfigError(f"{source}: unknown key {where + key!r}; expected one of {sorted(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise _fail(where + key, "a mapping of options", value)
            out[key] = _merge(base[key], value, source, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_detection_config(
    config: dict[str, Any] | str | os.PathLike | None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Defaults <- the recipe (a YAML path: relative paths against its folder) <- ``key=value``
    overrides; each problem is one ConfigError line naming the key."""
    if isinstance(config, dict):
        raw, base, source = dict(config), os.getcwd(), "config"
    elif config is None:
        raw, base, source = {}, os.getcwd(), "config"
    else:
        raw, base, source = read_yaml(Path(config)), Path(config).parent, str(config)
    merged = _merge(DEFAULTS, resolve_paths(raw, base, _PATHS), source)
    merged = resolve_paths(_merge(DEFAULTS, apply_overrides(merged, list(overrides or [])), "overrides"), os.getcwd(), _PATHS)
    if str(merged["task"]).lower() != "detection":
        raise _fail("task", "'detection'", merged["task"])
    if not isinstance(merged["name"], str) or not merged["name"].strip():
        raise _fail("name", "a non-empty string", merged["name"])
    for (section, key), lo in _INTS.items():
        node, name = (merged, section) if key is None else (merged[section], key)
        node[name] = _check_int(section if key is None else f"{section}.{key}", node[name], lo,
                                none=section == "data" and key in ("limit", "test_limit"))
    for (section, key), (lo, hi) in _NUMS.items():
        merged[section][key] = _check_num(f"{section}.{key}", merged[section][key], lo, hi)
    merged["optimizer"]["lr"] = _check_num("optimizer.lr", merged["optimizer"]["lr"], 0, 10, lo_open=True)
    for section, key in _BOOLS:
        _check_bool(f"{section}.{key}", merged[section][key])
    if merged["optimizer"]["name"] not in ("adamw", "sgd"):
        raise _fail("optimizer.name", "'adamw' or 'sgd'", merged["optimizer"]["name"])
    if merged["train"]["trainable"] not in ("all", "heads"):
        raise _fail("train.trainable", "'all' or 'heads' (the loc/conf convolutions only)", merged["train"]["trainable"])
    if not isinstance(merged["train"]["device"], str):
        raise _fail("train.device", "a device name such as auto, cpu or cuda", merged["train"]["device"])
    ann = merged["data"]["annotations"]
    if ann is None:
        raise ConfigError("data.annotations: required (the path of lfw-5590's annotations.csv)")
    if not Path(ann).is_file():
        raise ConfigError(f"data.annotations: {ann} does not exist")
    if merged["data"]["ignore"] is not None and not Path(merged["data"]["ignore"]).is_file():
        raise ConfigError(f"data.ignore: {merged['data']['ignore']} does not exist")
    return merged


# -- data ---------------------------------------------------------------------------------------


@dataclass
class PhotoSet:
    """Decoded photos (``uint8 [3, H, W]`` RGB) with labelled and ignore boxes (relative)."""

    records: list[FaceBoxRecord]
    images: list[torch.Tensor]
    boxes: list[torch.Tensor]
    ignore: list[torch.Tensor]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


def load_photo_set(
    annotations: str, split: str, limit: int | None, ignore: dict[str, np.ndarray] | None
) -> PhotoSet:
    records = read_face_boxes(annotations, split=split)
    if limit is not None:
        records = records[:limit]
    kept, images, boxes, ignores, skipped = [], [], [], [], []
    for r in records:
        loaded = load_image(r.path)
        if loaded.skip is not None:
            skipped.append(f"{r.relpath}: {loaded.skip.reason}")
            continue
        arr = loaded.array
        h, w = arr.shape[:2]
        kept.append(r)
        images.append(torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous())
        boxes.append(torch.as_tensor(r.box / np.array([w, h, w, h], dtype=np.float32)).view(1, 4))
        ig = ignore.get(r.relpath) if ignore else None
        ignores.append(torch.as_tensor(ig if ig is not None else np.zeros((0, 4), np.float32)).view(-1, 4))
    if not kept:
        raise FacemetricError(f"data.annotations: no readable photo in the {split!r} split")
    return PhotoSet(kept, images, boxes, ignores, skipped)


class _TrainSet(torch.utils.data.Dataset):
    """Item ``(epoch, index)`` -> an augmented photo; draws seeded by ``(seed, epoch, index)``."""

    def __init__(self, photos: PhotoSet, augment: SSDAugment, seed: int):
        self.photos, self.augment, self.seed = photos, augment, seed

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch, i = item
        rng = random.Random(f"{self.seed}-{epoch}-{i}")
        p = self.photos
        labels = torch.ones(len(p.boxes[i]), dtype=torch.long)
        return self.augment(p.images[i], p.boxes[i], labels, p.ignore[i], rng)


class _Collate:
    def __init__(self, priors: torch.Tensor, variances: tuple[float, ...], loss_cfg: dict[str, Any], pre: SSDInput):
        self.priors, self.variances, self.loss_cfg, self.pre = priors, variances, loss_cfg, pre

    def __call__(self, items: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = torch.stack([it[0] for it in items])
        c = self.loss_cfg
        loc_t, conf_t = match_batch(
            [it[1] for it in items], [it[2] for it in items], self.priors, self.variances,
            threshold=c["overlap"], neg_threshold=c["neg_overlap"], ignore_boxes=[it[3] for it in items],
            ignore_threshold=c["ignore_overlap"],
        )
        return self.pre.to_tensor(images), loc_t, conf_t


# -- evaluation ---------------------------------------------------------------------------------


def _evaluate(model: nn.Module, pre: SSDInput, photos: PhotoSet, cfg: dict[str, Any], device: str) -> tuple[dict, list]:
    """Test metrics through the one SSD inference path (:class:`~facemetric.detect.detector.SSDDetector`)."""
    e = cfg["eval"]
    output = DetectionOutput(2, 0, e["confidence_threshold"], e["nms_threshold"], e["top_k"], e["keep_top_k"],
                             model.variances)
    detector = SSDDetector(model, pre, output, threshold=e["confidence_threshold"], device=device,
                           batch_size=e["batch_size"], channels_last=False)
    found = detector.detect([img.permute(1, 2, 0).numpy() for img in photos.images])
    dets = [np.concatenate([f.scores[:, None], f.boxes], axis=1).astype(np.float64) for f in found]
    truths, ignores = [], []
    for img, b, ig in zip(photos.images, photos.boxes, photos.ignore, strict=True):
        h, w = img.shape[1:]
        scale = np.array([w, h, w, h])
        truths.append(b.numpy() * scale)
        ignores.append(ig.numpy() * scale)
    return detection_metrics(dets, truths, ignores, score_threshold=e["score_threshold"]), dets


# -- report -------------------------------------------------------------------------------------


def example_sheet(photos: PhotoSet, dets: list[np.ndarray], threshold: float, path: Path, count: int = 24,
                  columns: int = 8) -> Path:
    """PNG of test photos, the worst (lowest best IoU) first: labelled box green, detections red."""
    best = []
    for img, b, d in zip(photos.images, photos.boxes, dets, strict=True):
        h, w = img.shape[1:]
        truth = b.numpy() * np.array([w, h, w, h])
        d = d[d[:, 0] >= threshold]
        if len(d) == 0:
            best.append(0.0)
            continue
        ix = np.clip(np.minimum(d[:, 3], truth[0, 2]) - np.maximum(d[:, 1], truth[0, 0]), 0, None)
        iy = np.clip(np.minimum(d[:, 4], truth[0, 3]) - np.maximum(d[:, 2], truth[0, 1]), 0, None)
        inter = ix * iy
        union = (d[:, 3] - d[:, 1]) * (d[:, 4] - d[:, 2]) + np.prod(truth[0, 2:] - truth[0, :2]) - inter
        best.append(float((inter / np.maximum(union, 1e-9)).max()))
    order = np.argsort(np.asarray(best), kind="stable")[:count]
    size = 150
    rows = max(1, math.ceil(len(order) / columns))
    sheet = Image.new("RGB", (columns * size, rows * (size + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(order):
        img = photos.images[i]
        h, w = img.shape[1:]
        s = size / max(h, w)
        tile = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((max(1, round(w * s)), max(1, round(h * s))))
        x0, y0 = (k % columns) * size, (k // columns) * (size + 14)
        sheet.paste(tile, (x0, y0))
        truth = photos.boxes[i][0].numpy() * np.array([w, h, w, h]) * s
        draw.rectangle([x0 + truth[0], y0 + truth[1], x0 + truth[2], y0 + truth[3]], outline="#00d000", width=2)
        for row in dets[i][dets[i][:, 0] >= threshold]:
            b = row[1:] * s
            draw.rectangle([x0 + b[0], y0 + b[1], x0 + b[2], y0 + b[3]], outline="#ff2020", width=1)
        draw.text((x0 + 3, y0 + size), f"IoU {best[i]:.2f}", fill="black")
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


_METRIC_COLUMNS = ("recall_iou50", "recall_iou70", "mean_iou", "ap_iou50", "no_detection")


def _report_markdown(cfg: dict[str, Any], history: list[dict[str, Any]], data: dict[str, Any]) -> str:
    lines = [f"# Run `{cfg['name']}` (task: detection)", "", "## Setup", ""]
    for section in ("data", "model", "augment", "loss", "optimizer", "schedule", "train", "eval"):
        lines.append(f"- **{section}**: `{json.dumps(cfg[section])}`")
    lines += ["", "## Data", ""] + [f"- {k}: {v}" for k, v in data.items()]
    lines += ["", "## Training", "", "| epoch | loss | loc | conf | photos/s |", "|---|---|---|---|---|"]
    for r in history:
        if r["split"] == "train":
            lines.append(f"| {r['epoch']} | {r['loss']:.4f} | {r['loc_loss']:.4f} | {r['conf_loss']:.4f} | "
                         f"{r['photos_per_s']:.1f} |")
    tests = [r for r in history if r["split"] == "test"]
    if tests:
        lines += ["", f"## Test split (operating point: score >= {cfg['eval']['score_threshold']:g})", "",
                  "| epoch | recall IoU 0.5 | recall IoU 0.7 | mean IoU | AP@0.5 | photos without detection |",
                  "|---|---|---|---|---|---|"]
        for r in tests:
            lines.append(f"| {r['epoch']} | {r['recall_iou50']:.4f} | {r['recall_iou70']:.4f} | {r['mean_iou']:.4f} | "
                         f"{r['ap_iou50']:.4f} | {r['no_detection']} |")
    return "\n".join(lines) + "\n"


# -- runner -------------------------------------------------------------------------------------


@dataclass
class DetectionTrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    final: dict[str, Any]
    model: nn.Module

    def summary(self) -> str:
        t = self.final.get("test")
        if not t:
            return "detection: no test evaluation"
        return (f"test recall {t['recall_iou50']:.4f} at IoU 0.5 ({t['recall_iou70']:.4f} at 0.7), mean IoU "
                f"{t['mean_iou']:.4f}, AP@0.5 {t['ap_iou50']:.4f}, {t['no_detection']} of {t['photos']} photos "
                f"without a detection")


def _freeze_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def run_detection_task(
    config: dict[str, Any] | str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> DetectionTrainResult:
    """Train an SSD face detector (the ``detection`` task; see the module docstring)."""
    if resume:
        config = saved_config(run_dir)
    cfg = load_detection_config(config, overrides)
    if run_dir is None:
        run_dir = default_run_path(cfg['name'])
    rd = RunDir(run_dir)
    data_cfg, train_cfg, aug_cfg = cfg["data"], cfg["train"], cfg["augment"]
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    if int(train_cfg["threads"]):
        torch.set_num_threads(int(train_cfg["threads"]))
    model, pre = build_ssd(cfg["model"])
    device = str(resolve_device(str(train_cfg["device"])))
    model.to(device)
    ignore = read_ignore_file(data_cfg["ignore"]) if data_cfg["ignore"] else None
    train = load_photo_set(data_cfg["annotations"], "train", data_cfg["limit"], ignore)
    test = load_photo_set(data_cfg["annotations"], "test", data_cfg["test_limit"], ignore)
    data_summary = {
        "annotations": data_cfg["annotations"], "ignore": data_cfg["ignore"] or "none",
        "train_photos": len(train), "test_photos": len(test),
        "train_ignore_boxes": int(sum(len(b) for b in train.ignore)),
        "test_ignore_boxes": int(sum(len(b) for b in test.ignore)),
        "skipped_photos": len(train.skipped) + len(test.skipped), "priors": int(model.priors.shape[0]),
        "input_size": list(pre.input_size),
    }
    rd.write_config(cfg)
    rd.write_run_info({"data": data_summary})

    augment = SSDAugment(
        pre.input_size, mean=pre.mean_rgb(), distort=aug_cfg["distort"],
        expand_prob=aug_cfg["expand_prob"], max_expand_ratio=aug_cfg["max_expand_ratio"],
        samplers=SSD_SAMPLERS if aug_cfg["crop"] else (), flip_prob=0.5 if aug_cfg["flip"] else 0.0,
    )
    collate = _Collate(model.priors.cpu(), tuple(model.variances), cfg["loss"], pre)
    dataset = _TrainSet(train, augment, seed)
    criterion = MultiBoxLoss(cfg["loss"]["neg_pos_ratio"], cfg["loss"]["loc_weight"])
    opt_cfg = cfg["optimizer"]
    if train_cfg["trainable"] == "heads":
        heads = {id(p) for name in ("loc", "conf") for p in getattr(model, name).parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in heads)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": opt_cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if opt_cfg["name"] == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=opt_cfg["lr"], momentum=opt_cfg["momentum"])
    else:
        optimizer = torch.optim.AdamW(groups, lr=opt_cfg["lr"])
    epochs, batch = int(train_cfg["epochs"]), int(train_cfg["batch_size"])
    steps = max(1, len(train) // batch)  # drop the last partial batch (BatchNorm)
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

    every = int(train_cfg["eval_every"])
    warmup = float(cfg["schedule"]["warmup_epochs"]) * steps
    test_metrics: dict[str, Any] | None = None
    dets: list[np.ndarray] = []
    with TrainProgress(epochs, steps, enabled=progress) as bar:
        bar.start_at(start_epoch)
        for epoch in range(start_epoch, epochs):
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            batches = [[(epoch, int(i)) for i in order[k * batch : (k + 1) * batch]] for k in range(steps)]
            loader = torch.utils.data.DataLoader(
                dataset, batch_sampler=batches, collate_fn=collate, num_workers=int(data_cfg["workers"])
            )
            model.train()
            if train_cfg["freeze_bn"]:
                _freeze_bn(model)
            totals = {"loss": 0.0, "loc_loss": 0.0, "conf_loss": 0.0, "positives": 0}
            started = time.perf_counter()
            for step, (x, loc_t, conf_t) in enumerate(loader):
                lr = warmup_cosine_lr(epoch * steps + step, epochs * steps, warmup, opt_cfg["lr"])
                for g in optimizer.param_groups:
                    g["lr"] = lr
                x, loc_t, conf_t = x.to(device), loc_t.to(device), conf_t.to(device)
                loc, conf = model(x)
                loc_loss, conf_loss, num_pos = criterion.components(loc, conf, loc_t, conf_t)
                loss = criterion.loc_weight * loc_loss + conf_loss
                if not torch.isfinite(loss):
                    raise FacemetricError(f"train: the loss became {float(loss)} at epoch {epoch + 1} step {step + 1} "
                                          "(lower optimizer.lr)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                totals["loss"] += float(loss.detach())
                totals["loc_loss"] += float(loc_loss.detach())
                totals["conf_loss"] += float(conf_loss.detach())
                totals["positives"] += num_pos
                rate = (step + 1) * batch / max(time.perf_counter() - started, 1e-9)
                bar.update(epoch, step + 1, {"loss": totals["loss"] / (step + 1)}, rate)
            elapsed = time.perf_counter() - started
            record = {"epoch": epoch + 1, "split": "train", "loss": totals["loss"] / steps,
                      "loc_loss": totals["loc_loss"] / steps, "conf_loss": totals["conf_loss"] / steps,
                      "positives_per_photo": totals["positives"] / (steps * batch), "lr": lr,
                      "photos_per_s": steps * batch / max(elapsed, 1e-9), "seconds": elapsed}
            records = [record]
            if (every and (epoch + 1) % every == 0) or epoch + 1 == epochs:
                test_metrics, dets = _evaluate(model, pre, test, cfg, device)
                records.append({"epoch": epoch + 1, "split": "test", **test_metrics})
            for r in records:
                rd.log_metrics(r)
                history.append(r)
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1},
                              checkpoint_path(rd.checkpoints, epoch + 1))
            prune_checkpoints(rd.checkpoints, int(train_cfg["keep_checkpoints"]))
            if progress:
                bar.console.print(f"epoch {epoch + 1}: loss {record['loss']:.4f} ({record['photos_per_s']:.1f} photos/s)"
                                  + (f", test recall@0.5 {test_metrics['recall_iou50']:.4f}" if len(records) > 1 and
                                     test_metrics else ""))
    if test_metrics is None:  # resumed after the last epoch
        test_metrics, dets = _evaluate(model, pre, test, cfg, device)
    e = cfg["eval"]
    detection_output = {"num_classes": 2, "background_label": 0, "confidence_threshold": e["confidence_threshold"],
                        "nms_threshold": e["nms_threshold"], "top_k": e["top_k"], "keep_top_k": e["keep_top_k"],
                        "variances": list(model.variances)}
    save_ssd_artifact(rd.path / "detector.pt", model, cfg["model"], pre, detection_output,
                      {"name": cfg["name"], "score_threshold": e["score_threshold"], "test": test_metrics,
                       "epochs": epochs})
    example_sheet(test, dets, e["score_threshold"], rd.path / "test_examples.png")
    atomic_write_bytes(rd.path / "test_detections.json", json.dumps({
        "annotations": data_cfg["annotations"], "confidence_threshold": e["confidence_threshold"],
        "photos": [r.relpath for r in test.records], "detections": [d.round(4).tolist() for d in dets],
    }).encode())
    rd.write_text("report.md", _report_markdown(cfg, history, data_summary))
    rows = [[k, test_metrics[k]] for k in _METRIC_COLUMNS]
    rd.write_text("report.html", render_report(
        f"Detection: {cfg['name']}",
        f"Test split: {test_metrics['photos']} photos; operating point score >= {e['score_threshold']:g}.",
        ["metric", "value"], rows,
        [("test_examples.png", "test photos, worst first: labelled box green, detections red")],
        [f"{k}: {v}" for k, v in data_summary.items()],
    ))
    return DetectionTrainResult(rd.path, history, {"test": test_metrics}, model)
