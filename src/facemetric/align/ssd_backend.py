"""SSD face detectors as alignment backends (:data:`facemetric.align.backends.DETECTORS`):

* ``"ssd-res10"`` (:class:`SSDRes10Detector`): OpenCV's res10 SSD face detector ported to
  PyTorch (:mod:`facemetric.detect.res10`; needs ``pip install 'facemetric[pretrained]'``);
* ``"ssd"`` (:class:`TrainedSSDDetector`): a trained SSD, given as its artifact file
  (``detector.pt``) or the run directory holding it (``facemetric train`` with a
  ``task: detection`` recipe).

Both are batched (photos of any sizes in one call; ``batch_size`` photos per forward pass) and
run on the GPU when there is one (``device``). Boxes are in the photo's pixels (``x1``/``y1``
exclusive as :class:`~facemetric.align.types.Face` says; they may reach past the border);
``score`` is the face probability. The SSDs give no landmarks; ``landmarks=`` a
:data:`facemetric.align.landmarks.LANDMARKERS` name (e.g. ``"dlib5-port"``) places them in each
box, so that :func:`~facemetric.align.align_faces` can cut chips::

    align_faces(photos, detector=build_detector("ssd-res10", landmarks="dlib5-port"))

(a model card's ``alignment`` names its own landmark model and needs no such option).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facemetric.align.backends import DETECTORS, Detector
from facemetric.align.landmarks import Landmarker, build_landmarker
from facemetric.align.types import Face, sort_faces
from facemetric.detect.detector import SSDDetections, SSDDetector
from facemetric.errors import ConfigError, FacemetricError

__all__ = ["SSDRes10Detector", "TrainedSSDDetector"]

#: the artifact file name inside a detection run directory
ARTIFACT_NAME = "detector.pt"


def _faces(found: SSDDetections, image: np.ndarray, landmarker: Landmarker | None) -> list[Face]:
    if landmarker is None or len(found) == 0:
        return sort_faces([Face(tuple(float(v) for v in box), float(score))
                           for box, score in zip(found.boxes, found.scores, strict=True)])
    points = landmarker.predict(image, found.boxes.astype(np.float64))
    return sort_faces([Face(tuple(float(v) for v in box), float(score), pts, landmarker.layout)
                       for box, score, pts in zip(found.boxes, found.scores, points, strict=True)])


class _SSDBackend(Detector):
    gives_landmarks = False  # boxes only; a landmark model places points when given
    _ssd: SSDDetector
    _landmarker: Landmarker | None = None

    def _set_landmarks(self, landmarks: str | Landmarker | None) -> None:
        self.landmarks = landmarks if landmarks is None or isinstance(landmarks, str) else repr(landmarks)
        self._landmarker = None if landmarks is None else build_landmarker(landmarks)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        images = list(images)
        return [_faces(found, img, self._landmarker)
                for found, img in zip(self._ssd.detect(images), images, strict=True)]

    def detections(self, images: Sequence[np.ndarray]) -> list[SSDDetections]:
        """The raw :class:`~facemetric.detect.detector.SSDDetections` (score order)."""
        return self._ssd.detect(list(images))

    @property
    def threshold(self) -> float:
        return self._ssd.threshold

    @property
    def device(self) -> str:
        return self._ssd.device.type


def _threshold(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{name} threshold: expected a number in [0, 1), got {value!r}")
    return float(value)


@DETECTORS.register("ssd-res10", "res10")
class SSDRes10Detector(_SSDBackend):
    """OpenCV's res10 SSD face detector (300x300 input, BGR mean (104, 177, 123)), native
    PyTorch. ``threshold``: keep faces whose probability is above it (0.5: OpenCV's sample);
    ``device``: ``"cpu"``, ``"cuda"``... (default: CUDA when available); ``batch_size``: photos
    per forward pass; ``fuse``: fold BatchNorms into convolutions (faster, same outputs within
    float rounding); ``landmarks``: a landmark model name placing points in each box (default
    none: boxes only)."""

    name = "ssd-res10"

    def __init__(self, threshold: float = 0.5, device: str | None = None, batch_size: int = 32,
                 fuse: bool = True, landmarks: str | Landmarker | None = None):
        self._ssd = SSDDetector.res10(threshold=_threshold(threshold, "ssd-res10"), device=device,
                                      batch_size=batch_size, fuse=bool(fuse))
        self._set_landmarks(landmarks)

    def __repr__(self) -> str:
        return (f"SSDRes10Detector(threshold={self.threshold}, device={self.device!r}, "
                f"batch_size={self._ssd.batch_size}, landmarks={self.landmarks!r})")


def artifact_path(model: str | os.PathLike) -> Path:
    """``model`` as an artifact file: the file itself, or ``<dir>/detector.pt``."""
    path = Path(model)
    if path.is_dir():
        path = path / ARTIFACT_NAME
        if not path.is_file():
            raise FacemetricError(f"{path.parent}: no {ARTIFACT_NAME} (not a finished detection run)")
    elif not path.is_file():
        raise FacemetricError(f"{path}: detector artifact not found")
    return path


@DETECTORS.register("ssd")
class TrainedSSDDetector(_SSDBackend):
    """A trained SSD face detector: ``model`` is its artifact (``detector.pt``) or the run
    directory holding it. ``threshold``, ``device``, ``batch_size``, ``landmarks`` as for
    ``ssd-res10``."""

    name = "ssd"

    def __init__(self, model: str | os.PathLike | None = None, threshold: float = 0.5,
                 device: str | None = None, batch_size: int = 32,
                 landmarks: str | Landmarker | None = None):
        if model is None:
            raise ConfigError("ssd detector: expected model=<detector.pt or its run directory>")
        self.model_path = artifact_path(model)
        self._ssd = SSDDetector.from_artifact(self.model_path, threshold=_threshold(threshold, "ssd"),
                                              device=device, batch_size=batch_size)
        self._set_landmarks(landmarks)

    def __repr__(self) -> str:
        return (f"TrainedSSDDetector(model={str(self.model_path)!r}, threshold={self.threshold}, "
                f"device={self.device!r}, landmarks={self.landmarks!r})")
