"""Backbones, looked up by name in :data:`MODELS`."""

from facemetric.models import lenets as _lenets  # noqa: F401  (registers "lenets++")
from facemetric.models.lenets import LeNetsPlusPlus
from facemetric.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model", "LeNetsPlusPlus"]
