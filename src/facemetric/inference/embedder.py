"""``load_model(path).embed(images)``: embeddings with the preprocessing of the model card.

Images may be file paths, PIL images or uint8 arrays (HxWxC or HxW), alone or in a list.
They are decoded, centre-cropped, resized, colour-converted and normalised exactly as the
card says, then embedded by the one embedding function
:func:`facemetric.inference.embedding.embed_batches` (batched; optionally with flip
test-time augmentation: the raw embeddings of the image and its mirror are summed, as facenet
and insightface do) and L2-normalised as the card's ``normalize_embeddings`` says (default
true; ``normalize=False`` gives the raw embeddings, whose norm is the L2-softmax quality
signal). Cards of raw-descriptor models (``normalize_embeddings: false``, e.g. dlib's) get the
*mean* of the two flip views, so that distances keep the card's scale. Distances follow the card's ``distance``:
``squared_l2`` (default), ``euclidean`` or ``cosine``.

``load_model`` also accepts a pretrained name (:mod:`facemetric.inference.pretrained`, e.g.
``"dlib-resnet-v1"``), converted once into a cached artifact.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from facemetric.data.transforms import Preprocessing, decode_and_resize, to_tensor
from facemetric.dense.predict import CARD_KIND as DENSE_KIND
from facemetric.dense.predict import dense_model_from_state
from facemetric.distances import DISTANCES, pair_scores
from facemetric.errors import FacemetricError
from facemetric.inference.alignment import CardAligner
from facemetric.inference.artifact import load_card, load_weights, resolve_artifact_dir
from facemetric.inference.embedding import Embedded, embed_batches
from facemetric.inference.onnx_model import is_onnx_path, load_onnx_backbone
from facemetric.inference.pretrained import resolve_model_path
from facemetric.models import build_model

ImageLike = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray


def _as_list(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    if isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "convert"):
        return [images]
    return list(images)


class FaceEmbedder:
    """A backbone plus its model card; ``embed`` maps images to embeddings."""

    def __init__(
        self,
        model: nn.Module,
        card: dict[str, Any],
        device: str | torch.device = "cpu",
        align: bool = True,
    ):
        self.card = card
        #: the card's detection + alignment step (None: the card has none, or ``align=False``
        #: because the inputs are already aligned chips); ``aligner.counts`` tallies fallbacks
        self.aligner = None
        if align and card.get("alignment"):
            self.aligner = CardAligner(card["alignment"])
        self.preprocessing = Preprocessing.from_dict(card["preprocessing"])
        self.distance_kind = str(card.get("distance", "squared_l2"))
        if self.distance_kind not in DISTANCES:
            raise FacemetricError(
                f"model card: distance {self.distance_kind!r} is not one of {', '.join(DISTANCES)}"
            )
        #: whether embeddings are L2-normalised by default (the card's ``normalize_embeddings``)
        self.normalize_embeddings = bool(card.get("normalize_embeddings", True))
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def set_face_select(self, select: str | None) -> None:
        """Override the alignment step's choice among several faces in one photo
        (``"largest"``, ``"center"``, ``"score"``); None keeps the card's. No effect without an
        alignment step."""
        if select is not None and self.aligner is not None:
            self.aligner = CardAligner({**self.aligner.spec, "select": select})

    @property
    def embedding_dim(self) -> int:
        return int(self.card["embedding_dim"])

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.card.get("thresholds") or {})

    @property
    def default_threshold(self) -> float | None:
        """The card's ``thresholds[default_threshold]`` (else ``best_accuracy``), or None."""
        key = self.card.get("default_threshold") or "best_accuracy"
        value = self.thresholds.get(key)
        return None if value is None else float(value)

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> Tensor:
        """The network input ``[B, C, H, W]`` for ``images``."""
        items = _as_list(images)
        if self.aligner is not None and items:
            items = self.aligner(items)
        arrays = [decode_and_resize(item, self.preprocessing) for item in items]
        if not arrays:
            raise FacemetricError("images: nothing to embed")
        return to_tensor(np.stack(arrays), self.preprocessing)

    def embed_batches(
        self, batches: Any, flip: bool = False, normalize: bool | None = None, progress: Any = None
    ) -> Embedded:
        """:func:`~facemetric.inference.embedding.embed_batches` with this card's rules:
        flip views summed (averaged for raw-descriptor cards), L2-normalised as the card says
        unless ``normalize`` is given, on this embedder's device."""
        return embed_batches(
            self.model, batches, flip=flip, flip_mean=not self.normalize_embeddings,
            normalize=self.normalize_embeddings if normalize is None else bool(normalize),
            device=self.device, embedding_dim=self.embedding_dim, progress=progress,
        )

    def embed_tensor(self, batch: Tensor, flip: bool = False, normalize: bool | None = None) -> Tensor:
        """Embeddings of an already preprocessed batch (float32 on CPU); ``normalize=None``:
        as the card says."""
        return self.embed_batches([batch], flip, normalize).embeddings

    def _input_batches(self, items: list[ImageLike], batch_size: int):
        if not items:
            raise FacemetricError("images: nothing to embed")
        for i in range(0, len(items), batch_size):
            yield self.preprocess(items[i : i + batch_size])

    def embed(
        self,
        images: ImageLike | Sequence[ImageLike],
        batch_size: int = 64,
        flip: bool = False,
        normalize: bool | None = None,
    ) -> np.ndarray:
        """Embeddings ``[N, D]`` (float32 numpy) of ``images`` in order; L2-normalised as the
        card says unless ``normalize`` is given."""
        batches = self._input_batches(_as_list(images), batch_size)
        return self.embed_batches(batches, flip, normalize).embeddings.numpy()

    def embed_with_norms(
        self, images: ImageLike | Sequence[ImageLike], batch_size: int = 64, flip: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings, norms)``: embeddings ``[N, D]`` (float32, as :meth:`embed` gives them:
        L2-normalised unless the card says ``normalize_embeddings: false``) and the
        pre-normalisation norms ``||x||`` ``[N]`` (float64), the L2-softmax face-quality signal.
        With ``flip``, ``x = f(image) + f(mirror)``: the norm of the *summed* raw features (the
        vector that is normalised; up to twice one view's; the mean for raw-descriptor cards)."""
        batches = self._input_batches(_as_list(images), batch_size)
        return self.embed_batches(batches, flip).numpy()

    def distance(self, a: ImageLike, b: ImageLike, flip: bool = False) -> float:
        """The card's distance between the embeddings of two images: by default squared L2
        between L2-normalised embeddings (0..4); Euclidean between raw descriptors for dlib."""
        e = self.embed([a, b], flip=flip)
        return float(pair_scores(e[:1], e[1:], self.distance_kind)[0])

    def verify(self, a: ImageLike, b: ImageLike, threshold: float | None = None, flip: bool = False) -> dict[str, Any]:
        """``{"distance", "threshold", "same"}`` using the card's default threshold
        (``thresholds[card["default_threshold"]]``, else ``best_accuracy``) unless given."""
        if threshold is None:
            threshold = self.default_threshold
            if threshold is None:
                raise FacemetricError("threshold: the model card has none; pass threshold=")
        d = self.distance(a, b, flip=flip)
        return {"distance": d, "threshold": float(threshold), "same": d < threshold}


def build_from_card(card: dict[str, Any]) -> nn.Module:
    backbone = card["backbone"]
    return build_model(backbone["name"], **backbone.get("options", {}))


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", align: bool = True
) -> FaceEmbedder:
    """Load a model artifact (or a run directory's ``model/``, or a pretrained name such as
    ``"dlib-resnet-v1"``) as a :class:`FaceEmbedder` (a dense artifact, card ``kind: dense``,
    loads as a :class:`facemetric.dense.predict.DenseModel` with ``parse``). ``align=False`` skips the card's
    detection/alignment step (for inputs that are already aligned chips). A ``.onnx`` file
    written by ``facemetric export`` runs through onnxruntime with the card stored in it
    (:mod:`facemetric.inference.onnx_model`)."""
    if is_onnx_path(path):
        backbone, card = load_onnx_backbone(path, device)
        return FaceEmbedder(backbone, card, device, align=align)
    directory = resolve_artifact_dir(resolve_model_path(path))
    card = load_card(directory)
    if card.get("kind") == DENSE_KIND:  # a pixel-level model: .parse(images), not .embed
        return dense_model_from_state(card, load_weights(directory), device, where=str(path))
    model = build_from_card(card)
    state = load_weights(directory)
    own = model.state_dict()
    for key, value in state.items():  # a shape mismatch (e.g. the card's embedding size) is the card's error
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise FacemetricError(
                f"{Path(path)}: weights do not match the card's backbone {card['backbone']['name']!r}: "
                f"{key} is {tuple(value.shape)} in the weights, {tuple(own[key].shape)} in the model "
                f"(card embedding_dim {card.get('embedding_dim')})"
            )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FacemetricError(
            f"{Path(path)}: weights do not match backbone {card['backbone']['name']!r} "
            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)"
        )
    return FaceEmbedder(model, card, device, align=align)


__all__ = ["FaceEmbedder", "load_model"]
