"""Shared fixtures. Real face data is read from ../shared/data when present (tests skip otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FACEMETRIC_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real face data not found at {SHARED_DATA} (set FACEMETRIC_SHARED_DATA)")
    return SHARED_DATA


def tiny_config(loss: dict | None = None, sampler: dict | None = None, epochs: int = 2, **train) -> dict:
    """A fast digits config (8x8 input) for trainer tests."""
    return {
        "name": "tiny",
        "seed": 3,
        "data": {"name": "digits", "input_size": 8, "pairs_per_fold": 40},
        "model": {"name": "lenets++", "embedding_dim": 8, "widths": [8, 16, 16]},
        "loss": loss or {"name": "softmax"},
        "sampler": sampler or {"name": "uniform", "batch_size": 64},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 0.5},
        "train": {"epochs": epochs, "device": "cpu", **train},
    }
