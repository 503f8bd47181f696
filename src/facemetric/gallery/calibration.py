"""Open-set thresholds on cosine scores chosen at a target false-accept rate.

Scores are similarities (higher = more alike); a probe is accepted when ``score >= t``.
``FAR(t)`` = fraction of impostor scores ``>= t``; ``TAR(t)`` = fraction of genuine scores
``>= t``. :func:`calibrate_threshold` returns the lowest threshold with ``FAR(t) <= far``: with
``k`` = the largest count with ``k / n_imp <= far`` (the float comparison of
:func:`facemetric.eval.verification.val_at_far`) and ``s_(1) >= s_(2) >= ...`` the sorted
impostor scores, ``t = nextafter(s_(k+1), +inf)``: every impostor scoring above ``s_(k+1)`` --
at most ``k`` of them -- is accepted, ``s_(k+1)`` itself is not. This is the similarity mirror
of the VAL@FAR rule (the ``(k+1)``-th smallest impostor distance with a strict ``<``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facemetric.errors import FacemetricError


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().double().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        raise FacemetricError(f"{name}: expected an array, got {type(x).__name__}") from None


def _check_far(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FacemetricError(f"{name}: expected a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:
        raise FacemetricError(f"{name}: expected a number in (0, 1), got {value!r}")
    return v


def max_accepted(far: float, n: int) -> int:
    """Largest ``k`` with ``k / n <= far`` (as facemetric.eval.verification compares floats)."""
    k = int(np.floor(far * n))
    while k + 1 <= n and (k + 1) / n <= far:
        k += 1
    while k > 0 and k / n > far:
        k -= 1
    return k


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
    s = _to_numpy(x, name)
    if s.ndim != 1:
        raise FacemetricError(f"{name}: expected a 1-D array of scores, got shape {s.shape}")
    if s.size == 0 and not allow_empty:
        raise FacemetricError(f"{name}: no scores")
    if s.size and not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)):
        raise FacemetricError(f"{name}: expected real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise FacemetricError(f"{name}: contain NaN or inf")
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
    far = _check_far(far, "far")
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


__all__ = ["ThresholdCalibration", "calibrate_threshold", "max_accepted", "threshold_at_far"]
