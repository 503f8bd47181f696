"""``load_model(path).embed(images)``: embeddings with the preprocessing of the model card.

Images may be file paths, PIL images or uint8 arrays (HxWxC or HxW), alone or in a list.
They are decoded, centre-cropped, resized, colour-converted and normalised exactly as the
card says, embedded in batches (optionally with flip test-time augmentation: the raw
embeddings of the image and its mirror are summed, as facenet and insightface do), and
L2-normalised as the card's ``normalize_embeddings`` says (default true; ``normalize=False``
gives the raw embeddings, whose norm is the L2-softmax quality signal). Cards of raw-descriptor
models (``normalize_embeddings: false``, e.g. dlib's) get the *mean* of the two flip views, so
that distances keep the card's scale. Distances follow the card's ``distance``:
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
import torch.nn.functional as F
from torch import Tensor, nn

from facemetric.errors import FacemetricError
from facemetric.inference.artifact import load_card, load_weights, resolve_artifact_dir

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
        from facemetric.data.transforms import Preprocessing
        from facemetric.eval.verification import DISTANCES

        self.card = card
        #: the card's detection + alignment step (None: the card has none, or ``align=False``
        #: because the inputs are already aligned chips); ``aligner.counts`` tallies fallbacks
        self.aligner = None
        if align and card.get("alignment"):
            from facemetric.inference.alignment import CardAligner

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
        from facemetric.data.transforms import decode_and_resize, to_tensor

        items = _as_list(images)
        if self.aligner is not None and items:
            items = self.aligner(items)
        arrays = [decode_and_resize(item, self.preprocessing) for item in items]
        if not arrays:
            raise FacemetricError("images: nothing to embed")
        return to_tensor(np.stack(arrays), self.preprocessing)

    @torch.no_grad()
    def embed_tensor(self, batch: Tensor, flip: bool = False, normalize: bool | None = None) -> Tensor:
        """Embeddings of an already preprocessed batch (float32 on CPU); ``normalize=None``:
        as the card says."""
        if normalize is None:
            normalize = self.normalize_embeddings
        x = batch.to(self.device)
        emb = self.model(x).float()
        if flip:
            emb = emb + self.model(torch.flip(x, dims=[3])).float()
            if not self.normalize_embeddings:  # raw-descriptor card: keep the scale
                emb = emb / 2
        if normalize:
            emb = F.normalize(emb, dim=1)
        return emb.cpu()

    def embed(
        self,
        images: ImageLike | Sequence[ImageLike],
        batch_size: int = 64,
        flip: bool = False,
        normalize: bool | None = None,
    ) -> np.ndarray:
        """Embeddings ``[N, D]`` (float32 numpy) of ``images`` in order; L2-normalised as the
        card says unless ``normalize`` is given."""
        items = _as_list(images)
        out = [
            self.embed_tensor(self.preprocess(items[i : i + batch_size]), flip, normalize)
            for i in range(0, len(items), batch_size)
        ]
        if not out:
            raise FacemetricError("images: nothing to embed")
        return torch.cat(out).numpy()

    def embed_with_norms(
        self, images: ImageLike | Sequence[ImageLike], batch_size: int = 64, flip: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings, norms)``: embeddings ``[N, D]`` (float32, as :meth:`embed` gives them:
        L2-normalised unless the card says ``normalize_embeddings: false``) and the
        pre-normalisation norms ``||x||`` ``[N]`` (float64), the L2-softmax face-quality signal.
        With ``flip``, ``x = f(image) + f(mirror)``: the norm of the *summed* raw features (the
        vector that is normalised; up to twice one view's; the mean for raw-descriptor cards)."""
        items = _as_list(images)
        raw = [
            self.embed_tensor(self.preprocess(items[i : i + batch_size]), flip, normalize=False)
            for i in range(0, len(items), batch_size)
        ]
        if not raw:
            raise FacemetricError("images: nothing to embed")
        x = torch.cat(raw)
        norms = x.double().norm(dim=1).numpy()
        return (F.normalize(x, dim=1) if self.normalize_embeddings else x).numpy(), norms

    def distance(self, a: ImageLike, b: ImageLike, flip: bool = False) -> float:
        """The card's distance between the embeddings of two images: by default squared L2
        between L2-normalised embeddings (0..4); Euclidean between raw descriptors for dlib."""
        from facemetric.eval.verification import pair_scores

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
    from facemetric.models import build_model

    backbone = card["backbone"]
    return build_model(backbone["name"], **backbone.get("options", {}))


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", align: bool = True
) -> FaceEmbedder:
    """Load a model artifact (or a run directory's ``model/``, or a pretrained name such as
    ``"dlib-resnet-v1"``) as a :class:`FaceEmbedder`. ``align=False`` skips the card's
    detection/alignment step (for inputs that are already aligned chips)."""
    from facemetric.inference.pretrained import resolve_model_path

    directory = resolve_artifact_dir(resolve_model_path(path))
    card = load_card(directory)
    model = build_from_card(card)
    state = load_weights(directory)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FacemetricError(
            f"{Path(path)}: weights do not match backbone {card['backbone']['name']!r} "
            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)"
        )
    return FaceEmbedder(model, card, device, align=align)


__all__ = ["FaceEmbedder", "load_model"]
