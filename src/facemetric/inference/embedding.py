"""The one embedding function: every path that turns images into embeddings calls
:func:`embed_batches` (``FaceEmbedder.embed``/``embed_with_norms``/``embed_tensor``,
:func:`facemetric.inference.batch.embed_files`, ``embed_identity_folder``, the training
validation evaluator, ``embed_dataset``).

For each batch ``b`` of preprocessed network inputs ``[B, C, H, W]`` and a backbone ``f``
(run in eval mode, without gradients; its train/eval mode is restored afterwards):

* ``x = f(b)`` -- without flip test-time augmentation;
* ``x = f(b) + f(mirror(b))`` -- with ``flip`` (facenet and insightface sum the two views;
  ``mirror`` reverses the width axis);
* ``x = (f(b) + f(mirror(b))) / 2`` -- with ``flip`` and ``flip_mean`` (raw-descriptor cards,
  ``normalize_embeddings: false`` such as dlib's, keep the scale of one view).

The result holds ``norms = ||x||`` (float64, the L2-softmax quality signal, computed on the
float32 ``x``) and the embeddings ``x / max(||x||, 1e-12)`` in float32 when ``normalize``
(``torch.nn.functional.normalize``), else ``x`` itself. Batches are consumed lazily, so a
caller may decode (and skip) files while the network runs; an optional ``progress`` callback
gets the number of images embedded after each batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Embedded:
    """What :func:`embed_batches` returns: ``embeddings`` float32 ``[N, D]`` (normalised or
    raw, as asked) and ``norms`` float64 ``[N]`` (the norms of the raw, flip-combined
    features), both CPU tensors."""

    embeddings: Tensor
    norms: Tensor

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        return self.embeddings.numpy(), self.norms.numpy()


def flip_tta(model: nn.Module, x: Tensor, flip: bool, flip_mean: bool = False) -> Tensor:
    """The raw features of one input batch ``x`` (already on the model's device), float32:
    ``f(x)``, or with ``flip`` ``f(x) + f(mirror(x))`` (halved when ``flip_mean``). The only
    place where flip test-time augmentation is computed."""
    emb = model(x).float()
    if flip:
        emb = emb + model(torch.flip(x, dims=[3])).float()
        if flip_mean:
            emb = emb / 2
    return emb


def normalize_rows(x: Tensor) -> Tensor:
    """The embeddings' L2 normalisation, ``x / max(||x||, 1e-12)`` per row, in float32
    (``torch.nn.functional.normalize``): the one used by :func:`embed_batches` and by scorers
    of raw embeddings (:func:`facemetric.eval.embedding.evaluate_pairs`)."""
    return F.normalize(x.float(), dim=1)


@torch.no_grad()
def embed_batches(
    model: nn.Module,
    batches: Iterable[Tensor],
    *,
    flip: bool = False,
    flip_mean: bool = False,
    normalize: bool = True,
    device: str | torch.device | None = None,
    embedding_dim: int | None = None,
    progress: Callable[[int], Any] | None = None,
) -> Embedded:
    """Embed every batch of ``batches`` in order (see the module docstring for the formula).

    ``device``: where the model runs (default: where its parameters are); inputs are moved
    there and results come back to the CPU. ``embedding_dim`` gives the shape ``[0, D]`` of an
    empty result (no batches); without it an empty input gives ``[0, 0]``.
    """
    params = next(iter(model.parameters()), None)
    if device is None:
        device = params.device if params is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    raw: list[Tensor] = []
    try:
        for batch in batches:
            if batch.shape[0] == 0:
                continue
            raw.append(flip_tta(model, batch.to(device), flip, flip_mean).cpu())
            if progress is not None:
                progress(int(batch.shape[0]))
    finally:
        model.train(was_training)
    x = torch.cat(raw) if raw else torch.zeros((0, int(embedding_dim or 0)))
    norms = x.double().norm(dim=1)
    return Embedded(normalize_rows(x) if normalize else x, norms)


def dataset_batches(dataset: Any, batch_size: int) -> Iterator[Tensor]:
    """The input tensors of ``dataset`` in order, ``batch_size`` at a time: ``get_batch(idx)``
    when the dataset has it (cached and in-memory datasets), else stacked ``dataset[i][0]``."""
    for start in range(0, len(dataset), batch_size):
        idx = list(range(start, min(start + batch_size, len(dataset))))
        if hasattr(dataset, "get_batch"):
            images, _ = dataset.get_batch(idx)
        else:
            images = torch.stack([dataset[i][0] for i in idx])
        yield images


__all__ = ["Embedded", "dataset_batches", "embed_batches", "flip_tta", "normalize_rows"]
