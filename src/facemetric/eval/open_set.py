"""Open-set thresholds that follow the gallery's size, from a model's impostor score tail.

A 1:1 threshold is wrong for 1:N search: a probe of a stranger is compared with every
enrolled image, and it is falsely accepted when *any* of them scores above the threshold.
With ``p(t)`` the fraction of different-person pairs whose cosine is ``>= t`` (the model's
*impostor tail*) and ``n`` enrolled images, treating the comparisons as independent,

    FAR_1:N(t) = 1 - (1 - p(t))^n        so        p = 1 - (1 - FAR)^(1/n)  (about FAR / n)

gives the threshold for a target open-set false-accept rate: the ``t`` with that ``p``, read
off the tail by interpolation in ``log p``. Measured with dlib-resnet-v1 on LFW (tail from all
87.3M different-person pairs of the 13,233 photos), the rule's thresholds for a 1% target gave
a false-accept rate of 1.10% with 10 enrolled people, 1.05% with 100 and 0.81% with 1,680
(``docs/results.md``). Beyond the measured rates the threshold is clamped to the table's ends.

:func:`impostor_tail` measures a tail from labelled embeddings (every pair of different
identities, blocks of a matrix product, a histogram of ``bins`` cells over ``[-1, 1]``, so the
thresholds are exact to ``2 / bins``); a model card stores it as ``impostor_tail``.

Calibration on labelled scores (:func:`calibrate_threshold`)
-----------------------------------------------------------
Scores are similarities (higher = more alike); a probe is accepted when ``score >= t``.
``FAR(t)`` = fraction of impostor scores ``>= t``; ``TAR(t)`` = fraction of genuine scores
``>= t``. :func:`calibrate_threshold` returns the lowest threshold with ``FAR(t) <= far``: with
``k`` = the largest count with ``k / n_imp <= far`` (the float comparison of
:func:`facemetric.eval.verification.val_at_far`, the same helper) and ``s_(1) >= s_(2) >= ...``
the sorted impostor scores, ``t = nextafter(s_(k+1), +inf)``: every impostor scoring above
``s_(k+1)`` -- at most ``k`` of them -- is accepted, ``s_(k+1)`` itself is not. This is the
similarity mirror of the VAL@FAR rule (the ``(k+1)``-th smallest impostor distance with a
strict ``<``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from facemetric.distances import to_numpy
from facemetric.errors import FacemetricError
from facemetric.eval.verification import _check_far as check_far
from facemetric.eval.verification import _max_accepted as max_accepted
from facemetric.index.search import as_embeddings

RATES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def impostor_tail(
    embeddings: Any, labels: Any, rates: Sequence[float] = RATES, bins: int = 400_000, block: int = 2048,
    min_pairs: float = 1.0,
) -> dict[str, Any]:
    """``{"score": "cosine", "levels": [[rate, t], ...], "pairs": M, "resolution": 2 / bins}``:
    for each ``rate``, the lowest histogram edge ``t`` with ``#(impostor cos >= t) / M >= rate``
    over the ``M`` pairs of different identities (``i < j``). Rates with fewer than
    ``min_pairs`` pairs above them (``rate * M < min_pairs``) are left out."""
    e = torch.from_numpy(np.ascontiguousarray(as_embeddings(embeddings, "embeddings"), dtype=np.float32))
    e = torch.nn.functional.normalize(e, dim=1)
    y = np.asarray(labels)
    if y.shape != (e.shape[0],):
        raise FacemetricError(f"labels: expected {e.shape[0]} (one per embedding), got shape {y.shape}")
    _, inv = np.unique(y, return_inverse=True)
    lab = torch.from_numpy(inv.ravel().astype(np.int64))
    n = e.shape[0]
    hist = torch.zeros(bins, dtype=torch.float64)
    pairs = 0
    cols = torch.arange(n)
    for i in range(0, n, block):
        rows = torch.arange(i, min(i + block, n))
        sim = e[rows] @ e.T
        keep = (lab[rows, None] != lab[None, :]) & (cols[None, :] > rows[:, None])
        v = sim[keep]
        pairs += int(v.numel())
        hist += torch.histc(v.clamp(-1.0, 1.0).double(), bins, -1.0, 1.0)
    if pairs == 0:
        raise FacemetricError("labels: need at least two identities to measure impostor scores")
    at_or_above = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0]).numpy() / pairs
    edges = np.linspace(-1.0, 1.0, bins + 1)
    levels = []
    for rate in sorted((float(r) for r in rates), reverse=True):
        if rate * pairs < max(1.0, float(min_pairs)):
            continue
        idx = int(np.flatnonzero(at_or_above >= rate).max())
        levels.append([rate, float(edges[idx])])
    return {"score": "cosine", "levels": levels, "pairs": pairs, "resolution": 2.0 / bins}


def _levels(tail: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    try:
        table = np.asarray(tail["levels"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise FacemetricError("impostor_tail: expected {'levels': [[rate, threshold], ...]}") from None
    if table.ndim != 2 or table.shape[1] != 2 or table.shape[0] < 1 or (table[:, 0] <= 0).any():
        raise FacemetricError("impostor_tail: expected {'levels': [[rate, threshold], ...]} with rates > 0")
    order = np.argsort(table[:, 0])
    return table[order, 0], table[order, 1]


def threshold_at_rate(tail: Mapping[str, Any], rate: float) -> float:
    """The cosine ``t`` with impostor rate ``p(t) = rate`` (log-linear interpolation in the
    tail's table; clamped to its ends)."""
    rates, thresholds = _levels(tail)
    if not rate > 0:
        raise FacemetricError(f"rate: expected a positive number, got {rate!r}")
    if rates.size == 1:
        return float(thresholds[0])
    return float(np.interp(np.log(rate), np.log(rates), thresholds))


def tail_threshold(tail: Mapping[str, Any], num_images: int, far: float = 0.01) -> float:
    """The cosine threshold for an open-set false-accept rate ``far`` against ``num_images``
    enrolled images (see the module docstring)."""
    far = check_far(far, "far")
    if isinstance(num_images, bool) or int(num_images) < 1:
        raise FacemetricError(f"num_images: expected an integer >= 1, got {num_images!r}")
    return threshold_at_rate(tail, float(-np.expm1(np.log1p(-far) / int(num_images))))  # 1 - (1-far)^(1/n)


def cluster_threshold(tail: Mapping[str, Any], num_photos: int, impostor_edges: float = 0.1) -> float:
    """An edge threshold for clustering ``num_photos`` photos: the cosine at which a photo
    expects ``impostor_edges`` edges to other people's photos, ``p = impostor_edges /
    (num_photos - 1)``. Chinese whispers outvotes a few stray edges; chains of them merge
    people. (dlib-resnet-v1: LFW, 13,233 photos -> 0.955, pairwise F 0.971; ORL, 400 photos
    -> 0.935.)"""
    if isinstance(num_photos, bool) or int(num_photos) < 2:
        return threshold_at_rate(tail, 1.0)
    return threshold_at_rate(tail, min(1.0, float(impostor_edges) / (int(num_photos) - 1)))


def card_open_set_threshold(card: Mapping[str, Any], num_images: int, far: float = 0.01) -> float | None:
    """:func:`tail_threshold` of the card's ``impostor_tail``, or None when it has none."""
    tail = card.get("impostor_tail")
    if not tail:
        return None
    return tail_threshold(tail, num_images, far)


@dataclass(frozen=True)
class ThresholdCalibration:
    """A calibrated similarity threshold; ``float(cal)`` is the threshold."""

    threshold: float
    far: float  # achieved on the impostor scores given
    tar: float  # achieved on the genuine scores given (nan when none)
    far_target: float
    num_genuine: int
    num_impostor: int

    def __float__(self) -> float:
        return self.threshold


def _scores(x: Any, name: str, allow_empty: bool = False) -> np.ndarray:
    s = to_numpy(x, name)
    if s.ndim != 1:
        raise FacemetricError(f"{name}: expected a 1-D array of scores, got shape {s.shape}")
    if s.size == 0 and not allow_empty:
        raise FacemetricError(f"{name}: no scores")
    if s.size and not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)):
        raise FacemetricError(f"{name}: expected real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        entry = int(np.flatnonzero(~np.isfinite(s.ravel()))[0])
        raise FacemetricError(f"{name}: entry {entry} is NaN or inf")
    return s


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Lowest ``t`` with ``#(impostor >= t) / n <= far`` (float64 scores, checked)."""
    k = max_accepted(far, impostor.size)
    if k >= impostor.size:  # far >= 1: accept everything
        return float(impostor.min())
    kth = np.partition(impostor, impostor.size - 1 - k)[impostor.size - 1 - k]  # (k+1)-th largest
    return float(np.nextafter(kth, np.inf))


def calibrate_threshold(
    genuine_scores: Any, impostor_scores: Any, far: float = 1e-3
) -> ThresholdCalibration:
    """The lowest similarity threshold whose FAR on ``impostor_scores`` is at most ``far``.

    Needs at least ``1 / far`` impostor scores (else the FAR cannot be resolved and the
    threshold would only say "above the best impostor"). ``genuine_scores`` (may be empty)
    give the TAR reported with it.
    """
    far = check_far(far, "far")
    imp = _scores(impostor_scores, "impostor_scores")
    gen = _scores(genuine_scores, "genuine_scores", allow_empty=True)
    if imp.size * far < 1.0 - 1e-9:
        raise FacemetricError(
            f"impostor_scores: FAR {far:g} needs at least {int(np.ceil(1 / far - 1e-9))} "
            f"impostor scores, got {imp.size}"
        )
    t = threshold_at_far(imp, far)
    return ThresholdCalibration(
        threshold=t,
        far=float(np.count_nonzero(imp >= t) / imp.size),
        tar=float(np.count_nonzero(gen >= t) / gen.size) if gen.size else float("nan"),
        far_target=far,
        num_genuine=int(gen.size),
        num_impostor=int(imp.size),
    )


__all__ = [
    "RATES",
    "ThresholdCalibration",
    "calibrate_threshold",
    "card_open_set_threshold",
    "check_far",
    "cluster_threshold",
    "impostor_tail",
    "max_accepted",
    "tail_threshold",
    "threshold_at_far",
    "threshold_at_rate",
]
