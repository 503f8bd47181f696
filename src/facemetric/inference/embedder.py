"""``load_model(path).embed(images)``: embeddings with the preprocessing of the model card.

Images may be file paths, PIL images or uint8 arrays (HxWxC or HxW), alone or in a list.
They are decoded, centre-cropped, resized, colour-converted and normalised exactly as the
card says, embedded in batches (optionally with flip test-time augmentation: the raw
embeddings of the image and its mirror are summed, as facenet and insightface do), and
L2-normalised unless ``normalize=False`` (the raw norm is the L2-softmax quality signal).
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

    def __init__(self, model: nn.Module, card: dict[str, Any], device: str | torch.device = "cpu"):
        from facemetric.data.transforms import Preprocessing

        self.card = card
        self.preprocessing = Preprocessing.from_dict(card["preprocessing"])
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @property
    def embedding_dim(self) -> int:
        return int(self.card["embedding_dim"])

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.card.get("thresholds") or {})

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> Tensor:
        """The network input ``[B, C, H, W]`` for ``images``."""
        from facemetric.data.transforms import decode_and_resize, to_tensor

        arrays = [decode_and_resize(item, self.preprocessing) for item in _as_list(images)]
        if not arrays:
            raise FacemetricError("images: nothing to embed")
        return to_tensor(np.stack(arrays), self.preprocessing)

    @torch.no_grad()
    def embed_tensor(self, batch: Tensor, flip: bool = False, normalize: bool = True) -> Tensor:
        """Embeddings of an already preprocessed batch (float32 on CPU)."""
        x = batch.to(self.device)
        emb = self.model(x).float()
        if flip:
            emb = emb + self.model(torch.flip(x, dims=[3])).float()
        if normalize:
            emb = F.normalize(emb, dim=1)
        return emb.cpu()

    def embed(
        self,
        images: ImageLike | Sequence[ImageLike],
        batch_size: int = 64,
        flip: bool = False,
        normalize: bool = True,
    ) -> np.ndarray:
        """Embeddings ``[N, D]`` (float32 numpy) of ``images`` in order."""
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
        """``(embeddings, norms)``: L2-normalised embeddings ``[N, D]`` (float32, as
        :meth:`embed` gives them) and the pre-normalisation norms ``||x||`` ``[N]`` (float64), the
        L2-softmax face-quality signal. With ``flip``, ``x = f(image) + f(mirror)``: the norm of
        the *summed* raw features (the vector that is normalised; up to twice one view's)."""
        items = _as_list(images)
        raw = [
            self.embed_tensor(self.preprocess(items[i : i + batch_size]), flip, normalize=False)
            for i in range(0, len(items), batch_size)
        ]
        if not raw:
            raise FacemetricError("images: nothing to embed")
        x = torch.cat(raw)
        norms = x.double().norm(dim=1).numpy()
        return F.normalize(x, dim=1).numpy(), norms

    def distance(self, a: ImageLike, b: ImageLike, flip: bool = False) -> float:
        """Squared L2 distance between the normalised embeddings of two images (0..4)."""
        e = self.embed([a, b], flip=flip)
        return float(((e[0] - e[1]) ** 2).sum())

    def verify(self, a: ImageLike, b: ImageLike, threshold: float | None = None, flip: bool = False) -> dict[str, Any]:
        """``{"distance", "threshold", "same"}`` using the card's best-accuracy threshold by default."""
        if threshold is None:
            threshold = self.thresholds.get("best_accuracy")
            if threshold is None:
                raise FacemetricError("threshold: the model card has none; pass threshold=")
        d = self.distance(a, b, flip=flip)
        return {"distance": d, "threshold": float(threshold), "same": d < threshold}


def build_from_card(card: dict[str, Any]) -> nn.Module:
    from facemetric.models import build_model

    backbone = card["backbone"]
    return build_model(backbone["name"], **backbone.get("options", {}))


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> FaceEmbedder:
    """Load a model artifact (or a run directory's ``model/``) as a :class:`FaceEmbedder`."""
    directory = resolve_artifact_dir(path)
    card = load_card(directory)
    model = build_from_card(card)
    state = load_weights(directory)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FacemetricError(
            f"{Path(path)}: weights do not match backbone {card['backbone']['name']!r} "
            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)"
        )
    return FaceEmbedder(model, card, device)


__all__ = ["FaceEmbedder", "load_model"]
