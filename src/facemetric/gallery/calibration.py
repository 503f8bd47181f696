"""Moved to :mod:`facemetric.eval.open_set` (one copy of the threshold math, on top of
:mod:`facemetric.eval.verification`'s helpers). This module only re-exports it for old imports."""

from facemetric.eval.open_set import (  # noqa: F401
    ThresholdCalibration,
    calibrate_threshold,
    max_accepted,
    threshold_at_far,
)

__all__ = ["ThresholdCalibration", "calibrate_threshold", "max_accepted", "threshold_at_far"]
