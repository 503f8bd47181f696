"""Gallery operations on photos: embed them with the embedder passed in (its one embedding
function, ``embedder.embed``), then enrol, search or identify the embeddings. The gallery
itself (:mod:`facemetric.gallery.store`) never embeds; these functions are its only link to a
model, and they check the embedder's card against the gallery's model first.

``images``: a path, a PIL image or an array, or a list of them; file paths become the stored
sources of enrolled images.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def _items(images: Any) -> list[Any]:
    return [images] if _single(images) else list(images)


def _single(images: Any) -> bool:
    return isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "convert")


def enroll_images(gallery: Any, identity: str, images: Any, embedder: Any, *, flip: bool = False,
                  metadata: Any = None, identity_metadata: Mapping[str, Any] | None = None,
                  batch_size: int = 64) -> list[int]:
    """Embed ``images`` with ``embedder`` (checked against the gallery's model) and enrol them
    as ``identity``; returns the new image ids."""
    gallery.check_model(embedder.card)
    items = _items(images)
    emb = embedder.embed(items, batch_size=batch_size, flip=flip)
    sources = [os.fspath(x) if isinstance(x, (str, os.PathLike)) else None for x in items]
    return gallery.enroll(identity, emb, sources, metadata, identity_metadata, card=embedder.card)


def search_images(gallery: Any, images: Any, embedder: Any, k: int = 5, by: str = "max", *,
                  flip: bool = False, index: str | None = None) -> list:
    """Top-``k`` identities (:meth:`Gallery.search <facemetric.gallery.Gallery.search>`) of
    each image; one list of matches per image."""
    gallery.check_model(embedder.card)
    return gallery.search(embedder.embed(_items(images), flip=flip), k, by, card=embedder.card, index=index)


def identify_images(gallery: Any, images: Any, embedder: Any, *, threshold: float | None = None,
                    threshold_key: str | None = None, by: str = "max", flip: bool = False,
                    far: float = 0.01):
    """Open-set identification (:meth:`Gallery.identify <facemetric.gallery.Gallery.identify>`)
    of images: one :class:`~facemetric.gallery.Identification` for one image, a list for a list."""
    gallery.check_model(embedder.card)
    res = gallery.identify(embedder.embed(_items(images), flip=flip), card=embedder.card,
                           threshold=threshold, threshold_key=threshold_key, by=by, far=far)
    return res[0] if _single(images) else res


__all__ = ["enroll_images", "identify_images", "search_images"]
