"""Partial FC against the full classifier: memory per rank and step time, 100k and 1M classes.

    python benchmarks/bench_partial_fc.py [--dim 512] [--batch 256] [--steps 3] [--threads 1]
        [--sizes 100000,1000000] [--json runs/bench_partial_fc.json] [--full-1m]

One training step = forward + backward of the head + an SGD step with momentum (so the
classifier costs weight + gradient + momentum, as in training) on a global batch of ``batch``
embeddings (a leaf tensor standing in for the backbone's output) of dimension ``dim``, the
ArcFace target (m 0.5, s 64). Each configuration runs in a fresh process; reported:

* ``MB``: the peak resident memory of that process during the steps minus its resident
  memory just before the head was built (after one step of a 16-class head, so that one-time
  costs are not counted) (``ru_maxrss`` from ``getrusage``; CPU, float32);
  ``state MB`` the analytical ``3 C_r D 4`` bytes of weight + gradient + momentum of the rows
  that process holds;
* ``s/step``: median wall time of ``--steps`` steps after one warm-up round
  (``torch.set_num_threads(--threads)``); the one-process configurations of a size are timed
  in one more process with their steps interleaved round-robin, so that load from other
  processes falls on all of them alike (the 2-rank run is timed on its own).

Rows:

* ``full``: ``arcface`` with all ``C`` classes in one process (the baseline);
* ``partial-fc 1 proc``: ``partial-fc`` in one process without a process group (rate 1.0 is the
  full head through Partial FC's code; rate 0.1 samples 10% of the centres);
* ``partial-fc 2 ranks``: two real gloo processes on loopback (``facemetric.distributed``),
  each holding ``C/2`` classes and ``batch/2`` embeddings; the figures are rank 0's, communication
  (all-gather of the embeddings, the softmax's all-reduces) included;
* ``rank of N (sim)``: what one of ``N`` ranks computes and holds, run as ``partial-fc`` over a
  ``C/N``-class shard in one process with the global batch (labels drawn inside the shard;
  communication not included: on one machine it is a few ``B x D`` and ``B`` all-reduces per
  step). This is how the 1M rows fit on a CPU.

``full`` at 1M classes is not run by default (weight + gradient + momentum alone are 6.1 GB
with D = 512, plus about ``B C`` floats per activation); ``--full-1m`` runs it where the memory
is there. Its row is then an estimate: the state plus the activation bytes per logit measured
at the largest ``full`` size that ran, marked ``est``. Ratios are against ``full`` at the same
number of classes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from facemetric import distributed
from facemetric.losses import build_loss
from facemetric.losses.partial_fc import shard_range

MARGIN, SCALE = 0.5, 64.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _warm_up(dim: int) -> None:
    """One step of a 16-class head of each kind first, so that the one-time costs (thread
    pools, autograd and optimizer code paths) are not counted as the head's memory."""
    x = torch.nn.Parameter(torch.randn(8, dim))
    for name in ("arcface", "partial-fc"):
        head = build_loss(name, embedding_dim=dim, num_classes=16, margin=MARGIN, scale=SCALE)
        opt = torch.optim.SGD([x, *head.parameters()], lr=0.1, momentum=0.9)
        head(x, torch.arange(8) % 16).backward()
        opt.step()


class Setup:
    """One configuration's head, optimizer and batch; :meth:`step` is one training step."""

    def __init__(self, cfg: dict, dim: int, local_batch: int) -> None:
        g = torch.Generator().manual_seed(distributed.rank())
        self.emb = torch.nn.Parameter(torch.randn(local_batch, dim, generator=g))
        # a shard simulated in one process draws its labels inside the shard
        high = cfg["classes"] if cfg["kind"] == "full" or cfg.get("real") else cfg["held"]
        self.labels = torch.randint(0, high, (local_batch,), generator=g)
        classes = cfg["classes"] if cfg.get("real") else cfg["held"]
        if cfg["kind"] == "full":
            self.loss_fn = build_loss("arcface", embedding_dim=dim, num_classes=classes, margin=MARGIN, scale=SCALE)
        else:
            self.loss_fn = build_loss("partial-fc", embedding_dim=dim, num_classes=classes, head="arcface",
                                      sample_rate=cfg["rate"], margin=MARGIN, scale=SCALE)
        self.opt = torch.optim.SGD([self.emb, *self.loss_fn.parameters()], lr=0.1, momentum=0.9)
        self.rows = int(self.loss_fn.weight.shape[0])
        self.times: list[float] = []

    def step(self, record: bool) -> None:
        distributed.barrier()
        t = time.perf_counter()
        self.opt.zero_grad(set_to_none=False)
        self.loss_fn(self.emb, self.labels).backward()
        self.opt.step()
        if record:
            self.times.append(time.perf_counter() - t)


def _memory(cfg: dict, dim: int, batch: int) -> dict:
    """Peak memory of one warm-up and one step of ``cfg`` in this (fresh) process."""
    _warm_up(dim)
    before = _rss_mb()
    setup = Setup(cfg, dim, batch // (cfg["ranks"] if cfg.get("real") else 1))
    for i in range(2):
        setup.step(record=bool(i))
    return {"mb": _peak_mb() - before, "rows": setup.rows, "state_mb": 3 * setup.rows * dim * 4 / 2**20,
            "s_per_step": setup.times[0]}


def _timing(cfgs: list[dict], dim: int, batch: int, steps: int) -> list[float]:
    """Median step time of each of ``cfgs`` (one process), steps interleaved round-robin so
    that load from other processes falls on every configuration alike."""
    setups = [Setup(cfg, dim, batch) for cfg in cfgs]
    for round_ in range(steps + 1):
        for setup in setups:
            setup.step(record=round_ > 0)
    return [statistics.median(s.times) for s in setups]


def _child(queue, job: str, args: tuple, threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        queue.put(("ok", _memory(*args) if job == "memory" else _timing(*args)))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def _in_fresh_process(job: str, args: tuple, threads: int):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, job, args, threads))
    proc.start()
    status, result = queue.get(timeout=3600)
    proc.join(timeout=60)
    if status != "ok":
        raise RuntimeError(f"{job}: {result}")
    return result


def _rank_job(cfg: dict, dim: int, batch: int, steps: int) -> dict:
    out = _memory(cfg, dim, batch)
    setup = Setup(cfg, dim, batch // distributed.world_size())
    for i in range(steps + 1):
        setup.step(record=i > 0)
    out["s_per_step"] = statistics.median(setup.times)
    return out


def run_size(cfgs: list[dict], dim: int, batch: int, steps: int, threads: int) -> list[dict]:
    """Memory of every configuration in its own fresh process; step times of the one-process
    configurations interleaved in one more; the real 2-rank run on its own."""
    results = []
    for cfg in cfgs:
        if cfg.get("real"):
            r = distributed.spawn_local(_rank_job, cfg["ranks"], args=(cfg, dim, batch, steps),
                                        timeout_s=3600, threads=threads)[0]
            r["timing"] = "own run"
        else:
            r = _in_fresh_process("memory", (cfg, dim, batch), threads)
        results.append({**cfg, **r})
    local = [i for i, cfg in enumerate(cfgs) if not cfg.get("real")]
    times = _in_fresh_process("timing", ([cfgs[i] for i in local], dim, batch, steps), threads)
    for i, t in zip(local, times, strict=True):
        results[i]["s_per_step"] = t
        results[i]["timing"] = "interleaved"
    return results


def configs(sizes: list[int], batch: int, full_1m: bool) -> list[dict]:
    rows = []
    for classes in sizes:
        big = classes >= 1_000_000
        if not big or full_1m:
            rows.append({"label": "full", "kind": "full", "classes": classes, "held": classes, "rate": 1.0})
        if not big:
            for rate in (1.0, 0.1):
                rows.append({"label": f"partial-fc 1 proc, rate {rate}", "kind": "partial",
                             "classes": classes, "held": classes, "rate": rate})
            rows.append({"label": "partial-fc 2 ranks, rate 0.1", "kind": "partial", "classes": classes,
                         "held": shard_range(classes, 2, 0)[1], "rate": 0.1, "ranks": 2, "real": True})
        for ranks in (8,) if not big else (8, 64):
            for rate in (1.0, 0.1):
                rows.append({"label": f"rank of {ranks} (sim), rate {rate}", "kind": "partial",
                             "classes": classes, "held": shard_range(classes, ranks, 0)[1], "rate": rate,
                             "ranks": ranks})
    for row in rows:
        row["batch"] = batch
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--full-1m", action="store_true", help="also run the full classifier at 1M")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here as JSON")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"D {args.dim}, global batch {args.batch}, {args.steps} timed steps, {args.threads} thread(s), "
          f"torch {torch.__version__}", flush=True)
    header = f"{'classes':>9} {'configuration':<30} {'rows held':>9} {'state MB':>9} {'MB':>8} {'s/step':>8} {'mem x':>7} {'speed x':>8}"
    print(header)
    results, full_by_size = [], {}
    per_logit = None  # activation bytes per logit of the full head (for the 1M estimate)

    def report(row: dict) -> None:
        base = full_by_size.get(row["classes"])
        row["memory_ratio"] = base["mb"] / row["mb"] if base and row["mb"] > 0 else None
        row["speed_ratio"] = (base["s_per_step"] / row["s_per_step"]
                              if base and base["s_per_step"] and row["s_per_step"] else None)
        step = f"{row['s_per_step']:.3f}" if row["s_per_step"] else "-"
        mem_x = f"{row['memory_ratio']:.1f}" if row["memory_ratio"] else "-"
        speed_x = f"{row['speed_ratio']:.1f}" if row["speed_ratio"] else "-"
        print(f"{row['classes']:>9} {row['label']:<30} {row['rows']:>9} {row['state_mb']:>9.0f} "
              f"{row['mb']:>8.0f} {step:>8} {mem_x:>7} {speed_x:>8}", flush=True)
        results.append(row)

    all_cfgs = configs(sizes, args.batch, args.full_1m)
    for classes in sizes:
        cfgs = [c for c in all_cfgs if c["classes"] == classes]
        if not any(c["kind"] == "full" for c in cfgs) and per_logit is not None:
            state = 3 * classes * args.dim * 4 / 2**20
            full_by_size[classes] = {
                "label": "full (est: not run)", "kind": "full", "classes": classes, "held": classes,
                "rate": 1.0, "batch": args.batch, "state_mb": state, "rows": classes,
                "mb": state + per_logit * args.batch * classes / 2**20, "s_per_step": None,
                "estimate": True,
            }
            report(full_by_size[classes])
        for row in run_size(cfgs, args.dim, args.batch, args.steps, args.threads):
            row["estimate"] = False
            if row["kind"] == "full":
                full_by_size[classes] = row
                per_logit = (row["mb"] - row["state_mb"]) * 2**20 / (args.batch * classes)
            report(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"argv": sys.argv[1:], "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
