"""Shared helpers of the gallery tests (a model card, clustered random embeddings)."""

from __future__ import annotations

import numpy as np

DIM = 16


def card(name: str = "toy", **changes) -> dict:
    c = {
        "format": "facemetric-model/1",
        "name": name,
        "backbone": {"name": "lenets++", "options": {"embedding_dim": DIM}},
        "embedding_dim": DIM,
        "preprocessing": {"input_size": [112, 112], "crop": [150, 150]},
        "distance": "squared_l2",
        "normalize_embeddings": True,
        "thresholds": {"best_accuracy": 1.0, "far_1e-03": 0.8},
        "created": "2024-01-01T00:00:00+0000",
    }
    c.update(changes)
    return c


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def people(n_ids: int, per: int, seed: int = 0, noise: float = 0.35, dim: int = DIM):
    """``(centres [n_ids, dim], {name: embeddings [per, dim]})`` (unit vectors)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_ids, dim)))
    data = {f"id{i:03d}": unit(centres[i] + noise * rng.normal(size=(per, dim))) for i in range(n_ids)}
    return centres, data
