"""The package version (a bottom-layer module, so that any package can stamp it into what it
writes without importing the :mod:`facemetric` facade)."""

__version__ = "0.1.0"
