"""Build and run a training experiment from a resolved config (the API behind ``facemetric train``).

>>> from facemetric.train import run_experiment
>>> import tempfile
>>> result = run_experiment("configs/digits-center-lambda-0.1.yaml", overrides=["train.epochs=1"],
...                         run_dir=tempfile.mkdtemp(), progress=False)
>>> sorted(result.final)
['train', 'val']
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facemetric import distributed
from facemetric.data.samplers import SAMPLERS
from facemetric.distances import check_distance_kind
from facemetric.errors import ConfigError
from facemetric.eval.embedding import embed_dataset
from facemetric.eval.open_set import impostor_tail
from facemetric.eval.pair_evaluator import PairSetEvaluator
from facemetric.inference.artifact import save_artifact
from facemetric.inference.embedder import FaceEmbedder, load_model
from facemetric.losses import LOSSES, EmbeddingLoss, build_loss
from facemetric.models import MODELS, build_model
from facemetric.registry import Registry
from facemetric.train.config import component_errors, load_config, options, resolve_config
from facemetric.train.data_sources import DATA_SOURCES, DataBundle
from facemetric.train.ema import ModelEMA
from facemetric.train.optim import build_optimizer
from facemetric.train.run_dir import RunDir, default_run_path, saved_config
from facemetric.train.schedules import build_scheduler, schedule_file_stop_epoch
from facemetric.train.seed import seed_everything
from facemetric.train.trainer import Trainer, resolve_device
from facemetric.train.two_phase import TwoPhaseSampler


@dataclass
class Experiment:
    config: dict[str, Any]
    model_options: dict[str, Any]
    data: DataBundle
    model: nn.Module
    loss: EmbeddingLoss
    trainer: Trainer
    run_dir: RunDir | None


@dataclass
class TrainResult:
    run_dir: Path | None
    history: list[dict[str, Any]]
    final: dict[str, Any]
    model: nn.Module
    loss: EmbeddingLoss
    data: DataBundle
    #: the validation evaluator the run used (:func:`build_evaluator`), or None
    evaluator: Any = None


def _factory(registry: Registry[Any], name: str) -> Any:
    """The factory registered as ``name`` (for naming a bad option's key), or None."""
    return registry.get(name) if name in registry else None


def default_run_dir(config: dict[str, Any], root: str | os.PathLike = "runs") -> Path:
    return default_run_path(config["name"], root)


def _model_options(model_cfg: dict[str, Any], data: DataBundle) -> dict[str, Any]:
    """The model's options, with ``input_size``/``in_channels`` taken from the data when the
    backbone accepts them and the config does not set them."""
    opts = options(model_cfg, "pretrained")
    try:
        params = inspect.signature(MODELS.get(model_cfg["name"])).parameters
    except (TypeError, ValueError):
        return opts
    size = data.preprocessing.get("input_size")
    if "input_size" in params and "input_size" not in opts and size:
        h, w = int(size[0]), int(size[1])
        opts["input_size"] = h if h == w else [h, w]
    color = data.preprocessing.get("color")
    channels = data.preprocessing.get("channels") or ({"L": 1}.get(color, 3) if color else None)
    if "in_channels" in params and "in_channels" not in opts and channels:
        opts["in_channels"] = int(channels)
    return opts


def _pretrained_init(name: str, backbone: str) -> FaceEmbedder:
    """The :class:`FaceEmbedder` whose weights start a fine-tuning run (``model.pretrained``)."""
    init = load_model(name, align=False)
    if init.card["backbone"]["name"] != backbone:
        raise ConfigError(
            f"model.pretrained: {name!r} is a {init.card['backbone']['name']!r} network, but "
            f"model.name is {backbone!r}"
        )
    return init


def _init_head_from_class_means(model: Any, loss: Any, dataset: Any) -> None:
    """Imprint the loss's classifier/centers with each class's mean embedding under ``model``
    (the un-augmented training images; ``train.head_init``: ``auto`` does it for fine-tuning)."""
    if not hasattr(loss, "init_from_class_means"):
        return
    was = getattr(dataset, "train", None)
    if was is not None:
        dataset.train = False  # centre crop, no flip, no RNG consumed
    try:
        emb = embed_dataset(model, dataset)
    finally:
        if was is not None:
            dataset.train = was
    labels = torch.as_tensor(dataset.labels, dtype=torch.long)
    c = int(loss.num_classes)
    sums = torch.zeros(c, emb.shape[1]).index_add_(0, labels, emb)
    counts = torch.bincount(labels, minlength=c).clamp(min=1)[:, None]
    loss.init_from_class_means(sums / counts)


def build_evaluator(config: dict[str, Any], data: DataBundle) -> Any:
    """The validation evaluator of a run: ``data.evaluator`` when the source made one, else a
    :class:`~facemetric.eval.pair_evaluator.PairSetEvaluator` of ``data.val_pairs`` over
    ``data.val`` (flip-TTA as ``data.val_flip`` says) scored as the recipe's ``eval`` section
    says (``distance``, ``far_target``, ``batch_size``) -- for every data source alike; None
    without validation pairs."""
    if data.evaluator is not None:
        return data.evaluator
    if data.val is None or data.val_pairs is None:
        return None
    ev = config["eval"]
    return PairSetEvaluator.from_pairs(
        data.val, data.val_pairs, flip=data.val_flip, distance=check_distance_kind(ev["distance"], "eval.distance"),
        far_target=float(ev["far_target"]), batch_size=int(ev["batch_size"]),
        identities=data.val_identities,
    )


def build_experiment(
    config: dict[str, Any], run_dir: str | os.PathLike | None = None, progress: bool = True
) -> Experiment:
    """Instantiate data, model, loss, sampler, optimizer, schedule, EMA and trainer."""
    train_cfg = config["train"]
    seed = int(config["seed"])
    seed_everything(seed, deterministic=bool(train_cfg["deterministic"]))
    data_options = options(config["data"])
    pretrained = config["model"].get("pretrained")
    init = None
    if pretrained:
        init = _pretrained_init(str(pretrained), config["model"]["name"])
        # the data must look like the pretrained model's inputs unless the config says otherwise
        data_options.setdefault("preprocessing", init.card["preprocessing"])
        if init.card.get("alignment"):
            data_options.setdefault("alignment", init.card["alignment"])
    if not distributed.is_main_process():
        distributed.barrier()  # rank 0 builds (and caches) the data first; the others then read it
    with component_errors("data", config["data"], _factory(DATA_SOURCES, config["data"]["name"])):
        data = DATA_SOURCES.build(config["data"]["name"], **data_options)
    if distributed.is_main_process():
        distributed.barrier()
    model_options = _model_options(config["model"], data)
    if init is not None:
        # the architecture must match the weights: the pretrained card's options, not the config's
        model_options = dict(init.card["backbone"].get("options", {}))
    with component_errors("model", config["model"], _factory(MODELS, config["model"]["name"])):
        model = build_model(config["model"]["name"], **model_options)
    if init is not None:
        model.load_state_dict(init.model.state_dict())
    embedding_dim = int(getattr(model, "embedding_dim", config["model"].get("embedding_dim", 0)))
    num_classes = int(data.train.num_classes)
    with component_errors("loss", config["loss"], _factory(LOSSES, config["loss"]["name"])):
        loss = build_loss(
            config["loss"]["name"], embedding_dim=embedding_dim, num_classes=num_classes,
            **options(config["loss"]),
        )
    head_init = str(train_cfg.get("head_init", "auto"))
    if head_init not in ("auto", "random", "class_means"):
        raise ConfigError(f"train.head_init: expected 'auto', 'random' or 'class_means', got {head_init!r}")
    if head_init == "class_means" or (head_init == "auto" and init is not None):
        _init_head_from_class_means(model, loss, data.train)
    with component_errors("sampler", config["sampler"], _factory(SAMPLERS, config["sampler"]["name"])):
        sampler = SAMPLERS.build(config["sampler"]["name"], dataset=data.train, seed=seed, **options(config["sampler"]))
    if distributed.world_size() > 1 and hasattr(sampler, "shard"):  # the batches per epoch of a rank
        sampler.shard(distributed.rank(), distributed.world_size())
    opt_cfg = config["optimizer"]
    if "lr" not in opt_cfg:
        raise ConfigError("config: 'optimizer.lr' is required")
    optimizer = build_optimizer(  # the modules: no weight decay on biases, norms and scales
        opt_cfg["name"], [model, loss], lr=float(opt_cfg["lr"]),
        weight_decay=float(opt_cfg.get("weight_decay", 0.0)), **options(opt_cfg, "lr", "weight_decay"),
    )
    sched_cfg = config["schedule"]
    epochs = int(train_cfg["epochs"])
    if sched_cfg["name"] in ("file", "facenet") and sched_cfg.get("path"):
        stop = schedule_file_stop_epoch(sched_cfg["path"])  # facenet: a negative lr ends training
        if stop is not None:
            epochs = min(epochs, max(stop - 1, 1))
    with component_errors("schedule", sched_cfg):
        scheduler = build_scheduler(
            sched_cfg["name"], optimizer, steps_per_epoch=len(sampler), epochs=epochs,
            warmup_epochs=float(sched_cfg.get("warmup_epochs", 0.0)), **options(sched_cfg, "warmup_epochs"),
        )
    device = resolve_device(str(train_cfg["device"]))
    model.to(device)
    if isinstance(sampler, TwoPhaseSampler):  # facenet's two-phase selection embeds with the model
        sampler.bind(model, loss, data.train, device)
    ema = ModelEMA(model, decay=float(train_cfg["ema_decay"])) if train_cfg["ema_decay"] else None
    evaluator = build_evaluator(config, data)
    rd = RunDir(run_dir) if run_dir is not None else None
    trainer = Trainer(
        model, loss, data.train, sampler, optimizer, scheduler,
        epochs=epochs, run_dir=rd, ema=ema, grad_clip=float(train_cfg["grad_clip"]),
        device=device, evaluator=evaluator, eval_every=int(train_cfg["eval_every"]),
        keep_checkpoints=int(train_cfg["keep_checkpoints"]), num_workers=int(train_cfg["num_workers"]),
        progress=progress, log_every=int(train_cfg["log_every"]), config=config,
        precision=str(train_cfg["precision"]), channels_last=bool(train_cfg["channels_last"]),
        compile=bool(train_cfg["compile"]), sync_batchnorm=bool(train_cfg["sync_batchnorm"]),
    )
    return Experiment(config, model_options, data, model, loss, trainer, rd)


def _report_markdown(config: dict[str, Any], history: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    train = [r for r in history if r["split"] == "train"]
    val = [r for r in history if r["split"] == "val"]
    lines = [f"# Run `{config['name']}`", "", "## Setup", ""]
    for section in ("data", "model", "loss", "sampler", "optimizer", "schedule"):
        lines.append(f"- **{section}**: `{json.dumps(config[section])}`")
    lines.append(f"- **epochs**: {config['train']['epochs']}, seed {config['seed']}")
    lines += ["", "## Data", ""] + [f"- {k}: {v}" for k, v in summary.items()]
    lines += ["", "## Training", "", "| epoch | loss | accuracy | images/s |", "|---|---|---|---|"]
    for r in train:
        lines.append(
            f"| {r['epoch']} | {r.get('loss', float('nan')):.4f} | {r.get('accuracy', float('nan')):.4f} "
            f"| {r.get('images_per_s', 0):.0f} |"
        )
    if val:
        lines += ["", "## Verification on held-out pairs", "",
                  "| epoch | accuracy | VAL@FAR | AUC | EER |", "|---|---|---|---|---|"]
        for r in val:
            lines.append(
                f"| {r['epoch']} | {r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f} | "
                f"{r['val']:.4f} @ {r['far']:.4f} | {r['auc']:.4f} | {r['eer']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def write_model_artifact(exp: Experiment, val: dict[str, Any] | None) -> Path:
    """Save ``<run>/model``: weights (EMA weights when EMA is on) + the model card.

    Thresholds come from the last validation: the mean over folds of the best-accuracy
    thresholds and of the VAL@FAR thresholds, in the validation's distance (the recipe's
    ``eval.distance``, default squared L2 on normalised embeddings), which the card records as
    its ``distance`` so that inference compares the same way.
    """
    assert exp.run_dir is not None
    model = exp.trainer.ema.module if exp.trainer.ema is not None else exp.model
    thresholds: dict[str, float] = {}
    metrics: dict[str, Any] = {}
    if val:
        thresholds["best_accuracy"] = float(sum(val["thresholds"]) / len(val["thresholds"]))
        if val.get("val_thresholds"):
            key = f"far_{val['far_target']:.0e}"
            thresholds[key] = float(sum(val["val_thresholds"]) / len(val["val_thresholds"]))
        metrics = {k: val[k] for k in ("accuracy_mean", "accuracy_std", "val", "far", "auc", "eer") if k in val}
    tail = _validation_impostor_tail(exp, model)
    card = {
        "name": exp.config["name"],
        "backbone": {"name": exp.config["model"]["name"], "options": exp.model_options},
        "embedding_dim": int(getattr(model, "embedding_dim", exp.model_options.get("embedding_dim", 0))),
        "preprocessing": exp.data.preprocessing,
        "distance": str(exp.config["eval"]["distance"]),
        **({"alignment": exp.data.alignment} if exp.data.alignment else {}),
        **({"initialised_from": exp.config["model"]["pretrained"]} if exp.config["model"].get("pretrained") else {}),
        "loss": exp.config["loss"],
        "training_data": exp.data.summary,
        "thresholds": thresholds,
        **({"impostor_tail": tail} if tail else {}),
        "metrics": metrics,
        "epochs": exp.trainer.epoch,
    }
    return save_artifact(exp.run_dir.path / "model", model, card)


def _validation_impostor_tail(exp: Experiment, model: Any) -> dict[str, Any] | None:
    """The model's impostor tail (:func:`facemetric.eval.open_set.impostor_tail`) on the
    distinct validation images of a photo pair set (their identities are the folder names),
    for size-aware open-set thresholds of galleries; levels need 10 pairs above them. None
    when the validation set is not made of photo folders."""
    evaluator = exp.trainer.evaluator
    if not isinstance(evaluator, PairSetEvaluator):
        return None
    labels = evaluator.identities()
    if labels is None or len(set(labels)) < 2:
        return None
    tail = impostor_tail(evaluator.embeddings(model), labels, min_pairs=10)
    if not tail["levels"]:
        return None
    tail["measured_on"] = (
        f"validation photos: {len(labels)} images of {len(set(labels))} people"
        + (" (flip-summed embeddings)" if evaluator.flip else "")
    )
    return tail


def run_experiment(
    config: dict[str, Any] | str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train from a config (dict, YAML path or None for defaults) into a run directory.

    With ``resume=True`` the run directory must exist; its saved config is used (overrides
    still apply) and training continues from the newest checkpoint.

    Under torchrun (``WORLD_SIZE > 1``) every process calls this: it joins the process group
    (gloo for ``train.device: cpu``, NCCL for CUDA; left again at the end when it joined it
    here), all ranks train data-parallel, and rank 0 alone writes the run directory (config,
    metrics, checkpoints, report, model). The run directory (without ``run_dir``: rank 0's
    default name) is the same on every rank.
    """
    if resume:
        config = load_config(saved_config(run_dir), overrides)
    elif isinstance(config, dict):
        config = resolve_config(config, overrides)  # relative paths: the working directory
    else:
        config = load_config(config, overrides)
    joined = False
    if not distributed.is_distributed():
        device = resolve_device(str(config["train"]["device"]))
        joined = distributed.init_from_env(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        return _run(config, run_dir, resume, progress)
    finally:
        if joined:
            distributed.shutdown()


def _run(config: dict[str, Any], run_dir: str | os.PathLike | None, resume: bool,
         progress: bool) -> TrainResult:
    main = distributed.is_main_process()
    run_dir = Path(run_dir) if run_dir is not None else distributed.broadcast_object(default_run_dir(config))
    exp = build_experiment(config, run_dir, progress=progress and main)
    assert exp.run_dir is not None
    if main:
        exp.run_dir.write_config(config)
        exp.run_dir.write_run_info({"data": exp.data.summary, "world_size": distributed.world_size()})
    history = exp.trainer.fit(resume=resume)
    final: dict[str, Any] = {}
    for r in history:
        final[r["split"]] = r
    if main:
        exp.run_dir.write_text("report.md", _report_markdown(config, history, exp.data.summary))
        if exp.data.supports_artifact:
            write_model_artifact(exp, final.get("val"))
    distributed.barrier()
    return TrainResult(exp.run_dir.path, history, final, exp.model, exp.loss, exp.data, exp.trainer.evaluator)


__all__ = ["run_experiment", "build_experiment", "SAMPLERS", "TrainResult", "Experiment"]
