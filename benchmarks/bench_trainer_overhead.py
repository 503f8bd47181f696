"""Trainer step time against a bare PyTorch loop on the same model, loss and batches.

Both train SphereFace-20 (batch norm) at 56x48 with a softmax head on the same in-memory
batches (SGD momentum, cosine schedule stepped per step); the trainer additionally runs its
sampler, loss statistics, progress bar, metric logging and the end-of-epoch checkpoint.
Prints the ratio (target: the trainer within 10% of the bare loop).

    python benchmarks/bench_trainer_overhead.py [--steps 30] [--batch 64] [--model face-resnet-20]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from facemetric.data.samplers import UniformBatchSampler
from facemetric.data.tensor_dataset import TensorImageDataset
from facemetric.losses import SoftmaxLoss
from facemetric.models import build_model
from facemetric.train.schedules import build_scheduler
from facemetric.train.trainer import Trainer


def make(args, seed=0):
    torch.manual_seed(seed)
    model = build_model(args.model, batch_norm=True, input_size=(56, 48), embedding_dim=512)
    loss = SoftmaxLoss(512, args.classes)
    params = list(model.parameters()) + list(loss.parameters())
    opt = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=5e-4)
    return model, loss, opt


def bare_loop(args, data, order):
    model, loss, opt = make(args)
    sched = build_scheduler("cosine", opt, steps_per_epoch=args.steps, epochs=1)
    model.train()
    t0 = time.perf_counter()
    for idx in order:
        x, y = data.images[idx], data.labels[idx]
        out = F.cross_entropy(loss.classifier(model(x)), y)
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - t0


def trainer_loop(args, data, progress):
    model, loss, opt = make(args)
    sampler = UniformBatchSampler(len(data), args.batch, seed=0, drop_last=True)
    sched = build_scheduler("cosine", opt, steps_per_epoch=len(sampler), epochs=1)
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(model, loss, data, sampler, opt, sched, epochs=1, run_dir=run,
                          progress=progress, device="cpu")
        t0 = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--classes", type=int, default=600)
    ap.add_argument("--model", default="face-resnet-20")
    args = ap.parse_args()
    n = args.steps * args.batch
    g = torch.Generator().manual_seed(0)
    data = TensorImageDataset(torch.randn(n, 3, 56, 48, generator=g),
                              torch.randint(0, args.classes, (n,), generator=g))
    order = [torch.randperm(n, generator=g)[i * args.batch:(i + 1) * args.batch] for i in range(args.steps)]
    bare_loop(args, data, order[:2])  # warm-up (allocator, kernels)
    times = {"bare": [], "trainer": [], "trainer+progress": []}
    for _ in range(2):  # interleave to share machine noise
        times["bare"].append(bare_loop(args, data, order))
        times["trainer"].append(trainer_loop(args, data, progress=False))
        times["trainer+progress"].append(trainer_loop(args, data, progress=True))
    best = {k: min(v) for k, v in times.items()}
    for k, v in best.items():
        print(f"{k:<17} {v:7.2f} s for {args.steps} steps of {args.batch} ({n / v:6.1f} images/s)")
    for k in ("trainer", "trainer+progress"):
        ratio = best[k] / best["bare"]
        print(f"{k} / bare loop: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%; target within +10%: "
              f"{'ok' if ratio <= 1.10 else 'MISSED'})")


if __name__ == "__main__":
    main()
