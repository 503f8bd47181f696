"""The ``dense`` training task: FCN face parsing, HED edges and FSDS skeletons on LFW Part Labels.

``facemetric train --config configs/dense-fcn8s.yaml`` (a recipe with ``task: dense``) runs
:func:`run_dense`: it reads the photos and label maps of the ``train``/``val``/``test`` splits
(:class:`facemetric.data.face_parts.FaceParts`), resizes them to ``data.input_size`` and derives
the targets each head needs (:mod:`facemetric.dense.targets`: boundaries for ``hed``, medial
axes with scale classes for ``fsds``/``skel_hed``), then trains
:class:`facemetric.dense.model.DenseNet` with Adam and a cosine schedule. Loss =
``loss.parse x`` per-pixel softmax CE + ``loss.edges x`` HED loss + ``loss.skeleton x`` (FSDS
loss and/or HED loss on skeletons). Every epoch: a line of ``metrics.jsonl`` (train loss,
images/s; validation loss and, with ``fcn``, pixel accuracy and mean IoU at the photos' own
size) and an atomic checkpoint; ``resume`` continues from the newest one (same batches: the
order depends on ``seed`` and the epoch only). At the end: ``report.md``, the final ``val`` and
``test`` metrics, and the artifact ``<run>/model`` (``kind: dense``; ``load_model(run).parse``).

Recipe keys (defaults in :data:`DEFAULTS`)::

    task: dense
    name: dense-fcn8s
    seed: 0
    data:  {root: ../../shared/data/lfw-parts, input_size: 128, limit: null}
    model: {heads: [fcn], channels: [16, 32, 64, 96, 128], convs: 2, fcn_variant: 8s, ...,
            trunk: vgg, pretrained: true, freeze_trunk: false}   # trunk: vgg or dlib-resnet
    loss:  {parse: 1.0, edges: 1.0, skeleton: 1.0, reduction: mean}
    train: {epochs: 12, batch_size: 8, lr: 0.002, weight_decay: 0.0001, device: cpu,
            threads: null, flip: true, keep_checkpoints: 2,
            trunk_lr_scale: 1.0}   # the trunk's lr = train.lr x trunk_lr_scale
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facemetric.data.face_parts import CLASS_NAMES, FaceParts
from facemetric.dense.losses import fsds_loss, hed_loss, pixel_softmax_ce
from facemetric.dense.model import FCN_VARIANTS, HEADS, DenseNet
from facemetric.dense.predict import DenseModel, dense_card, normalise
from facemetric.dense.targets import boundaries, quantise_scales, side_targets, skeletons
from facemetric.errors import ConfigError
from facemetric.eval.dense import confusion_matrix, parsing_metrics
from facemetric.inference.artifact import save_artifact
from facemetric.io import atomic_torch_save
from facemetric.train.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
)
from facemetric.train.config import apply_overrides, read_yaml
from facemetric.train.progress import TrainProgress
from facemetric.train.run_dir import RunDir, default_run_path, saved_config
from facemetric.train.seed import rng_state, seed_everything, set_rng_state
from facemetric.train.trainer import resolve_device

DEFAULTS: dict[str, Any] = {
    "task": "dense",
    "name": "dense",
    "seed": 0,
    "data": {"root": "../shared/data/lfw-parts", "input_size": 128, "limit": None},
    "model": {
        "heads": ["fcn"], "channels": [16, 32, 64, 96, 128], "convs": 2, "num_classes": 3,
        "fcn_variant": "8s", "fcn_width": 128, "dropout": 0.0,
        "hed_stages": [1, 2, 3, 4, 5], "fsds_stages": [2, 3, 4, 5],
        "trunk": "vgg", "pretrained": True, "freeze_trunk": False,
    },
    "loss": {"parse": 1.0, "edges": 1.0, "skeleton": 1.0, "reduction": "mean", "class_weights": None},
    "train": {
        "epochs": 12, "batch_size": 8, "lr": 0.002, "weight_decay": 0.0001, "device": "cpu",
        "threads": None, "flip": True, "keep_checkpoints": 2, "trunk_lr_scale": 1.0,
        "augment": {"scale": 0.0, "rotate": 0.0, "shift": 0.0, "color": 0.0},
    },
}
_SECTIONS = {k: set(v) for k, v in DEFAULTS.items() if isinstance(v, dict)}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _positive(key: str, value: Any, kind: type = int, where: str = "") -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        raise ConfigError(f"{key}: expected a positive {'integer' if kind is int else 'number'}, got {value!r}{where}")
    return kind(value)


def validate_dense(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Check a dense recipe's keys and values; one-line ConfigError naming the key."""
    where = "" if source == "config" else f" (in {source})"
    for key in config:
        if key not in DEFAULTS:
            raise ConfigError(f"{key}: unknown top-level key for task dense{where}; expected one of {', '.join(DEFAULTS)}")
    for sec, keys in _SECTIONS.items():
        if not isinstance(config.get(sec), dict):
            raise ConfigError(f"{sec}: expected a mapping{where}")
        for k in config[sec]:
            if k not in keys:
                raise ConfigError(f"{sec}.{k}: unknown key{where}; expected one of {', '.join(sorted(keys))}")
    d, m, t, lo = config["data"], config["model"], config["train"], config["loss"]
    size = d["input_size"]
    size = [size, size] if isinstance(size, int) else size
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v >= 16 for v in size)):
        raise ConfigError(f"data.input_size: expected an integer >= 16 or [height, width]{where}, got {d['input_size']!r}")
    d["input_size"] = size
    if d["limit"] is not None:
        d["limit"] = _positive("data.limit", d["limit"], where=where)
    heads = m["heads"]
    if not isinstance(heads, list) or not heads or any(h not in HEADS for h in heads):
        raise ConfigError(f"model.heads: expected a list of {', '.join(HEADS)}{where}, got {heads!r}")
    if m["fcn_variant"] not in FCN_VARIANTS:
        raise ConfigError(f"model.fcn_variant: expected one of {', '.join(FCN_VARIANTS)}{where}, got {m['fcn_variant']!r}")
    for k in ("epochs", "batch_size"):
        t[k] = _positive(f"train.{k}", t[k], where=where)
    t["lr"] = _positive("train.lr", t["lr"], float, where)
    t["trunk_lr_scale"] = _positive("train.trunk_lr_scale", t["trunk_lr_scale"], float, where)
    if not isinstance(t["weight_decay"], (int, float)) or t["weight_decay"] < 0:
        raise ConfigError(f"train.weight_decay: expected a number >= 0{where}, got {t['weight_decay']!r}")
    if t["threads"] is not None:
        t["threads"] = _positive("train.threads", t["threads"], where=where)
    aug = t["augment"]
    if not isinstance(aug, dict) or set(aug) - {"scale", "rotate", "shift", "color"}:
        raise ConfigError(f"train.augment: expected a mapping of scale, rotate, shift, color{where}, got {aug!r}")
    t["augment"] = {**DEFAULTS["train"]["augment"], **aug}
    for k, v in t["augment"].items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or (k in ("scale", "shift", "color") and v >= 1):
            raise ConfigError(f"train.augment.{k}: expected a number >= 0 (below 1 for scale, shift, color){where}, got {v!r}")
    for k in ("parse", "edges", "skeleton"):
        if not isinstance(lo[k], (int, float)) or lo[k] < 0:
            raise ConfigError(f"loss.{k}: expected a weight >= 0{where}, got {lo[k]!r}")
    cw = lo["class_weights"]
    if cw is not None and cw != "median_frequency" and not (
            isinstance(cw, list) and len(cw) == m["num_classes"]
            and all(isinstance(v, (int, float)) and v >= 0 for v in cw)):
        raise ConfigError(f"loss.class_weights: expected null, median_frequency or {m['num_classes']} "
                          f"weights >= 0{where}, got {cw!r}")
    if lo["reduction"] not in ("mean", "sum"):
        raise ConfigError(f"loss.reduction: expected mean or sum{where}, got {lo['reduction']!r}")
    try:
        DenseNet(**m)
    except ConfigError as exc:
        raise ConfigError(f"{exc}{where}") from None
    return config


def resolve_dense_config(config: dict[str, Any] | str | os.PathLike | None,
                         overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- recipe (``data.root`` relative to the recipe's folder) <- overrides."""
    source, base = "config", Path.cwd()
    if config is None:
        loaded: dict[str, Any] = {}
    elif isinstance(config, dict):
        loaded = copy.deepcopy(config)
    else:
        path = Path(config)
        loaded, source, base = read_yaml(path), str(path), path.parent
    root = (loaded.get("data") or {}).get("root") if isinstance(loaded.get("data"), dict) else None
    if isinstance(root, str):
        loaded["data"]["root"] = str((base / root).resolve())
    merged = apply_overrides(_merge(DEFAULTS, loaded), list(overrides or []))
    merged["data"]["root"] = str(Path(merged["data"]["root"]).resolve())
    return validate_dense(merged, source)


# ------------------------------------------------------------------------------ data
@dataclass
class DenseSplit:
    """A split at the training size: images uint8 ``[N, H, W, 3]`` and target tensors."""

    parts: FaceParts
    images: np.ndarray
    labels: torch.Tensor
    edges: torch.Tensor | None = None
    skeleton: torch.Tensor | None = None
    scale_class: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


def _resize(arr: np.ndarray, size: list[int], nearest: bool) -> np.ndarray:
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    img = Image.fromarray(arr)
    return np.asarray(img.resize((w, h), Image.NEAREST if nearest else Image.BILINEAR))


def prepare_split(root: str, split: str, size: list[int], heads: list[str],
                  receptive_fields: list[int], limit: int | None = None) -> DenseSplit:
    parts = FaceParts(root, split, limit=limit)
    images = np.stack([_resize(a, size, False) for a in parts.images])
    labels = np.stack([_resize(a, size, True) for a in parts.labels])
    out = DenseSplit(parts, images, torch.from_numpy(labels.astype(np.int64)))
    if "hed" in heads:
        out.edges = torch.from_numpy(np.stack([boundaries(lab) for lab in labels]))
    if "fsds" in heads or "skel_hed" in heads:
        sk, cls = [], []
        for lab in labels:
            s, sc = skeletons(lab)
            sk.append(s)
            cls.append(quantise_scales(s, sc, receptive_fields))
        out.skeleton = torch.from_numpy(np.stack(sk))
        out.scale_class = torch.from_numpy(np.stack(cls).astype(np.int64))
    return out


# ------------------------------------------------------------------------------ loss
def class_weights(spec: Any, labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """The parsing loss's class weights: None; a list; or ``median_frequency`` (SegNet,
    Badrinarayanan et al. 2017): ``w_c = median(f) / f_c`` with ``f_c`` the share of class ``c``
    among the training pixels."""
    if spec is None:
        return None
    if spec == "median_frequency":
        f = torch.bincount(labels.reshape(-1), minlength=num_classes)[:num_classes].double()
        f = f / f.sum()
        return (f.median() / f.clamp_min(1e-12)).float()
    return torch.tensor([float(v) for v in spec])


def dense_loss(out: dict[str, Any], batch: dict[str, torch.Tensor], weights: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """The recipe's weighted sum of the heads' losses, and each part."""
    red = weights["reduction"]
    parts: dict[str, torch.Tensor] = {}
    if "parse" in out:
        cw = weights.get("class_tensor")
        parts["parse"] = weights["parse"] * pixel_softmax_ce(
            out["parse"], batch["labels"], weight=None if cw is None else cw.to(out["parse"].device))
    if "edge_fuse" in out:
        parts["edges"] = weights["edges"] * hed_loss(out["edge_sides"], out["edge_fuse"], batch["edges"], red)
    if "skel_fuse" in out:
        z = batch["scale_class"]
        g = side_targets(z, len(out["skel_sides"]))
        parts["fsds"] = weights["skeleton"] * fsds_loss(out["skel_sides"], out["skel_fuse"], g, z, red)
    if "skel_hed_fuse" in out:
        parts["skel_hed"] = weights["skeleton"] * hed_loss(
            out["skel_hed_sides"], out["skel_hed_fuse"], batch["skeleton"], red)
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def _batch(split: DenseSplit, idx: np.ndarray, flip: np.ndarray | None, device: torch.device,
           aug: dict[str, float] | None = None, rng: np.random.Generator | None = None,
           norm: tuple[Any, Any] | None = None) -> dict[str, torch.Tensor]:
    x = normalise(split.images[idx], *norm) if norm else normalise(split.images[idx])
    b = {"x": x, "labels": split.labels[idx]}
    for k in ("edges", "skeleton", "scale_class"):
        v = getattr(split, k)
        if v is not None:
            b[k] = v[idx]
    if flip is not None and flip.any():
        f = torch.from_numpy(flip)
        for k, v in b.items():
            b[k] = torch.where(f.view(-1, *([1] * (v.dim() - 1))), v.flip(-1), v)
    if aug is not None and rng is not None and any(aug.values()):
        b = augment_batch(b, aug, rng)
    return {k: v.to(device) for k, v in b.items()}


def augment_batch(b: dict[str, torch.Tensor], aug: dict[str, float], rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Random similarity warps (zoom ``1 +- scale``, rotation ``+- rotate`` degrees, shift
    ``+- shift`` of the size) per image: photos bilinear (zeros outside, the normalised mean),
    label maps and targets nearest with outside = background; then brightness/contrast
    ``1 +- color`` on the normalised photo."""
    n = b["x"].shape[0]
    zoom = 1 + rng.uniform(-aug["scale"], aug["scale"], n)
    ang = np.deg2rad(rng.uniform(-aug["rotate"], aug["rotate"], n))
    tx, ty = (rng.uniform(-aug["shift"], aug["shift"], n) * 2 for _ in range(2))
    cos, sin = np.cos(ang) / zoom, np.sin(ang) / zoom
    theta = torch.tensor(np.stack([np.stack([cos, -sin, tx], 1), np.stack([sin, cos, ty], 1)], 1), dtype=torch.float32)
    grid = F.affine_grid(theta, list(b["x"].shape), align_corners=False)
    out = {"x": F.grid_sample(b["x"], grid, mode="bilinear", padding_mode="zeros", align_corners=False)}
    for k, v in b.items():
        if k == "x":
            continue
        w = F.grid_sample(v[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        out[k] = w[:, 0].to(v.dtype)
    if aug["color"]:
        gain = torch.tensor(1 + rng.uniform(-aug["color"], aug["color"], n), dtype=torch.float32)
        bias = torch.tensor(rng.uniform(-aug["color"], aug["color"], n), dtype=torch.float32)
        out["x"] = out["x"] * gain.view(-1, 1, 1, 1) + bias.view(-1, 1, 1, 1)
    return out


@torch.no_grad()
def evaluate_split(net: DenseNet, split: DenseSplit, card: dict[str, Any], weights: dict[str, Any],
                   device: torch.device, batch_size: int = 16) -> dict[str, Any]:
    """Validation loss at the training size; with ``fcn``, parsing metrics at the photos' size."""
    net.eval()
    total, n = 0.0, 0
    for s in range(0, len(split), batch_size):
        idx = np.arange(s, min(s + batch_size, len(split)))
        b = _batch(split, idx, None, device, norm=net.preprocessing())
        loss, _ = dense_loss(net(b["x"]), b, weights)
        total += float(loss) * len(idx)
        n += len(idx)
    res: dict[str, Any] = {"loss": total / max(n, 1)}
    if "fcn" in net.heads:
        model = DenseModel(net, card, device)
        conf = np.zeros((len(CLASS_NAMES),) * 2, dtype=np.int64)
        for pred, truth in zip(model.predict_arrays(list(split.parts.images), batch_size), split.parts.labels, strict=False):
            conf += confusion_matrix(truth, pred["labels"], len(CLASS_NAMES))
        res.update(parsing_metrics(conf, CLASS_NAMES))
    return res


# ------------------------------------------------------------------------------ run
@dataclass
class DenseResult:
    run_dir: Path
    history: list[dict[str, Any]]
    final: dict[str, Any]

    def summary(self) -> str:
        parts = []
        for split in ("val", "test"):
            r = self.final.get(split) or {}
            if "mean_iou" in r:
                parts.append(f"{split} mean IoU {r['mean_iou']:.4f} (pixel acc {r['pixel_accuracy']:.4f})")
            elif "loss" in r:
                parts.append(f"{split} loss {r['loss']:.4f}")
        return f"dense run {self.run_dir}: " + "; ".join(parts)


def _report(config: dict[str, Any], history: list[dict[str, Any]], final: dict[str, Any]) -> str:
    lines = [f"# {config['name']} (task dense)", "", f"heads: {', '.join(config['model']['heads'])}; "
             f"input {config['data']['input_size']}; {config['train']['epochs']} epochs", "",
             "| epoch | train loss | val loss | val mean IoU | images/s |", "| --- | --- | --- | --- | --- |"]
    by_epoch: dict[int, dict[str, Any]] = {}
    for r in history:
        by_epoch.setdefault(r["epoch"], {})[r["split"]] = r
    for e, rs in sorted(by_epoch.items()):
        tr, va = rs.get("train", {}), rs.get("val", {})
        miou = f"{va['mean_iou']:.4f}" if "mean_iou" in va else "-"
        lines.append(f"| {e} | {tr.get('loss', float('nan')):.4f} | {va.get('loss', float('nan')):.4f} | {miou} | "
                     f"{tr.get('images_per_s', 0):.1f} |")
    lines += ["", "## Final", "", "```json", json.dumps(final, indent=2), "```", ""]
    return "\n".join(lines)


def run_dense(config: dict[str, Any] | str | os.PathLike | None = None, overrides: list[str] | None = None,
              run_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = True) -> DenseResult:
    """Train a dense model (module docstring); the runner of task ``dense``."""
    overrides = [o for o in (overrides or []) if o.partition("=")[0].strip() != "task"]
    if resume:
        config = resolve_dense_config(saved_config(run_dir), overrides)
    else:
        config = resolve_dense_config(config, overrides)
    if run_dir is None:
        run_dir = default_run_path(config["name"])
    t, d = config["train"], config["data"]
    device = resolve_device(str(t["device"]))
    if t["threads"]:
        torch.set_num_threads(int(t["threads"]))
    seed_everything(int(config["seed"]))
    net = DenseNet(**config["model"]).to(device)
    heads = list(config["model"]["heads"])
    rf = net.fsds_receptive_fields()
    splits = {s: prepare_split(d["root"], s, d["input_size"], heads, rf, d["limit"]) for s in ("train", "val", "test")}
    rd = RunDir(run_dir)
    rd.write_config(config)
    rd.write_run_info({"data": {s: len(v) for s, v in splits.items()}})
    loss_weights = dict(config["loss"])
    loss_weights["class_tensor"] = class_weights(config["loss"]["class_weights"], splits["train"].labels,
                                                 int(config["model"]["num_classes"]))
    card = dense_card(net, d["input_size"], CLASS_NAMES, training_data={
        "root": d["root"], "train_images": len(splits["train"])})
    # train.trunk_lr_scale: the trunk's learning rate relative to train.lr (fine-tuning a
    # pretrained trunk more gently than the new layers)
    trunk_ids = {id(p) for p in net.trunk.parameters()}
    groups = [{"params": [p for p in net.parameters() if p.requires_grad and id(p) not in trunk_ids],
               "lr": t["lr"]},
              {"params": [p for p in net.trunk.parameters() if p.requires_grad],
               "lr": t["lr"] * t["trunk_lr_scale"]}]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.Adam(groups, lr=t["lr"], weight_decay=t["weight_decay"])
    train = splits["train"]
    steps = math.ceil(len(train) / t["batch_size"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=t["epochs"] * steps, pct_start=0.1)
    start = 0
    ckpt = latest_checkpoint(rd.checkpoints) if resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start = int(state["epoch"])
    rd.truncate_metrics_after(start)
    history = rd.read_metrics()
    with TrainProgress(t["epochs"], steps, enabled=progress) as bar:
        bar.start_at(start)
        for epoch in range(start, t["epochs"]):
            net.train()
            rng = np.random.default_rng([int(config["seed"]), epoch])
            order = rng.permutation(len(train))
            flips = rng.random(len(train)) < 0.5 if t["flip"] else None
            tic, seen, total = time.time(), 0, 0.0
            for step in range(steps):
                idx = order[step * t["batch_size"] : (step + 1) * t["batch_size"]]
                b = _batch(train, idx, None if flips is None else flips[idx], device, t["augment"], rng,
                           norm=net.preprocessing())
                loss, _parts = dense_loss(net(b["x"]), b, loss_weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                seen += len(idx)
                total += float(loss.detach()) * len(idx)
                bar.update(epoch, step + 1, {"loss": total / seen}, seen / max(time.time() - tic, 1e-9))
            rec_t = {"epoch": epoch + 1, "split": "train", "loss": total / seen,
                     "images_per_s": seen / max(time.time() - tic, 1e-9), "lr": sched.get_last_lr()[0]}
            rec_v = {"epoch": epoch + 1, "split": "val",
                     **evaluate_split(net, splits["val"], card, loss_weights, device)}
            for r in (rec_t, rec_v):
                rd.log_metrics(r)
                history.append(r)
            if progress:
                msg = f"epoch {epoch + 1} train loss {rec_t['loss']:.4f}; val loss {rec_v['loss']:.4f}"
                if "mean_iou" in rec_v:
                    msg += f" mean IoU {rec_v['mean_iou']:.4f}"
                bar.console.print(msg)
            atomic_torch_save({"epoch": epoch + 1, "model": net.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "rng": rng_state(), "config": config},
                              checkpoint_path(rd.checkpoints, epoch + 1))
            prune_checkpoints(rd.checkpoints, int(t["keep_checkpoints"]))
    final = {s: evaluate_split(net, splits[s], card, loss_weights, device) for s in ("val", "test")}
    card["metrics"] = {s: {k: v for k, v in r.items() if k != "pixels"} for s, r in final.items()}
    save_artifact(rd.path / "model", net.cpu(), card)
    rd.write_text("report.md", _report(config, history, final))
    rd.write_text("final.json", json.dumps(final, indent=2))
    return DenseResult(rd.path, history, final)


__all__ = ["DEFAULTS", "DenseResult", "dense_loss", "prepare_split", "resolve_dense_config", "run_dense",
           "validate_dense"]
