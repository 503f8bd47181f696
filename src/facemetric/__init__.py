"""facemetric: discriminative face embeddings — losses, training and evaluation."""

from facemetric.errors import ConfigError, DataError, FacemetricError

__version__ = "0.1.0"

__all__ = ["__version__", "FacemetricError", "ConfigError", "DataError"]
