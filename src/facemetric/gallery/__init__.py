"""A persistent, model-checked face gallery with 1:N search and open-set identification.

    from facemetric.gallery import Gallery
    g = Gallery.create("people.gallery", embedder.card)
    g.enroll("alice", embedder.embed(["a1.jpg", "a2.jpg"]), sources=["a1.jpg", "a2.jpg"])
    g.search(embedder.embed("probe.jpg"), k=5, card=embedder.card)
    g.identify(embedder.embed("probe.jpg")[0], card=embedder.card)  # name or "unknown"

Parts: :mod:`~facemetric.gallery.storage` (on-disk layout, crash-safe commit protocol,
integrity checks) with :mod:`~facemetric.gallery.records` (records, name rules) and
:mod:`~facemetric.gallery.files` (vector segment files, build folders, content keys),
:mod:`~facemetric.gallery.vector_index` (the index over the vectors),
:mod:`~facemetric.gallery.thresholds` (which open-set threshold applies),
:mod:`~facemetric.gallery.store` (the :class:`Gallery` facade), :mod:`~facemetric.gallery.images`
(photos through an embedder), :mod:`~facemetric.gallery.enrolment` (the enrol / identify /
calibrate jobs the CLI runs). Vector search lives in :mod:`facemetric.index`, the threshold
math in :mod:`facemetric.eval.open_set`, model fingerprints in
:mod:`facemetric.inference.model_card`.
"""

from facemetric.eval.open_set import ThresholdCalibration, calibrate_threshold
from facemetric.gallery.store import (
    UNKNOWN,
    Gallery,
    Identification,
    IdentityRecord,
    ImageRecord,
    Match,
)
from facemetric.inference.model_card import card_similarity_threshold, model_fingerprint

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
