"""Model-card helpers: which model made an embedding (the card's fingerprint, a hash of its
weights), its short label, and its thresholds as cosine scores.

A gallery only makes sense when its vectors and the queries come from the same network with
the same input pipeline. :func:`model_fingerprint` hashes exactly the card fields that decide
the embedding of an image::

    sha256(canonical_json({"backbone": card["backbone"],          # name + options
                           "weights": <weights identity>,
                           "embedding_dim": card["embedding_dim"],
                           "preprocessing": card["preprocessing"],
                           "alignment": card.get("alignment")}))

``canonical_json`` = ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True)``.
The weights identity is the first of ``card["source"]["sha256"]`` (converted pretrained
models such as dlib-resnet-v1: the sha256 of the source file), ``card["weights_sha256"]``,
``card["weights"]["sha256"]`` that is present. :func:`facemetric.inference.artifact.save_artifact` writes ``weights_sha256`` =
:func:`weights_sha256` of the saved tensors into every card, so two models with different
weights never share a fingerprint and re-exporting the same weights keeps it. Only a legacy
card with none of them (saved before the hash existed) falls back to ``{"name":
card["name"], "created": card["created"]}``.

:func:`weights_sha256` of a state dict = sha256 over its tensors in sorted-name order, each as
``name NUL dtype NUL shape NUL raw little-endian bytes`` (row-major): it depends on the values,
names, dtypes and shapes only -- not on the file, the save time or safetensors' header layout.

Card thresholds are *distances* between embeddings (``card["distance"]``): ``squared_l2`` on
L2-normalised embeddings (facemetric's own cards; "same" when ``d < t``), ``euclidean`` or
``cosine`` (``1 - cos``). On unit vectors ``||a - b||^2 = 2 - 2 cos(a, b)``, so

* ``squared_l2``: ``d < t  <=>  cos > 1 - t / 2``
* ``euclidean``:  ``d < t  <=>  cos > 1 - t^2 / 2``
* ``cosine``:     ``d < t  <=>  cos > 1 - t``

Gallery scores are cosine similarities and accept when ``score >= s``; the strict ``>`` is
kept by returning ``s = nextafter(1 - t / 2, +inf)`` (float64). A card whose embeddings are not
normalised (``normalize_embeddings: false``, e.g. dlib's raw 128-D descriptors with a Euclidean
threshold of 0.6) has no exact cosine equivalent: :func:`card_similarity_threshold` refuses it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from facemetric.errors import FacemetricError

FINGERPRINT_FIELDS = ("backbone", "weights", "embedding_dim", "preprocessing", "alignment")


def weights_sha256(state: Mapping[str, Any]) -> str:
    """sha256 (hex) of a state dict's tensors (see the module docstring)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise FacemetricError(f"weights: {name!r} is a {type(t).__name__}, expected a tensor")
        t = t.detach().cpu().contiguous()
        h.update(name.encode("utf-8") + b"\0" + str(t.dtype).encode() + b"\0"
                 + ",".join(str(d) for d in t.shape).encode() + b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _weights_identity(card: Mapping[str, Any]) -> Any:
    source = card.get("source")
    if isinstance(source, Mapping) and source.get("sha256"):  # a converted pretrained model
        return {"sha256": source["sha256"]}
    if card.get("weights_sha256"):
        return {"sha256": card["weights_sha256"]}
    weights = card.get("weights")
    if isinstance(weights, Mapping) and weights.get("sha256"):
        return {"sha256": weights["sha256"]}
    return {"name": card.get("name"), "created": card.get("created")}  # legacy card: no hash


def fingerprint_fields(card: Mapping[str, Any]) -> dict[str, Any]:
    """The card fields that determine the embedding (hashed by :func:`model_fingerprint`)."""
    if not isinstance(card, Mapping):
        raise FacemetricError(f"model card: expected a dict, got {type(card).__name__}")
    for key in ("backbone", "embedding_dim", "preprocessing"):
        if key not in card:
            raise FacemetricError(f"model card: missing required field {key!r}")
    return {
        "backbone": card["backbone"],
        "weights": _weights_identity(card),
        "embedding_dim": int(card["embedding_dim"]),
        "preprocessing": card["preprocessing"],
        "alignment": card.get("alignment"),
    }


def model_fingerprint(card: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of :func:`fingerprint_fields`."""
    return hashlib.sha256(canonical_json(fingerprint_fields(card)).encode()).hexdigest()


def model_label(card: Mapping[str, Any]) -> str:
    """A short human name of the model: the card's ``name``, else its backbone name."""
    name = card.get("name")
    if not name:
        backbone = card.get("backbone")
        name = backbone.get("name") if isinstance(backbone, Mapping) else None
    return str(name or "unnamed model")


def card_similarity_threshold(card: Mapping[str, Any], key: str | None = None) -> float:
    """The card's distance threshold ``key`` as a cosine-similarity threshold (accept ``>=``).

    ``key`` defaults to ``card["default_threshold"]``, else ``"best_accuracy"``. See the module
    docstring for the conversion; the result is ``nextafter(s, +inf)`` of the boundary ``s``
    so that ``cos >= result`` is exactly the card's strict ``distance < threshold``.
    """
    thresholds = card.get("thresholds") or {}
    if key is None:
        key = card.get("default_threshold") or "best_accuracy"
    if key not in thresholds:
        have = ", ".join(sorted(thresholds)) or "none"
        raise FacemetricError(
            f"threshold: the model card has no threshold {key!r} (it has: {have}); pass threshold="
        )
    t = float(thresholds[key])
    distance = card.get("distance", "squared_l2")
    if card.get("normalize_embeddings", True) is False:
        raise FacemetricError(
            f"threshold: the card's {key!r} ({t:g}) is a {distance} distance on unnormalised "
            "embeddings and has no cosine equivalent; pass threshold= or calibrate one"
        )
    if distance == "squared_l2":
        s = 1.0 - t / 2.0
    elif distance == "euclidean":
        s = 1.0 - t * t / 2.0
    elif distance == "cosine":
        s = 1.0 - t
    else:
        raise FacemetricError(
            f"threshold: unknown card distance {distance!r}; expected squared_l2, euclidean or cosine"
        )
    return float(np.nextafter(s, np.inf))


__all__ = [
    "FINGERPRINT_FIELDS",
    "canonical_json",
    "card_similarity_threshold",
    "fingerprint_fields",
    "model_fingerprint",
    "model_label",
    "weights_sha256",
]
