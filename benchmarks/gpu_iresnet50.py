"""IResNet-50 training throughput and peak memory on one CUDA GPU: fp32 vs fp16 vs bf16.

For a device machine (never run by the tests). The arcface_torch setting: IResNet-50,
112x112 RGB, batch 256, an ArcFace head (``--classes``, default 10k), SGD; each setting
trains through :meth:`facemetric.train.trainer.Trainer.train_step` (autocast forward, float32
head, GradScaler for fp16, optimizer step). Per setting: ``--warmup`` steps, then ``--steps``
timed steps between CUDA synchronisations; images/s = batch x steps / time; peak memory =
``torch.cuda.max_memory_allocated`` over the timed steps (reset per setting). Settings run in
a fresh model each, one after another; ``--channels-last`` adds the NHWC variants. Prints a
markdown table and writes JSON (``--out``).

    python benchmarks/gpu_iresnet50.py [--batch 256] [--steps 30] [--warmup 10]
                                       [--channels-last] [--out runs/gpu_iresnet50.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from facemetric.data.samplers import UniformBatchSampler
from facemetric.data.tensor_dataset import TensorImageDataset
from facemetric.io import atomic_write_bytes
from facemetric.losses import build_loss
from facemetric.models import build_model
from facemetric.train.trainer import Trainer


def run_setting(args, precision: str, channels_last: bool) -> dict:
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = build_model("iresnet50", input_size=112, embedding_dim=512)
    loss = build_loss("arcface", embedding_dim=512, num_classes=args.classes, scale=64.0, margin=0.5)
    opt = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.02, momentum=0.9,
                          weight_decay=5e-4)
    images = torch.randn(args.batch, 3, 112, 112, device=device)
    labels = torch.randint(args.classes, (args.batch,), device=device)
    data = TensorImageDataset(images, labels)
    trainer = Trainer(model, loss, data, UniformBatchSampler(args.batch, args.batch), opt, epochs=1,
                      progress=False, device=device, precision=precision, channels_last=channels_last)
    for _ in range(args.warmup):
        trainer.train_step(images, labels)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    last = 0.0
    for _ in range(args.steps):
        last = trainer.train_step(images, labels)["loss"]
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    row = {
        "precision": precision, "channels_last": channels_last,
        "images_per_s": args.batch * args.steps / seconds, "step_ms": 1000 * seconds / args.steps,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "last_loss": last,
    }
    del trainer, model, loss, opt, images, labels, data
    torch.cuda.empty_cache()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precisions", default="fp32,fp16,bf16")
    parser.add_argument("--channels-last", action="store_true", help="also the NHWC variants")
    parser.add_argument("--out", default="runs/gpu_iresnet50.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_iresnet50: no CUDA device here (this benchmark is for a GPU machine)", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    rows = []
    for channels_last in ([False, True] if args.channels_last else [False]):
        for precision in args.precisions.split(","):
            rows.append(run_setting(args, precision.strip(), channels_last))
            r = rows[-1]
            print(f"{precision}{' channels_last' if channels_last else ''}: "
                  f"{r['images_per_s']:.0f} images/s, {r['peak_memory_gib']:.2f} GiB", flush=True)
    base = next(r for r in rows if r["precision"] == "fp32" and not r["channels_last"])["images_per_s"] \
        if any(r["precision"] == "fp32" for r in rows) else None
    info = {
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "batch": args.batch, "classes": args.classes,
        "steps": args.steps, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_precision": torch.get_float32_matmul_precision(), "rows": rows,
    }
    print(f"\nIResNet-50 112x112, batch {args.batch}, ArcFace ({args.classes} classes), "
          f"{info['gpu']}, torch {info['torch']} (CUDA {info['cuda']})\n")
    print("| precision | channels_last | images/s | x fp32 | step (ms) | peak memory (GiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['images_per_s'] / base:.2f}" if base else "-"
        print(f"| {r['precision']} | {r['channels_last']} | {r['images_per_s']:.0f} | {ratio} | "
              f"{r['step_ms']:.1f} | {r['peak_memory_gib']:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, json.dumps(info, indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
