"""Load on ``facemetric serve``: p50/p99 latency and requests/s of concurrent clients mixing
identify and enrol, against a real server (a ``facemetric serve`` subprocess on loopback).

    python benchmarks/bench_serve_load.py                       # toy model, synthetic photos
    python benchmarks/bench_serve_load.py --backbone mobilefacenet  # a real network, random weights
    python benchmarks/bench_serve_load.py --model dlib-resnet-v1 \\
        --photos ../shared/data/lfw-deepfunneled --clients 8 --requests 40

The server gets a fresh gallery pre-filled with ``--identities`` people (2 photos each, enrolled
over HTTP), then ``--clients`` threads each send up to ``--requests`` requests (stopping at
``--duration`` seconds): an enrolment of one photo of a new identity with probability
``--enrol-fraction``, else an identification of one photo (top-3), through
:func:`facemetric.serve.loadgen.run_load`. Every non-2xx answer counts as an error.

Reference, in the same run: the same photos embedded in this process by the library
(``load_model(M).embed(photo)``, one photo per call, sequentially): the table's ``x direct``
column is the service's p50 over that per-photo latency (the cost of HTTP, multipart parsing,
queueing, the gallery and concurrency on the same CPU). The server's coalescing shows as the
mean rows per inference batch (from ``/metrics``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facemetric.data.image_io import list_images
from facemetric.inference import load_model, save_artifact
from facemetric.models import build_model
from facemetric.serve import KeyStore
from facemetric.serve.loadgen import multipart, run_load


def toy_model(path: Path) -> Path:
    """A LeNets++ artifact (grey 24x24 -> 8-D, seeded random weights)."""
    torch.manual_seed(0)
    options = {"embedding_dim": 8, "input_size": 24, "widths": [8, 16, 16]}
    card = {"name": "toy-lenets", "backbone": {"name": "lenets++", "options": options}, "embedding_dim": 8,
            "preprocessing": {"input_size": [24, 24], "color": "L"}, "thresholds": {"best_accuracy": 0.5}}
    return save_artifact(path, build_model("lenets++", **options), card)


def random_backbone(path: Path, name: str, size: int = 112) -> Path:
    """A ``name`` backbone with seeded random weights as an artifact (RGB ``size`` x ``size``
    input, no alignment step): the cost of a real network without needing its weights."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    with torch.no_grad():
        dim = int(model(torch.zeros(2, 3, size, size)).shape[1])
    card = {"name": f"random-{name}", "backbone": {"name": name, "options": {}}, "embedding_dim": dim,
            "preprocessing": {"input_size": [size, size]}, "thresholds": {"best_accuracy": 1.0}}
    return save_artifact(path, model, card)


def synthetic_people(n: int, per: int, side: int = 96, seed: int = 0) -> list[list[bytes]]:
    rng = np.random.default_rng(seed)
    people = []
    for _ in range(n):
        low = Image.fromarray(rng.uniform(0, 255, (6, 6)).astype(np.uint8), "L").resize((side, side), Image.BICUBIC)
        base = np.asarray(low, dtype=np.float64)
        shots = []
        for _ in range(per):
            buf = io.BytesIO()
            Image.fromarray(np.clip(base + 6 * rng.normal(size=base.shape), 0, 255).astype(np.uint8)).save(buf, "JPEG")
            shots.append(buf.getvalue())
        people.append(shots)
    return people


def folder_people(root: Path, n: int, per: int) -> list[list[bytes]]:
    """The first ``n`` people (by name) of an identity folder with at least ``per`` photos."""
    people = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = list_images(d)
        if len(photos) >= per:
            people.append([p.read_bytes() for p in photos[:per]])
        if len(people) == n:
            break
    if len(people) < n:
        raise SystemExit(f"{root}: only {len(people)} people with {per} photos")
    return people


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, key: str, body: bytes, ctype: str) -> dict:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Authorization": f"Bearer {key}",
                                                                         "Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model (default: a toy LeNets++ artifact)")
    ap.add_argument("--backbone", default=None, help="a registered backbone with random weights (e.g. mobilefacenet)")
    ap.add_argument("--photos", type=Path, default=None, help="identity folder (default: synthetic photos)")
    ap.add_argument("--identities", type=int, default=50)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=100, help="per client")
    ap.add_argument("--duration", type=float, default=300.0, help="seconds, at most")
    ap.add_argument("--enrol-fraction", type=float, default=0.3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    if args.backbone:
        model = str(random_backbone(tmp / args.backbone, args.backbone))
    else:
        model = args.model or str(toy_model(tmp / "toy"))
    people = (folder_people(args.photos, args.identities + 20, 3) if args.photos
              else synthetic_people(args.identities + 20, 3))
    enrolled, probes = people[:args.identities], people[args.identities:]
    pool = [p[2] for p in enrolled] + [p[0] for p in probes]  # unseen photos of known and unknown people

    # reference: the library in this process, one photo per call
    torch.set_num_threads(args.torch_threads)
    embedder = load_model(model)
    arrays = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in pool[:40]]
    embedder.embed(arrays[0])
    direct = []
    for a in arrays:
        t = time.perf_counter()
        embedder.embed(a)
        direct.append(time.perf_counter() - t)
    direct_ms = statistics.median(direct) * 1000

    gallery_dir = tmp / "galleries"
    store = KeyStore(gallery_dir / "keys.json")
    admin = store.create("admin")[1]
    port = free_port()
    cmd = [sys.executable, "-m", "facemetric", "serve", "--model", model, "--gallery-dir", str(gallery_dir),
           "--port", str(port), "--workers", str(args.workers), "--torch-threads", str(args.torch_threads),
           "--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms), "--log-level", "warning"]
    server = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() - t0 > 300:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        print(f"server up in {time.monotonic() - t0:.1f} s; model {model}; {os.cpu_count()} CPUs; "
              f"load average {os.getloadavg()[0]:.1f}")
        post(url + "/v1/galleries", admin, b'{"name": "bench"}', "application/json")
        t0 = time.monotonic()
        for i, shots in enumerate(enrolled):
            body, ctype = multipart([("photos", f"{j}.jpg", b) for j, b in enumerate(shots[:2])])
            post(f"{url}/v1/galleries/bench/identities/person{i:04d}", admin, body, ctype)
        print(f"pre-enrolled {len(enrolled)} identities x 2 photos in {time.monotonic() - t0:.1f} s")
        result = run_load(url, admin, "bench", pool, clients=args.clients, requests=args.requests,
                          duration_s=args.duration, enrol_fraction=args.enrol_fraction)
        metrics = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    rows = float(re.search(r"^facemetric_inference_batch_rows_sum (\S+)$", metrics, re.M).group(1))
    batches = float(re.search(r"^facemetric_inference_batch_rows_count (\S+)$", metrics, re.M).group(1))
    s = result.summary()
    print(f"\n{args.clients} clients x <= {args.requests} requests, enrol fraction {args.enrol_fraction}, "
          f"{result.seconds:.1f} s, errors {len(result.errors)}, mean rows per inference batch {rows / batches:.2f}")
    print(f"direct (library, 1 photo per call, this process): p50 {direct_ms:.1f} ms\n")
    print("| requests | n | p50 ms | p99 ms | requests/s | p50 x direct |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in ("identify", "enrol", "all"):
        k = s[kind]
        print(f"| {kind} | {k['n']} | {k['p50_ms']:.1f} | {k['p99_ms']:.1f} | {k['rps']:.1f} | "
              f"{k['p50_ms'] / direct_ms:.1f} |")
    if result.errors:
        print("first errors:", result.errors[:3])
        sys.exit(1)


if __name__ == "__main__":
    main()
