"""facemetric: discriminative face embeddings — losses, training and evaluation.

The user-facing facade. ``facemetric.load_model(path, device="cpu", align=True)`` loads a
model artifact, run directory or pretrained name (``"dlib-resnet-v1"``) as a
:class:`facemetric.inference.FaceEmbedder` whose ``.embed(images)`` accepts file paths, PIL
images or arrays. It is :func:`facemetric.inference.embedder.load_model` itself, imported on
first use (a deliberate lazy facade: ``import facemetric`` stays light for the CLI and for
``facemetric.errors``), through the module-level ``__getattr__`` below.
"""

from typing import Any

from facemetric._version import __version__
from facemetric.errors import ConfigError, DataError, FacemetricError

_LAZY = {"load_model": "facemetric.inference.embedder"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib  # the lazy public facade (allow-listed in tests/test_layering.py)

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'facemetric' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", "FacemetricError", "ConfigError", "DataError", "load_model"]
