"""SSD face detectors as alignment backends (:data:`facemetric.align.backends.DETECTORS`):

* ``"ssd-res10"`` (:class:`SSDRes10Detector`): OpenCV's res10 SSD face detector ported to
  PyTorch (:mod:`facemetric.detect.res10`; needs ``pip install 'facemetric[pretrained]'``);
* ``"ssd"`` (:class:`TrainedSSDDetector`): a trained SSD, given as its artifact file
  (``detector.pt``) or the run directory holding it (``facemetric train`` with a
  ``task: detection`` recipe).

Both are batched (photos of any sizes in one call; ``batch_size`` photos per forward pass) and
run on the GPU when there is one (``device``). Boxes are in the photo's pixels (``x1``/``y1``
exclusive as :class:`~facemetric.align.types.Face` says; they may reach past the border);
``score`` is the face probability; no landmarks (a landmark model places them, e.g.
``align_faces(..., detector="ssd-res10")`` with a card's ``landmarks``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facemetric.align.backends import DETECTORS, Detector
from facemetric.align.types import Face, sort_faces
from facemetric.detect.detector import SSDDetections, SSDDetector
from facemetric.errors import ConfigError, FacemetricError

__all__ = ["SSDRes10Detector", "TrainedSSDDetector"]

#: the artifact file name inside a detection run directory
ARTIFACT_NAME = "detector.pt"


def _faces(found: SSDDetections) -> list[Face]:
    return sort_faces([Face(tuple(float(v) for v in box), float(score))
                       for box, score in zip(found.boxes, found.scores, strict=True)])


class _SSDBackend(Detector):
    _ssd: SSDDetector

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        return [_faces(found) for found in self._ssd.detect(list(images))]

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
    float rounding)."""

    name = "ssd-res10"

    def __init__(self, threshold: float = 0.5, device: str | None = None, batch_size: int = 32,
                 fuse: bool = True):
        self._ssd = SSDDetector.res10(threshold=_threshold(threshold, "ssd-res10"), device=device,
                                      batch_size=batch_size, fuse=bool(fuse))

    def __repr__(self) -> str:
        return (f"SSDRes10Detector(threshold={self.threshold}, device={self.device!r}, "
                f"batch_size={self._ssd.batch_size})")


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
    directory holding it. ``threshold``, ``device``, ``batch_size`` as for ``ssd-res10``."""

    name = "ssd"

    def __init__(self, model: str | os.PathLike | None = None, threshold: float = 0.5,
                 device: str | None = None, batch_size: int = 32):
        if model is None:
            raise ConfigError("ssd detector: expected model=<detector.pt or its run directory>")
        self.model_path = artifact_path(model)
        self._ssd = SSDDetector.from_artifact(self.model_path, threshold=_threshold(threshold, "ssd"),
                                              device=device, batch_size=batch_size)

    def __repr__(self) -> str:
        return (f"TrainedSSDDetector(model={str(self.model_path)!r}, threshold={self.threshold}, "
                f"device={self.device!r})")
