"""Moved to :mod:`facemetric.eval.open_set` (open-set threshold math: impostor tails, the
size-aware rule, FAR calibration). This module only re-exports it for old imports."""

from facemetric.eval.open_set import *  # noqa: F403
from facemetric.eval.open_set import __all__  # noqa: F401
