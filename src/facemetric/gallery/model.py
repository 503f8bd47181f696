"""Moved to :mod:`facemetric.inference.model_card` (fingerprints, labels and thresholds are a
model-card concern). This module only re-exports it for old imports."""

from facemetric.inference.model_card import *  # noqa: F403
from facemetric.inference.model_card import __all__  # noqa: F401
