"""Benchmark: images/s of the input pipeline, decoding on the fly vs reading the decoded cache.

Run as ``python benchmarks/bench_data_pipeline.py [--images 2000] [--batch-size 128]``. On the
first ``--images`` LFW deep-funneled JPEGs (sorted by identity and file name), for input sizes
112x112 and 112x96, with training augmentation (random crop out of a slightly larger stored
image + random flip) in every mode:

* on the fly: ``ImageFileDataset`` (decode + centre crop + resize + augment + to tensor) read
  through a ``DataLoader`` with 0 and 2 worker processes (one pass, worker start-up included,
  as the trainer re-creates its workers every epoch);
* the cache: the one-off ``build_image_cache`` (2 decoding threads), then
  ``CachedImageDataset.get_batch`` (memory-map read + batched augmentation + normalisation),
  3 epochs of shuffled batches.

Each mode reports the best of ``--repeats`` passes. ``--threads`` (default 1) sets torch's
intra-op threads in the main process: on a busy 2-core machine every parallel torch kernel
(e.g. the DataLoader's ``torch.stack`` of 112x112 float images) was measured to cost ~8 ms with
2 threads against microseconds with 1, which would dominate the workers=0 mode. The cache path
does its per-pixel work in NumPy and is not affected either way.

Prints one line per mode and the ratio cache / best on-the-fly. Compare the numbers with the
model's training images/s: the data pipeline should be much faster than the model.
Exits 0 with a message when the LFW data are absent (``FACEMETRIC_SHARED_DATA`` or
``../shared/data``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from facemetric.data.cache import CachedImageDataset, ImageFileDataset, build_image_cache
from facemetric.data.transforms import Preprocessing

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEMETRIC_SHARED_DATA", REPO.parent / "shared" / "data"))

# (input_size, stored_size, centre crop of the 250x250 deep-funneled image)
SIZES = [((112, 112), (128, 128), (150, 150)), ((112, 96), (128, 110), (150, 128))]


def lfw_paths(root: Path, n: int) -> list[Path]:
    paths: list[Path] = []
    for d in sorted(e.name for e in os.scandir(root) if e.is_dir()):
        paths.extend(sorted((root / d).glob("*.jpg")))
        if len(paths) >= n:
            break
    return paths[:n]


def best_of(repeats: int, fn, *args) -> float:
    """The best images/s of ``repeats`` runs of ``fn(*args)`` (the machine may be shared)."""
    return max(fn(*args) for _ in range(repeats))


def on_the_fly(paths, prep, batch_size: int, workers: int) -> float:
    ds = ImageFileDataset(paths, [0] * len(paths), prep, train=True, seed=0)
    ds.set_epoch(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True,
                                         num_workers=workers, drop_last=False)
    t0 = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def from_cache(arr, prep, batch_size: int, epochs: int = 3) -> float:
    ds = CachedImageDataset(arr, [0] * arr.shape[0], prep, train=True, seed=0)
    n, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(epoch))
        for b in range(0, len(ds), batch_size):
            x, _ = ds.get_batch(order[b : b + batch_size])
            n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads in this process (see the module docstring)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many passes per mode")
    ap.add_argument("--data", type=Path, default=SHARED / "lfw-deepfunneled")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skipped: LFW deep-funneled images not found at {args.data} "
              "(set FACEMETRIC_SHARED_DATA)")
        return 0
    torch.set_num_threads(max(1, args.threads))
    paths = lfw_paths(args.data, args.images)
    for p in paths:  # warm the OS file cache: measure decoding, not the disk
        p.read_bytes()
    print(f"{len(paths)} LFW images, batch {args.batch_size}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), best of "
          f"{args.repeats}, train augmentation (random crop + flip) in every mode")
    with tempfile.TemporaryDirectory() as tmp:
        for size, stored, crop in SIZES:
            prep = Preprocessing(input_size=size, crop=crop, stored_size=stored)
            tag = f"{size[0]}x{size[1]} (crop {crop[0]}x{crop[1]} -> {stored[0]}x{stored[1]})"
            fly = {
                w: best_of(args.repeats, on_the_fly, paths, prep, args.batch_size, w)
                for w in (0, 2)
            }
            for w, rate in fly.items():
                print(f"on-the-fly   {tag}: DataLoader workers={w}: {rate:8.0f} images/s")
            t0 = time.perf_counter()
            arr = build_image_cache(paths, prep, Path(tmp) / f"{size[0]}x{size[1]}.npy",
                                    num_workers=2, progress=False)
            build = len(paths) / (time.perf_counter() - t0)
            print(f"cache build  {tag}: 2 threads (one-off):   {build:8.0f} images/s")
            cached = best_of(args.repeats, from_cache, arr, prep, args.batch_size)
            print(f"cache read   {tag}: get_batch:             {cached:8.0f} images/s")
            print(f"ratio        {tag}: cache / best on-the-fly = {cached / max(fly.values()):.1f}x")
            del arr
    return 0


if __name__ == "__main__":
    sys.exit(main())
