"""The founding-losses demo on the embedded digits (``facemetric demo``).

Trains LeNets++ with 2-D features under softmax, L2-softmax, center loss (several lambdas,
as in the center-loss paper's Fig. 3) and triplet loss; evaluates verification on generated
pairs of held-out digits; writes ``report.json``, one feature-scatter PNG per loss, an ROC
plot and ``report.html`` that shows them side by side.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from facemetric.eval.embedding import embed_dataset, evaluate_pairs
from facemetric.eval.feature_stats import feature_statistics
from facemetric.report.html import render_report
from facemetric.report.plots import feature_scatter, roc_plot
from facemetric.train.checkpoint import atomic_write_bytes
from facemetric.train.experiment import run_experiment

#: (variant name, loss section, sampler section)
DEMO_VARIANTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("softmax", {"name": "softmax"}, {"name": "uniform", "batch_size": 128}),
    ("l2-softmax", {"name": "l2-softmax", "alpha": "auto"}, {"name": "uniform", "batch_size": 128}),
    ("center-lambda-0.01", {"name": "center", "lambda_": 0.01, "alpha": 0.5}, {"name": "uniform", "batch_size": 128}),
    ("center-lambda-0.1", {"name": "center", "lambda_": 0.1, "alpha": 0.5}, {"name": "uniform", "batch_size": 128}),
    ("center-lambda-0.3", {"name": "center", "lambda_": 0.3, "alpha": 0.5}, {"name": "uniform", "batch_size": 128}),
    ("triplet", {"name": "triplet", "margin": 0.2, "strategy": "semi-hard"},
     {"name": "pk", "people_per_batch": 10, "images_per_person": 12, "batches_per_epoch": 10}),
]

#: variants beyond the founding losses, run only when asked for (``--loss arcface``); margins
#: are smaller than the face recipes' because 10 classes share a 2-D circle (36 degrees apart)
EXTRA_VARIANTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("normface", {"name": "normface", "scale": "auto"}, {"name": "uniform", "batch_size": 128}),
    ("sphereface", {"name": "sphereface", "margin": 2}, {"name": "uniform", "batch_size": 128}),
    ("cosface", {"name": "cosface", "margin": 0.1}, {"name": "uniform", "batch_size": 128}),
    ("arcface", {"name": "arcface", "margin": 0.1}, {"name": "uniform", "batch_size": 128}),
]

DEMO_BASE: dict[str, Any] = {
    "seed": 0,
    "data": {"name": "digits", "input_size": 16},
    "model": {"name": "lenets++", "embedding_dim": 2},
    "optimizer": {"name": "sgd", "lr": 0.01, "weight_decay": 5e-4, "momentum": 0.9},
    "schedule": {"name": "cosine", "warmup_epochs": 1.0},
    "train": {"epochs": 20, "grad_clip": 5.0, "eval_every": 0, "device": "cpu"},
}


def demo_config(variant: str, epochs: int | None = None) -> dict[str, Any]:
    """The full config of one demo variant (also what ``configs/digits-*.yaml`` hold)."""
    for name, loss, sampler in DEMO_VARIANTS + EXTRA_VARIANTS:
        if name == variant:
            cfg = json.loads(json.dumps(DEMO_BASE))
            cfg.update(name=f"digits-{name}", loss=dict(loss), sampler=dict(sampler))
            if epochs is not None:
                cfg["train"]["epochs"] = int(epochs)
            return cfg
    raise KeyError(variant)


def run_demo(
    out: str | os.PathLike = "runs/demo",
    epochs: int | None = None,
    variants: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the report dict (also written to ``out/report.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = variants or [name for name, _, _ in DEMO_VARIANTS]
    report: dict[str, Any] = {"dataset": "scikit-learn digits (embedded)", "losses": {}}
    rows, figures, curves = [], [], {}
    started = time.perf_counter()
    for name in names:
        cfg = demo_config(name, epochs)
        t0 = time.perf_counter()
        result = run_experiment(cfg, run_dir=out / "runs" / name, progress=progress)
        seconds = time.perf_counter() - t0
        data = result.data
        emb = embed_dataset(result.model, data.val)
        metrics = evaluate_pairs(emb, data.val_pairs, distance="squared_l2", far_target=1e-3)
        stats = feature_statistics(emb, data.val.labels)
        # compactness and the plot in the space the loss shapes: the unit circle for losses
        # that normalise (L2-softmax, triplet), the raw feature otherwise (softmax, center)
        space = "normalized" if result.loss.normalizes_features else "raw"
        ratio = stats["intra_inter_ratio_normalized" if space == "normalized" else "intra_inter_ratio"]
        shown = torch.nn.functional.normalize(emb, dim=1) if space == "normalized" else emb
        png = f"features-{name}.png"
        feature_scatter(
            shown.numpy(), data.val.labels.numpy(), out / png,
            title=f"{name}: held-out digits, {space} features (intra/inter {ratio:.3f})",
            class_names=data.val.class_names,
        )
        roc = metrics.pop("roc")
        curves[name] = (roc["fpr"], roc["tpr"])
        train_final = result.final.get("train", {})
        entry = {
            "loss": cfg["loss"],
            "epochs": cfg["train"]["epochs"],
            "train_seconds": seconds,
            "train_accuracy": train_final.get("accuracy"),
            "accuracy": metrics["accuracy_mean"],
            "accuracy_std": metrics["accuracy_std"],
            "val_at_far_1e-3": metrics["val"],
            "far": metrics["far"],
            "auc": metrics["auc"],
            "eer": metrics["eer"],
            "feature_space": space,
            "intra_inter_ratio": ratio,
            "intra_inter_ratio_raw": stats["intra_inter_ratio"],
            "intra_inter_ratio_normalized": stats["intra_inter_ratio_normalized"],
            "feature_norm": stats["feature_norm"],
            "figure": png,
            "run_dir": str(Path("runs") / name),
            "verification": metrics,
        }
        report["losses"][name] = entry
        rows.append([
            name, entry["accuracy"], entry["val_at_far_1e-3"], entry["auc"], entry["eer"],
            space, entry["intra_inter_ratio"], entry["intra_inter_ratio_raw"],
            entry["intra_inter_ratio_normalized"],
            stats["feature_norm"]["mean"], seconds,
        ])
        figures.append((png, name))
    roc_plot(curves, out / "roc.png")
    figures.append(("roc.png", "ROC (held-out pairs)"))
    report["total_seconds"] = time.perf_counter() - started
    report["pairs"] = {"num_pairs": len(data.val_pairs), "folds": int(data.val_pairs.fold.max()) + 1}
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2).encode())
    page = render_report(
        "facemetric demo: founding losses on digits",
        "LeNets++ with 2-D features trained on scikit-learn's digits; verification on generated "
        f"pairs of held-out digits ({report['pairs']['num_pairs']} pairs, "
        f"{report['pairs']['folds']} folds, squared L2 on normalised features).",
        ["loss", "accuracy", "VAL@FAR=1e-3", "AUC", "EER", "loss space", "intra/inter",
         "intra/inter (raw)", "intra/inter (normalised)", "mean ||x||", "train s"],
        rows,
        figures,
        notes=[
            "intra/inter = mean distance of a feature to its class mean / mean distance between "
            "class means (smaller is tighter), in the space the loss shapes: raw features for "
            "softmax and center loss, L2-normalised ones for L2-softmax and triplet loss.",
            f"total time {report['total_seconds']:.1f} s",
        ],
    )
    atomic_write_bytes(out / "report.html", page.encode())
    return report
