"""End-to-end photos/s: facemetric's native pipeline against face_recognition, in one run.

    python benchmarks/bench_pipeline_speed.py [--photos 96] [--batch 32] [--threads N]

Both turn the same LFW photo files (every k-th file of ``../shared/data/lfw-deepfunneled``)
into 128-D descriptors of dlib's face ResNet:

* facemetric: ``load_model("dlib-resnet-v1").embed(paths)`` -- decode, res10 SSD detection,
  dlib's 5-point shape predictor (ported to NumPy), dlib's 150x150 chip and the PyTorch port of
  the ResNet, batched (``--batch``); no dlib;
* face_recognition (``pip install --no-deps face_recognition``; dlib from ``dlib-bin``):
  ``load_image_file`` + ``face_locations(img)`` (HOG, upsample 1) +
  ``face_encodings(img, locations)`` (5-point landmarks, one jitter), photo by photo, as its
  README does.

Prints photos/s of each and the ratio (target: facemetric >= 2x), plus how many photos each
found a face in. Times are the best of ``--repeats`` passes over the same files (files are in
the page cache after the first pass for both).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

import torch

DATA = Path(os.environ.get("FACEMETRIC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def lfw_sample(n: int) -> list[str]:
    root = DATA / "lfw-deepfunneled"
    files = sorted(str(p) for p in root.glob("*/*.jpg"))
    if not files:
        sys.exit(f"LFW not found under {root}")
    step = max(1, len(files) // n)
    return files[::step][:n]


def import_face_recognition():
    """face_recognition's model package imports ``pkg_resources`` (gone from recent setuptools):
    give it the one function it uses before importing."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import importlib.util

        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, resource: str) -> str:
            spec = importlib.util.find_spec(package)
            return os.path.join(os.path.dirname(spec.origin), resource)

        shim.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    import face_recognition

    return face_recognition


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = lfw_sample(args.photos)

    from facemetric import load_model

    ours = load_model("dlib-resnet-v1")
    ours.embed(paths[:2])  # warm-up (model load, shape predictor parse)

    def run_ours() -> float:
        ours.aligner.counts = dict.fromkeys(ours.aligner.counts, 0)
        t0 = time.perf_counter()
        ours.embed(paths, batch_size=args.batch)
        return time.perf_counter() - t0

    t_ours = min(run_ours() for _ in range(args.repeats))
    counts = dict(ours.aligner.counts)

    fr = import_face_recognition()
    fr.face_encodings(fr.load_image_file(paths[0]))  # warm-up
    found = 0

    def run_fr() -> float:
        nonlocal found
        found = 0
        t0 = time.perf_counter()
        for p in paths:
            img = fr.load_image_file(p)
            locs = fr.face_locations(img)
            found += bool(locs)
            fr.face_encodings(img, locs)
        return time.perf_counter() - t0

    t_fr = min(run_fr() for _ in range(args.repeats))
    n = len(paths)
    print(f"{n} LFW photos, torch threads {args.threads}, batch {args.batch}")
    print(f"facemetric (ssd-res10 + dlib5-port + dlib-resnet port): {n / t_ours:7.1f} photos/s "
          f"({t_ours:.2f} s; alignment counts {counts})")
    print(f"face_recognition (HOG + dlib 5-point + dlib ResNet):    {n / t_fr:7.1f} photos/s "
          f"({t_fr:.2f} s; a face found in {found} of {n})")
    print(f"ratio facemetric / face_recognition: {t_fr / t_ours:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
