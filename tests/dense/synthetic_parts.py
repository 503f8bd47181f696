"""A tiny LFW-Part-Labels-shaped folder (split.csv, photos, label maps) for fast tests.

Each photo is a dark background, a skin-coloured ellipse (label 1) and a hair-coloured cap
above it (label 2), with the shape jittered per image, so that a tiny FCN can learn it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_parts(root: Path, per_split: tuple[int, int, int] = (12, 4, 4), size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    rows = ["split,image,label,identity"]
    yy, xx = np.mgrid[0:size, 0:size]
    k = 0
    for split, n in zip(("train", "val", "test"), per_split, strict=False):
        for i in range(n):
            name = f"Person_{split}_{i:02d}"
            cy, cx = size * (0.55 + rng.uniform(-0.08, 0.08)), size * (0.5 + rng.uniform(-0.1, 0.1))
            ry, rx = size * rng.uniform(0.25, 0.32), size * rng.uniform(0.18, 0.25)
            face = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            hair = (((yy - (cy - ry * 0.6)) / (ry * 0.7)) ** 2 + ((xx - cx) / (rx * 1.3)) ** 2 <= 1) & ~face
            hair &= yy < cy
            lab = np.zeros((size, size), np.uint8)
            lab[face] = 1
            lab[hair] = 2
            img = rng.integers(0, 50, (size, size, 3)).astype(np.uint8)
            img[face] = np.clip(np.array([200, 150, 120]) + rng.integers(-20, 20, 3), 0, 255)
            img[hair] = np.clip(np.array([60, 40, 20]) + rng.integers(-10, 10, 3), 0, 255)
            (root / "images" / name).mkdir(parents=True, exist_ok=True)
            (root / "labels" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / "images" / name / f"{name}_0001.jpg", quality=95)
            Image.fromarray(lab, "L").save(root / "labels" / name / f"{name}_0001.png")
            rows.append(f"{split},images/{name}/{name}_0001.jpg,labels/{name}/{name}_0001.png,{name}")
            k += 1
    (root / "split.csv").write_text("\n".join(rows) + "\n")
    return root


def tiny_config(root: Path, epochs: int = 3, heads=("fcn", "hed", "fsds", "skel_hed")) -> dict:
    """A recipe for a tiny all-heads model on :func:`make_parts` data (seconds on a CPU)."""
    return {
        "task": "dense", "name": "tiny-dense", "seed": 0,
        "data": {"root": str(root), "input_size": 32},
        "model": {"heads": list(heads), "channels": [6, 8, 12], "convs": 1, "fcn_width": 12,
                  "hed_stages": [1, 2, 3], "fsds_stages": [2, 3]},
        "train": {"epochs": epochs, "batch_size": 4, "lr": 0.02, "threads": 1},
    }


_RUNS: dict = {}


def trained_run(base: Path) -> Path:
    """A trained tiny run directory (trained once per process; ``base`` is a scratch folder)."""
    if "run" not in _RUNS:
        from facemetric.train.tasks import train_from_config

        root = make_parts(base / "parts")
        res = train_from_config(tiny_config(root, epochs=6), run_dir=base / "run", progress=False)
        _RUNS["run"], _RUNS["root"] = res.run_dir, root
    return _RUNS["run"]


def trained_root() -> Path:
    return _RUNS["root"]
