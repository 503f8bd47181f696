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
    for split, n in zip(("train", "val", "test"), per_split):
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
