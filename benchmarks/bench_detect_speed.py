"""Face detection speed: the res10 SSD port against OpenCV's DNN module and dlib's HOG, in one run.

    python benchmarks/bench_detect_speed.py [--photos 64] [--threads 2] [--repeats 5] [--out speed.json]

Every detector gets the same decoded photos (``--photos`` of the lfw-5590 ``test`` split,
150x150 RGB; decoding is not timed) and returns the faces above its usual threshold:

* ``port``: :class:`facemetric.detect.detector.SSDDetector` with the res10 port (resize to
  300x300, BGR mean, forward, softmax, DetectionOutput, pixel boxes at score > 0.5) -- as the
  ``ssd-res10`` backend runs it (BatchNorms folded, channels-last); ``port (plain)``: the same
  without BN folding and channels-last, to show what they buy;
* ``opencv-dnn``: ``cv2.dnn.readNetFromCaffe`` on the same prototxt/caffemodel
  (``opencv-python-headless<5``), ``cv2.resize`` + ``blobFromImage(s)`` + ``forward``, rows
  with confidence > 0.5 -- OpenCV's own sample code;
* ``dlib-hog``: ``dlib.get_frontal_face_detector()`` with one upsampling (the ``dlib-hog``
  backend's default), photo by photo (it has no batch mode; dlib runs it on one thread).

Batch 1 (photo by photo) and batch 32 (``blobFromImages`` / one forward for 32). Torch and
OpenCV get ``--threads`` threads. Each pass over the photos is timed ``--repeats`` times,
detectors interleaved (a shared machine slows them alike); the median pass counts. Printed:
photos/s (wall clock), each row's ratio to OpenCV DNN at the same batch size and to dlib HOG,
and the CPU time per photo (all threads of the process, ``time.process_time``) with its ratio
to OpenCV DNN -- the work done, which a machine shared with other jobs distorts far less than
the wall clock. ``--device
cuda`` adds GPU rows for the port when CUDA is available.

``OMP_WAIT_POLICY=PASSIVE`` is set (unless the environment sets it) before torch loads its
OpenMP runtime: on a machine shared with other jobs, OpenMP's default spin-waiting at every
barrier made batch-1 passes of the port ~7x slower with 2 threads (measured: 0.97 s vs 0.15 s
per photo at a load of 20 on 2 cores); OpenCV's own thread pool sleeps instead. On an idle
machine the setting changes nothing measurable.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see above)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facemetric.data.image_io import read_image  # noqa: E402
from facemetric.detect.detector import SSDDetector, SSDPreprocessing  # noqa: E402
from facemetric.detect.res10 import (  # noqa: E402
    RES10_DETECTION_OUTPUT,
    RES10_MEAN_BGR,
    load_res10,
    res10_files,
)

DATA = Path(os.environ.get("FACEMETRIC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def photos(n: int) -> list[np.ndarray]:
    ann = DATA / "lfw-5590" / "annotations.csv"
    if not ann.is_file():
        sys.exit(f"{ann} not found")
    with open(ann, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"][:n]
    return [read_image(DATA / "lfw-5590" / r["path"]) for r in rows]


def port_runner(det: SSDDetector, images: list[np.ndarray]) -> Callable[[], int]:
    def run() -> int:
        return sum(len(d) for d in det.detect(images))
    return run


def opencv_runner(cv2, net, images: list[np.ndarray], batch: int) -> Callable[[], int]:
    bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]

    def run() -> int:
        found = 0
        for start in range(0, len(bgr), batch):
            chunk = [cv2.resize(im, (300, 300)) for im in bgr[start:start + batch]]
            net.setInput(cv2.dnn.blobFromImages(chunk, 1.0, (300, 300), RES10_MEAN_BGR))
            rows = net.forward()[0, 0]
            found += int((rows[:, 2] > 0.5).sum())
        return found
    return run


def dlib_runner(dlib, images: list[np.ndarray]) -> Callable[[], int]:
    detector = dlib.get_frontal_face_detector()

    def run() -> int:
        return sum(len(detector(im, 1)) for im in images)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda to add GPU rows for the port")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    images = photos(args.photos)
    n = len(images)
    runners: dict[tuple[str, int], Callable[[], int]] = {}
    for b in (1, 32):
        runners[("port", b)] = port_runner(SSDDetector.res10(device="cpu", batch_size=b), images)
        plain = SSDDetector(load_res10(), SSDPreprocessing((300, 300), "bgr", RES10_MEAN_BGR, 1.0),
                            RES10_DETECTION_OUTPUT, device="cpu", batch_size=b, channels_last=False)
        runners[("port (plain)", b)] = port_runner(plain, images)
        if args.device.startswith("cuda") and torch.cuda.is_available():
            gpu = SSDDetector.res10(device=args.device, batch_size=b)
            runners[(f"port ({args.device})", b)] = port_runner(gpu, images)
    try:
        import cv2

        cv2.setNumThreads(args.threads)
        files = res10_files()
        net = cv2.dnn.readNetFromCaffe(str(files.prototxt), str(files.caffemodel))
        for b in (1, 32):
            runners[("opencv-dnn", b)] = opencv_runner(cv2, net, images, b)
        opencv_version = cv2.__version__
    except ImportError:
        opencv_version = None
        print("OpenCV not installed: no opencv-dnn rows", file=sys.stderr)
    try:
        import dlib

        runners[("dlib-hog", 1)] = dlib_runner(dlib, images)
    except ImportError:
        print("dlib not installed: no dlib-hog row", file=sys.stderr)

    for run in runners.values():  # warm-up (first-call allocations, oneDNN primitive caches)
        run()
    times: dict[tuple[str, int], list[float]] = {k: [] for k in runners}
    cpu: dict[tuple[str, int], list[float]] = {k: [] for k in runners}
    faces: dict[tuple[str, int], int] = {}
    for _ in range(args.repeats):
        for key, run in runners.items():
            if key[0].startswith("port (cuda"):
                torch.cuda.synchronize()
            t, c = time.perf_counter(), time.process_time()
            faces[key] = run()
            if key[0].startswith("port (cuda"):
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - t)
            cpu[key].append(time.process_time() - c)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    cpu_ms = {k: 1000 * statistics.median(v) / n for k, v in cpu.items()}

    print(f"{n} photos of lfw-5590 test (150x150), {args.threads} threads, median of {args.repeats} "
          f"passes; torch {torch.__version__}, OpenCV {opencv_version}, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.1f}")
    print("| detector | batch | photos/s | vs OpenCV DNN | vs dlib HOG | CPU ms/photo | CPU vs OpenCV DNN | faces found |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    results = []
    for (name, b), r in rate.items():
        ref, ref_cpu = rate.get(("opencv-dnn", b)), cpu_ms.get(("opencv-dnn", b))
        hog = rate.get(("dlib-hog", 1))
        c = cpu_ms[(name, b)]
        vs_cv = f"{r / ref:.2f}x" if ref else "-"
        vs_hog = f"{r / hog:.2f}x" if hog else "-"
        cpu_vs = f"{ref_cpu / c:.2f}x" if ref_cpu else "-"
        print(f"| {name} | {b} | {r:.1f} | {vs_cv} | {vs_hog} | {c:.0f} | {cpu_vs} | {faces[(name, b)]} |")
        results.append({"detector": name, "batch": b, "photos_per_second": round(r, 2),
                        "vs_opencv_dnn": round(r / ref, 3) if ref else None,
                        "vs_dlib_hog": round(r / hog, 3) if hog else None,
                        "cpu_ms_per_photo": round(c, 1),
                        "cpu_speedup_vs_opencv_dnn": round(ref_cpu / c, 3) if ref_cpu else None,
                        "faces": faces[(name, b)]})
    if args.out is not None:
        args.out.write_text(json.dumps({"photos": n, "threads": args.threads, "repeats": args.repeats,
                                        "torch": torch.__version__, "opencv": opencv_version,
                                        "rows": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
