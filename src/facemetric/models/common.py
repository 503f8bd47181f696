"""Small helpers shared by the backbones."""

from __future__ import annotations

from facemetric.errors import ConfigError


def hw(value: int | tuple[int, int] | list[int], field: str = "model.input_size") -> tuple[int, int]:
    """``112`` -> ``(112, 112)``; ``(112, 96)`` -> ``(112, 96)``; anything else: ConfigError."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConfigError(f"{field}: expected an int or (height, width), got {value!r}")
        h, w = (int(v) for v in value)
    else:
        h = w = int(value)
    return h, w


def check_common(embedding_dim: int, in_channels: int) -> None:
    """One-line ConfigErrors for non-positive ``embedding_dim`` / ``in_channels``."""
    if int(embedding_dim) < 1:
        raise ConfigError(f"model.embedding_dim: expected a positive integer, got {embedding_dim}")
    if int(in_channels) < 1:
        raise ConfigError(f"model.in_channels: expected a positive integer, got {in_channels}")
