"""facemetric: discriminative face embeddings — losses, training and evaluation."""

from facemetric.errors import ConfigError, DataError, FacemetricError

__version__ = "0.1.0"



def load_model(path, device="cpu"):
    """Load a model artifact (or run directory) -> :class:`facemetric.inference.FaceEmbedder`
    whose ``.embed(images)`` accepts file paths, PIL images or arrays."""
    from facemetric.inference.embedder import load_model as _load

    return _load(path, device)


__all__ = ["__version__", "FacemetricError", "ConfigError", "DataError", "load_model"]
