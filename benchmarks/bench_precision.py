"""Training images/s per precision/speed setting on CPU, through the trainer's own step.

Settings: ``fp32`` (the reference), ``bf16`` (autocast), ``channels_last``,
``channels_last+bf16`` and ``compile`` (``torch.compile``, fp32; ``--no-compile`` skips it).
Every setting trains the same backbone (default MobileFaceNet at 64x64, batch 16: sized for
a shared 2-core machine; ``--size 112 --batch 32`` for the real input) with an
ArcFace head on the same random batches via :meth:`facemetric.train.trainer.Trainer.train_step`
(forward under autocast, float32 head, backward, SGD step). After warm-up steps (compilation
included), the settings are timed in interleaved rounds (so load on a shared machine hits all
of them alike) and each reports its median step time; the table gives images/s and the ratio
to fp32 of the same run. Prints a markdown table and one JSON line.

    python benchmarks/bench_precision.py [--model mobilefacenet] [--size 64] [--batch 16]
                                         [--rounds 2] [--steps 3] [--no-compile] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from facemetric.data.samplers import UniformBatchSampler
from facemetric.data.tensor_dataset import TensorImageDataset
from facemetric.losses import build_loss
from facemetric.models import build_model
from facemetric.train.trainer import Trainer

SETTINGS = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "channels_last": {"channels_last": True},
    "channels_last+bf16": {"channels_last": True, "precision": "bf16"},
    "compile": {"compile": True},
}


def make_trainer(args, data, options) -> Trainer:
    torch.manual_seed(0)
    model = build_model(args.model, input_size=args.size, embedding_dim=512)
    loss = build_loss("arcface", embedding_dim=512, num_classes=args.classes, scale=64.0, margin=0.5)
    opt = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.01, momentum=0.9)
    sampler = UniformBatchSampler(len(data), args.batch, seed=0)
    return Trainer(model, loss, data, sampler, opt, epochs=1, progress=False, device="cpu", **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilefacenet")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="steps per setting per round")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads (0: torch's default; 1 on a busy shared machine)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    labels = torch.randint(args.classes, (args.batch,), generator=g)
    data = TensorImageDataset(images, labels)
    names = [n for n in SETTINGS if not (n == "compile" and args.no_compile)]
    trainers, warmup_s = {}, {}
    for name in names:
        trainers[name] = make_trainer(args, data, SETTINGS[name])
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            trainers[name].train_step(images, labels)
        warmup_s[name] = time.perf_counter() - t0
        print(f"{name}: warm-up {warmup_s[name]:.1f} s", flush=True)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names:
            for _ in range(args.steps):
                t0 = time.perf_counter()
                trainers[name].train_step(images, labels)
                times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    median = {n: statistics.median(t) for n, t in times.items()}
    rows = {n: {"step_s": median[n], "images_per_s": args.batch / median[n],
                "vs_fp32": median["fp32"] / median[n], "warmup_s": warmup_s[n]} for n in names}
    print(f"\n{args.model} {args.size}x{args.size}, batch {args.batch}, ArcFace head "
          f"({args.classes} classes), torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| setting | step (s) | images/s | x fp32 |\n|---|---|---|---|")
    for n, row in rows.items():
        print(f"| {n} | {row['step_s']:.3f} | {row['images_per_s']:.1f} | {row['vs_fp32']:.2f} |")
    print(json.dumps({"model": args.model, "size": args.size, "batch": args.batch,
                      "threads": torch.get_num_threads(), "torch": torch.__version__, "settings": rows}))


if __name__ == "__main__":
    main()
