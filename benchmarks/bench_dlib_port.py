"""Embedding throughput of the PyTorch port of dlib's face ResNet against dlib itself.

    python benchmarks/bench_dlib_port.py [--batch 32] [--batches 5] [--threads N]

Both embed the same 150x150 aligned chips (random uint8 chips: the work does not depend on the
content) in batches of ``--batch``:

* facemetric: ``load_model("dlib-resnet-v1", align=False).embed(chips)`` -- the card's
  preprocessing plus one forward pass of the port per batch (CPU, ``torch`` threads);
* dlib: ``face_recognition_model_v1.compute_face_descriptor(list_of_chips)`` (dlib's batched
  call on aligned chips, as installed: ``dlib-bin``).

Prints faces/s of each and the ratio (target: the port at least as fast), after checking that
the two agree on the chips (max abs difference).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from facemetric import load_model

    rng = np.random.default_rng(0)
    chips = [rng.integers(0, 256, (150, 150, 3), dtype=np.uint8) for _ in range(args.batch)]
    ours = load_model("dlib-resnet-v1", align=False)
    ours.embed(chips[:4])  # warm-up

    def time_ours() -> float:
        t0 = time.perf_counter()
        for _ in range(args.batches):
            ours.embed(chips, batch_size=args.batch)
        return time.perf_counter() - t0

    t_ours = min(time_ours() for _ in range(2))
    n = args.batch * args.batches
    print(f"facemetric port : {n / t_ours:8.1f} faces/s  ({t_ours / args.batches * 1000:.0f} ms per batch of {args.batch}, {args.threads} threads)")

    if importlib.util.find_spec("dlib") is None:
        print("dlib not installed (pip install 'facemetric[dlib]'): no reference timing")
        return
    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    path = os.path.join(os.path.dirname(spec.origin), "models", "dlib_face_recognition_resnet_model_v1.dat")
    rec = dlib.face_recognition_model_v1(path)
    ref = np.array([np.array(d) for d in rec.compute_face_descriptor(chips)])
    diff = np.abs(ours.embed(chips, batch_size=args.batch) - ref).max()
    print(f"agreement       : max |port - dlib| = {diff:.2e} over {len(chips)} chips x 128")
    t0 = time.perf_counter()
    for _ in range(max(1, args.batches // 2)):
        rec.compute_face_descriptor(chips)
    t_dlib = (time.perf_counter() - t0) / max(1, args.batches // 2) * args.batches
    print(f"dlib            : {n / t_dlib:8.1f} faces/s  ({t_dlib / args.batches * 1000:.0f} ms per batch)")
    print(f"ratio           : port is {t_dlib / t_ours:.1f}x dlib's throughput (target >= 1)")


if __name__ == "__main__":
    main()
