"""Model artifacts: a directory with the weights (safetensors) and a model card (JSON).

The card carries everything inference needs, so it never asks the user to repeat it::

    {"format": "facemetric-model/1", "backbone": {"name": ..., "options": {...}},
     "embedding_dim": 512, "preprocessing": {... Preprocessing.to_dict() ...},
     "distance": "squared_l2", "normalize_embeddings": true,
     "thresholds": {"best_accuracy": 1.1, "far_1e-03": 0.9}, "loss": {...},
     "training_data": {...}, "metrics": {...}, "git": {...}, "created": "..."}

By default distances are squared Euclidean between L2-normalised embeddings (in [0, 4]); a
card may say otherwise (``"distance": "euclidean"`` or ``"cosine"``; ``"normalize_embeddings":
false`` for raw embeddings, as dlib's descriptors are compared). A pair is "same" when its
distance is below the threshold (``"default_threshold"`` names the entry of ``thresholds`` to
use, else ``best_accuracy``). The directory is written atomically: into
a temporary sibling, then renamed over the target.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facemetric._version import __version__
from facemetric.errors import FacemetricError
from facemetric.inference.model_card import weights_sha256
from facemetric.io import git_revision

FORMAT = "facemetric-model/1"
CARD_NAME = "model_card.json"
WEIGHTS_NAME = "model.safetensors"


def save_artifact(path: str | os.PathLike, model: nn.Module, card: dict[str, Any]) -> Path:
    """Write ``model``'s weights and ``card`` to the directory ``path`` (replaced atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    for key in ("backbone", "embedding_dim", "preprocessing"):
        if key not in card:
            raise FacemetricError(f"model card: missing required field {key!r}")
    # a card may bring its own "git" (e.g. None for a converted third-party model)
    git = card["git"] if "git" in card else git_revision()
    full = {
        "format": FORMAT,
        "distance": "squared_l2",
        "normalize_embeddings": True,
        "facemetric_version": __version__,
        "git": git,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **card,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        full["weights_sha256"] = weights_sha256(state)  # the model's identity (its fingerprint)
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT})
        (tmp / CARD_NAME).write_text(json.dumps(full, indent=2))
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def resolve_artifact_dir(path: str | os.PathLike) -> Path:
    """Accept an artifact directory, a card file, or a run directory (uses ``<run>/model``)."""
    p = Path(path)
    if p.is_file() and p.name == CARD_NAME:
        p = p.parent
    if p.is_dir() and not (p / CARD_NAME).is_file() and (p / "model" / CARD_NAME).is_file():
        p = p / "model"
    if not p.exists():
        raise FacemetricError(f"{path}: model not found (expected an artifact or run directory)")
    if not (p / CARD_NAME).is_file():
        raise FacemetricError(f"{path}: not a model artifact (no {CARD_NAME})")
    return p


def load_card(path: str | os.PathLike) -> dict[str, Any]:
    p = resolve_artifact_dir(path)
    try:
        card = json.loads((p / CARD_NAME).read_text())
    except json.JSONDecodeError as exc:
        raise FacemetricError(f"{p / CARD_NAME}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise FacemetricError(f"{p / CARD_NAME}: not UTF-8 text (a model card is JSON)") from None
    if not isinstance(card, dict):
        raise FacemetricError(f"{p / CARD_NAME}: expected a JSON object, got {type(card).__name__}")
    if card.get("format") != FORMAT:
        raise FacemetricError(f"{p / CARD_NAME}: unknown format {card.get('format')!r}; expected {FORMAT!r}")
    backbone = card.get("backbone")
    if not isinstance(backbone, dict) or not isinstance(backbone.get("name"), str):
        raise FacemetricError(
            f"{p / CARD_NAME}: 'backbone' missing or malformed; expected {{\"name\": ..., \"options\": {{...}}}}"
        )
    if not isinstance(backbone.get("options", {}), dict):
        raise FacemetricError(f"{p / CARD_NAME}: backbone.options: expected a JSON object")
    return card


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    p = resolve_artifact_dir(path) / WEIGHTS_NAME
    if not p.is_file():
        raise FacemetricError(f"{p}: weights file missing")
    try:
        return load_file(str(p))
    except Exception as exc:
        raise FacemetricError(f"{p}: cannot read weights ({exc.__class__.__name__})") from None
