"""The gallery's open-set threshold policy: which cosine threshold decides "known" vs
``unknown``, and where it came from.

Precedence (first that applies):

1. an explicit threshold (``--threshold``, ``threshold=``): a cosine similarity in ``[-1, 1]``
   (or a card threshold picked by name with ``threshold_key``, converted exactly);
2. the calibration stored in the gallery (``gallery calibrate``), when it was made for the
   same identity score ``by``;
3. the model's impostor tail at open-set FAR ``far`` for this gallery's size (enrolled images
   for ``max``, identities for ``mean``): ``p = 1 - (1 - far)^(1/n)`` read off the tail
   (:func:`facemetric.eval.open_set.tail_threshold`); the querying card's tail, else the
   gallery's own card's (the fingerprints match, so it is the same model);
4. the card's 1:1 distance threshold converted to a cosine
   (:func:`facemetric.inference.model_card.card_similarity_threshold`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from facemetric.errors import FacemetricError
from facemetric.eval.open_set import ThresholdCalibration, card_open_set_threshold
from facemetric.inference.model_card import card_similarity_threshold


def given_threshold(threshold: Any, name: str = "threshold", cosine_range: bool = False) -> float:
    """An explicit cosine threshold: a finite number (or a
    :class:`~facemetric.eval.open_set.ThresholdCalibration`); with ``cosine_range`` also in
    ``[-1, 1]`` (what a user types; a calibrated threshold may sit just above 1)."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise FacemetricError(f"{name}: expected a number, got {threshold!r}") from None
    if not np.isfinite(t):
        raise FacemetricError(f"{name}: expected a finite number, got {threshold!r}")
    if cosine_range and not -1.0 <= t <= 1.0:
        raise FacemetricError(f"{name}: expected a cosine similarity in [-1, 1], got {t}")
    return t


def default_threshold(gallery_card: Mapping[str, Any], card: Mapping[str, Any] | None,
                      calibration: tuple[ThresholdCalibration, str] | None,
                      num_images: int, num_identities: int, by: str = "max",
                      far: float = 0.01) -> tuple[float, str]:
    """``(cosine threshold, where it came from)`` by rules 2-4 of the module docstring."""
    card = gallery_card if card is None else card
    if calibration is not None and calibration[1] == by:
        return calibration[0].threshold, f"calibrated on this gallery at FAR {calibration[0].far_target:g}"
    n = max(1, num_images if by == "max" else num_identities)
    t = card_open_set_threshold(card if card.get("impostor_tail") else gallery_card, n, far)
    if t is not None:
        unit = "images" if by == "max" else "identities"
        return t, f"model's impostor tail: FAR {far:g} against {n} {unit}"
    return card_similarity_threshold(card), "model card"


def choose_threshold(threshold: Any, threshold_key: str | None, gallery_card: Mapping[str, Any],
                     card: Mapping[str, Any] | None, calibration: tuple[ThresholdCalibration, str] | None,
                     num_images: int, num_identities: int, by: str = "max",
                     far: float = 0.01) -> tuple[float, str]:
    """The whole precedence (rules 1-4): ``(threshold, source)``."""
    if threshold is not None:
        return given_threshold(threshold), "given"
    if threshold_key is not None:
        return card_similarity_threshold(card if card is not None else gallery_card, threshold_key), \
            f"model card {threshold_key!r}"
    return default_threshold(gallery_card, card, calibration, num_images, num_identities, by, far)


__all__ = ["choose_threshold", "default_threshold", "given_threshold"]
