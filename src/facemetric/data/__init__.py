"""Data: datasets, samplers, pair protocols, the embedded digits set."""
