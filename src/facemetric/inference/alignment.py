"""Detection and alignment as a model-card step: ``card["alignment"]`` turns photos into chips.

A model trained on aligned chips (dlib's ResNet on 150x150 ``get_face_chip`` crops, ArcFace
models on the 112x112 five-point template) must see its inputs aligned the same way. When a
card holds an ``alignment`` section, :class:`CardAligner` runs it before the card's
``preprocessing`` (which then only converts and normalises the chip)::

    "alignment": {"detector": "ssd-res10", "landmarks": "dlib5-port",
                  "landmark_box": {"ssd-res10": [-0.027, 0.056, 1.131, 0.815]}, "template": "dlib-150",
                  "size": 150, "padding": 0.25, "select": "center", "fallback": "auto",
                  "pad": 0.5, "otherwise": "center-box", "fallback_fraction": 0.43}

Steps: the ``detector`` (a :data:`facemetric.align.DETECTORS` name, options in
``detector_options``; ``upsample`` for ``dlib-hog``) finds the faces, ``select`` picks one
(``"largest"``, ``"center"``: nearest the photo's centre, ``"score"``), the ``landmarks`` model
(a :data:`facemetric.align.landmarks.LANDMARKERS` name, options in ``landmark_options``;
``None``: the detector's own) places
the points (on the detector's box adapted by ``landmark_box`` when set: ``{detector name:
[shift_x, shift_y, scale_x, scale_y]}``, see :mod:`facemetric.align.fallback`), and the chip
is cut for ``template``.

``fallback`` says what happens when the detector finds no face:

* ``"auto"``: the policy of :mod:`facemetric.align.fallback`, decided from the photo itself:
  the detector again on a zoomed-out copy (``pad`` per side; ``"detected-padded"``), else a
  crop-shaped photo is embedded whole (``"whole-photo"``), else ``otherwise``
  (``"center-box"``: a centred square of ``fallback_fraction`` times the shorter side, or
  ``"none"``);
* ``"center-box"``: the centre box straight away (older cards; ``fallback_landmarks`` ``"5"``
  predicts dlib's landmarks inside it when no ``landmarks`` model is set);
* ``"none"``: a missed face is an error naming the file.

Every call records per photo how its face was found (:attr:`CardAligner.found`, a list of
:class:`~facemetric.align.fallback.FoundFace`) and :attr:`CardAligner.counts` tallies them
(``images``, ``detected``, ``detected_padded``, ``whole_photo``, ``center_box``, ``none``,
``several_faces``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facemetric.align import CenterBoxDetector, build_detector, to_rgb
from facemetric.align.chips import make_chip
from facemetric.align.fallback import FallbackPolicy, FoundFace
from facemetric.align.landmarks import build_landmarker
from facemetric.errors import FacemetricError

DEFAULT_ALIGNMENT: dict[str, Any] = {
    "detector": "dlib-hog",
    "upsample": 1,
    "landmarks": None,
    "template": "dlib-150",
    "size": 150,
    "padding": 0.25,
    "fallback": "center-box",
    "fallback_fraction": 0.43,
    "fallback_landmarks": "5",
    "select": "largest",
    "pad": 0.5,
    "otherwise": "center-box",
    "landmark_box": None,
}

#: :attr:`CardAligner.counts` key of each way a face is found
COUNT_KEYS = {"detected": "detected", "detected-padded": "detected_padded",
              "whole-photo": "whole_photo", "center-box": "center_box", "none": "none"}


def _name(item: Any, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    return f"image {index}"


@dataclass
class Aligned:
    """One photo through :meth:`CardAligner.align_many`: the ``chip`` (uint8, or None),
    ``found`` (how its face was found; None when the photo could not be read) and ``error``
    (the one-line reason when there is no chip)."""

    chip: np.ndarray | None
    found: FoundFace | None
    error: str | None = None


class CardAligner:
    """Align images as ``card["alignment"]`` says; ``__call__(images) -> list of uint8 chips``."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = {**DEFAULT_ALIGNMENT, **spec}
        s = self.spec
        opts = dict(s.get("detector_options") or {})
        if s["detector"] in ("dlib-hog", "hog"):
            opts.setdefault("upsample", int(s["upsample"]))
            if s["landmarks"] is not None:
                opts.setdefault("landmarks", None)  # the landmark model places the points
        self.detector = build_detector(s["detector"], **opts)
        self.landmarker = None if s["landmarks"] is None else build_landmarker(
            s["landmarks"], **dict(s.get("landmark_options") or {}))
        if s["select"] not in ("largest", "center", "score"):
            raise FacemetricError(
                f"alignment.select: expected 'largest', 'center' or 'score', got {s['select']!r}"
            )
        if s["fallback"] not in ("auto", "center-box", "center", "none", None):
            raise FacemetricError(
                f"alignment.fallback: expected 'auto', 'center-box' or 'none', got {s['fallback']!r}"
            )
        if s["otherwise"] not in ("center-box", "none"):
            raise FacemetricError(
                f"alignment.otherwise: expected 'center-box' or 'none', got {s['otherwise']!r}"
            )
        self._center = CenterBoxDetector(
            fraction=float(s["fallback_fraction"]),
            framing=s["template"],
            padding=float(s["padding"]),
            landmarks=None if self.landmarker is not None else s.get("fallback_landmarks"),
        )
        self._fallback_on = s["fallback"] not in ("none", None)
        self.counts = {"images": 0, "detected": 0, "detected_padded": 0, "whole_photo": 0,
                       "center_box": 0, "none": 0, "several_faces": 0}
        #: per image of the latest call: how its face was found
        self.found: list[FoundFace] = []
        #: per image of the latest call, whether the centre-box fallback stood in for a face
        self.fallback_used: list[bool] = []

    # ``aligner.fallback = None`` (e.g. ``facemetric verify`` without ``--center-fallback``)
    # turns the centre box off; the zoomed-out pass and whole-photo crops stay (they are
    # decided from the photo).
    @property
    def fallback(self) -> CenterBoxDetector | None:
        return self._center if self._fallback_on else None

    @fallback.setter
    def fallback(self, value: CenterBoxDetector | None) -> None:
        self._fallback_on = value is not None
        if value is not None:
            self._center = value

    @property
    def policy(self) -> FallbackPolicy:
        s = self.spec
        auto = s["fallback"] == "auto"
        centre = "center-box" if self._fallback_on else "none"
        return FallbackPolicy(
            select=s["select"],
            pad=float(s["pad"]) if auto else 0.0,
            otherwise=s["otherwise"] if (auto and self._fallback_on) else centre,
            crop_fallback="whole-photo" if auto else centre,
            center=self._center,
            landmark_box=self._landmark_box(),
        )

    def _landmark_box(self) -> Any:
        """``landmark_box`` for this detector: a ``{detector name: [sx, sy, kx, ky]}`` mapping
        (a detector without an entry gets none) or one list for any detector."""
        lb = self.spec.get("landmark_box")
        if isinstance(lb, dict):
            name = self.spec["detector"]
            return lb.get(name) if isinstance(name, str) else None
        return lb

    def align_many(self, images: Sequence[Any]) -> list[Aligned]:
        """One :class:`Aligned` per image; an unreadable photo or one without a face gets its
        reason instead of a chip (nothing raises for one bad photo)."""
        s = self.spec
        arrays: list[np.ndarray] = []
        where: list[int] = []
        out: list[Aligned] = [Aligned(None, None, None) for _ in images]
        for i, item in enumerate(images):
            try:
                arrays.append(to_rgb(item, name=_name(item, i)))
                where.append(i)
            except (FacemetricError, OSError, ValueError) as exc:
                out[i].error = str(exc)
        found = self.policy.find(arrays, self.detector, self.landmarker) if arrays else []
        for i, img, f in zip(where, arrays, found, strict=True):
            out[i].found = f
            if f.face is None:
                out[i].error = f"no face found in {_name(images[i], i)}"
                continue
            out[i].chip = make_chip(img, f.face, s["template"], int(s["size"]), float(s["padding"]))
        self.found = [a.found for a in out if a.found is not None]
        self.fallback_used = [a.found is not None and a.found.how == "center-box" for a in out]
        for a in out:
            if a.found is None:
                continue
            self.counts["images"] += 1
            self.counts[COUNT_KEYS[a.found.how]] += 1
            self.counts["several_faces"] += int(a.found.n_faces > 1)
        return out

    def __call__(self, images: Sequence[Any]) -> list[np.ndarray]:
        """The chips of ``images``; the first photo without one raises its one-line reason."""
        chips = []
        for a in self.align_many(list(images)):
            if a.chip is None:
                raise FacemetricError(a.error or "no face found")
            chips.append(a.chip)
        return chips


def found_summary(counts: dict[str, int]) -> str:
    """One line: how the faces of the photos were found (from :attr:`CardAligner.counts`)."""
    parts = [f"{counts.get('detected', 0)} of {counts.get('images', 0)} detected"]
    for key, label in (("detected_padded", "detected zoomed out"), ("whole_photo", "taken whole"),
                       ("center_box", "centre box"), ("none", "no face")):
        if counts.get(key):
            parts.append(f"{counts[key]} {label}")
    if counts.get("several_faces"):
        parts.append(f"{counts['several_faces']} with several faces")
    return ", ".join(parts)


__all__ = ["Aligned", "CardAligner", "COUNT_KEYS", "DEFAULT_ALIGNMENT", "found_summary"]
