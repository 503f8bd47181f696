"""A persistent, model-checked face gallery with 1:N search and open-set identification.

    from facemetric.gallery import Gallery
    g = Gallery.create("people.gallery", embedder.card)
    g.enroll("alice", embedder.embed(["a1.jpg", "a2.jpg"]), sources=["a1.jpg", "a2.jpg"])
    g.search(embedder.embed("probe.jpg"), k=5, card=embedder.card)
    g.identify(embedder.embed("probe.jpg")[0], card=embedder.card)  # name or "unknown"

See :mod:`facemetric.gallery.store` for the on-disk layout and the crash-safe commit protocol,
:mod:`facemetric.gallery.search` for the scores, :mod:`facemetric.gallery.model` for model
fingerprints and card thresholds, :mod:`facemetric.gallery.calibration` for FAR thresholds.
"""

from facemetric.gallery.calibration import ThresholdCalibration, calibrate_threshold
from facemetric.gallery.model import card_similarity_threshold, model_fingerprint
from facemetric.gallery.store import (
    UNKNOWN,
    Gallery,
    Identification,
    IdentityRecord,
    ImageRecord,
    Match,
)

__all__ = [
    "UNKNOWN",
    "Gallery",
    "Identification",
    "IdentityRecord",
    "ImageRecord",
    "Match",
    "ThresholdCalibration",
    "calibrate_threshold",
    "card_similarity_threshold",
    "model_fingerprint",
]
