"""facemetric: discriminative face embeddings — losses, training and evaluation."""

from facemetric.errors import ConfigError, DataError, FacemetricError

__version__ = "0.1.0"



def load_model(path, device="cpu", align=True):
    """Load a model artifact, run directory or pretrained name (``"dlib-resnet-v1"``) ->
    :class:`facemetric.inference.FaceEmbedder` whose ``.embed(images)`` accepts file paths, PIL
    images or arrays (detected and aligned first when the card says so, unless ``align=False``)."""
    from facemetric.inference.embedder import load_model as _load

    return _load(path, device, align=align)


__all__ = ["__version__", "FacemetricError", "ConfigError", "DataError", "load_model"]
