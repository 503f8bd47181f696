"""The backbone registry: ``build_model("lenets++", embedding_dim=2, in_channels=1, input_size=28)``."""

from __future__ import annotations

from typing import Any

from torch import nn

from facemetric.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")


def build_model(name: str, **options: Any) -> nn.Module:
    """Build the backbone registered as ``name``; it maps images ``[B,C,H,W]`` to ``[B, D]``."""
    return MODELS.build(name, **options)
