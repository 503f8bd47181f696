"""A tiny untrained model artifact and a synthetic identity folder, for tests of the photo
pipelines (embed, identification, enrol, cluster) that must run without dlib or real faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

SIZE = 24


def make_toy_model(path: Path, name: str = "toy-lenets", seed: int = 0) -> Path:
    """A LeNets++ (grey 24x24 input, 8-D) with seeded random weights, saved as an artifact."""
    from facemetric.inference import save_artifact
    from facemetric.models import build_model

    torch.manual_seed(seed)
    options = {"embedding_dim": 8, "input_size": SIZE, "widths": [8, 16, 16]}
    model = build_model("lenets++", **options)
    card = {
        "name": name,
        "backbone": {"name": "lenets++", "options": options},
        "embedding_dim": 8,
        "preprocessing": {"input_size": [SIZE, SIZE], "color": "L"},
        "thresholds": {"best_accuracy": 0.5, "far_1e-03": 0.3},
        "git": None,
    }
    return save_artifact(path, model, card)


def make_toy_folder(root: Path, counts: dict[str, int] | None = None, seed: int = 0, noise: float = 12.0) -> Path:
    """``root/<identity>/<k>.png``: each identity a fixed random grey pattern plus noise."""
    counts = counts or {"anna": 4, "bert": 5, "carl": 3, "dora": 4, "emil": 2, "fred": 1, "gina": 1}
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        base = rng.uniform(0, 255, size=(SIZE, SIZE))
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            img = np.clip(base + noise * rng.normal(size=base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img, mode="L").save(root / name / f"{k:02d}.png")
    return root
