"""Detection and alignment as a model-card step: ``card["alignment"]`` turns photos into chips.

A model trained on aligned chips (dlib's ResNet on 150x150 ``get_face_chip`` crops, ArcFace
models on the 112x112 five-point template) must see its inputs aligned the same way. When a
card holds an ``alignment`` section, :class:`CardAligner` runs it before the card's
``preprocessing`` (which then only converts and normalises the chip)::

    "alignment": {"detector": "dlib-hog", "upsample": 1, "template": "dlib-150", "size": 150,
                  "padding": 0.25, "fallback": "center-box", "fallback_fraction": 0.43,
                  "fallback_landmarks": "5"}

``fallback``: ``"center-box"`` aligns a centre box when the detector finds no face (with
dlib's landmarks predicted inside it when ``fallback_landmarks`` is set: face_recognition's
behaviour for a given face location); ``"none"`` makes a missed face an error naming the file.
``select`` picks the face when several are found: ``"largest"`` (default), ``"center"`` (the
face whose box centre is nearest the image centre: right for centred datasets such as LFW,
where a larger bystander is sometimes detected) or ``"score"`` (the detector's most confident).
:attr:`CardAligner.counts` tallies what happened (``images``, ``detected``, ``center_box``,
``several_faces``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from facemetric.align import CenterBoxDetector, align_faces, build_detector
from facemetric.errors import FacemetricError

DEFAULT_ALIGNMENT: dict[str, Any] = {
    "detector": "dlib-hog",
    "upsample": 1,
    "template": "dlib-150",
    "size": 150,
    "padding": 0.25,
    "fallback": "center-box",
    "fallback_fraction": 0.43,
    "fallback_landmarks": "5",
    "select": "largest",
}


def _name(item: Any, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    return f"image {index}"


class CardAligner:
    """Align images as ``card["alignment"]`` says; ``__call__(images) -> list of uint8 chips``."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = {**DEFAULT_ALIGNMENT, **spec}
        s = self.spec
        opts = {"upsample": int(s["upsample"])} if s["detector"] in ("dlib-hog", "hog") else {}
        self.detector = build_detector(s["detector"], **opts)
        if s["fallback"] in (None, "none"):
            self.fallback = None
        elif s["fallback"] in ("center-box", "center"):
            self.fallback = CenterBoxDetector(
                fraction=float(s["fallback_fraction"]),
                framing=s["template"],
                padding=float(s["padding"]),
                landmarks=s.get("fallback_landmarks"),
            )
        else:
            raise FacemetricError(
                f"alignment.fallback: expected 'center-box' or 'none', got {s['fallback']!r}"
            )
        if s["select"] not in ("largest", "center", "score"):
            raise FacemetricError(
                f"alignment.select: expected 'largest', 'center' or 'score', got {s['select']!r}"
            )
        self.counts = {"images": 0, "detected": 0, "center_box": 0, "several_faces": 0}
        #: per image of the latest call, whether the centre-box fallback stood in for a face
        self.fallback_used: list[bool] = []

    def _pick(self, result: Any) -> np.ndarray | None:
        if not result.chips:
            return None
        how = self.spec["select"]
        if how == "largest" or len(result.chips) == 1:
            return result.chips[0]
        h, w = result.image_size
        if how == "center":
            key = [((f.box[0] + f.box[2]) / 2 - w / 2) ** 2 + ((f.box[1] + f.box[3]) / 2 - h / 2) ** 2
                   for f in result.faces]
            return result.chips[int(np.argmin(key))]
        return result.chips[int(np.argmax([f.score for f in result.faces]))]

    def __call__(self, images: Sequence[Any]) -> list[np.ndarray]:
        s = self.spec
        results = align_faces(
            list(images), self.detector, template=s["template"], fallback=self.fallback,
            size=int(s["size"]), padding=float(s["padding"]), all_faces=s["select"] != "largest",
        )
        chips = []
        self.fallback_used = [bool(r.fallback_used) for r in results]
        for i, (item, r) in enumerate(zip(images, results, strict=True)):
            chip = self._pick(r)
            if chip is None:
                raise FacemetricError(f"no face found in {_name(item, i)}")
            self.counts["images"] += 1
            self.counts["center_box" if r.fallback_used else "detected"] += 1
            self.counts["several_faces"] += int(len(r.faces) > 1)
            chips.append(chip)
        return chips
