"""Result types: :class:`Face`, :class:`DetectionResult` and :class:`AlignedResult`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: where a :class:`Face` came from: the detector on the photo, the detector on a zoomed-out
#: copy of it (:mod:`facemetric.align.fallback`), the whole photo taken as the face, or the
#: centre box
SOURCES: tuple[str, ...] = ("detector", "detector-padded", "whole-photo", "center-box")


@dataclass(frozen=True, eq=False)
class Face:
    """One face in one image.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive (a dlib rectangle
    ``left, top, right, bottom`` becomes ``left, top, right + 1, bottom + 1``); a detector's box
    may reach past the image border. ``score`` is the detector's confidence (dlib HOG: the SVM
    margin, higher is surer; ``0.0`` for a centre box). ``landmarks`` is float64 ``[K, 2]`` of
    ``(x, y)`` or ``None``; ``layout`` names their order (``"dlib5"``, ``"dlib68"``,
    ``"arcface5"``, see :mod:`facemetric.align.templates`). ``source`` is one of
    :data:`SOURCES` (``"detector"``; ``"detector-padded"``, ``"whole-photo"``,
    ``"center-box"``: the fallbacks of :mod:`facemetric.align.fallback`).
    """

    box: tuple[float, float, float, float]
    score: float = 0.0
    landmarks: np.ndarray | None = None
    layout: str | None = None
    source: str = "detector"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source: expected one of {SOURCES}, got {self.source!r}")
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        if self.landmarks is not None:
            pts = np.array(self.landmarks, dtype=np.float64).reshape(-1, 2)
            pts.setflags(write=False)
            object.__setattr__(self, "landmarks", pts)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


def sort_faces(faces: list[Face]) -> list[Face]:
    """Largest box first (ties: higher score first)."""
    return sorted(faces, key=lambda f: (-f.area, -f.score))


@dataclass
class DetectionResult:
    """The faces found in one image, largest box first. ``faces == []`` means "no face found":
    an explicit result, never an exception."""

    faces: list[Face]
    image_size: tuple[int, int]  # (height, width)

    @property
    def found(self) -> bool:
        return bool(self.faces)

    def __len__(self) -> int:
        return len(self.faces)


@dataclass
class AlignedResult:
    """The aligned chips of one image.

    ``faces`` are all faces the detector found (largest first) or, when it found none and the
    fallback ran, the single centre-box face; ``chips[i]`` (uint8 ``[S, S, 3]``) is the chip of
    ``faces[i]`` (only the largest face has one unless ``all_faces``). ``fallback_used`` says the
    centre box stands in for a face the detector did not find. No face and no fallback: both
    lists empty.
    """

    chips: list[np.ndarray]
    faces: list[Face]
    fallback_used: bool = False
    image_size: tuple[int, int] = field(default=(0, 0))  # (height, width)

    @property
    def found(self) -> bool:
        """True when the detector (not the fallback) found at least one face."""
        return bool(self.faces) and not self.fallback_used

    @property
    def chip(self) -> np.ndarray | None:
        """The largest face's chip, or ``None`` when there is none."""
        return self.chips[0] if self.chips else None
