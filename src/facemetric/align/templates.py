"""Landmark layouts and the reference templates that chips are aligned to.

Coordinates are ``(x, y)`` in pixels, with integer coordinates at pixel *centres* (the
convention of dlib and OpenCV). "Left"/"right" below mean the *image's* left/right.

Landmark layouts (``Face.layout``):

* ``"dlib5"``: dlib's 5-point model (``shape_predictor_5_face_landmarks.dat``), in its order:
  0 outer and 1 inner corner of the image-right eye, 2 outer and 3 inner corner of the
  image-left eye, 4 bottom of the nose.
* ``"dlib68"``: the iBUG 68-point layout (``shape_predictor_68_face_landmarks.dat``).
* ``"arcface5"``: the five points of the common 112x112 template: image-left eye centre,
  image-right eye centre, nose tip, image-left and image-right mouth corner.

Templates:

* :data:`DLIB5_UNIT` and :data:`DLIB68_MEAN_FACE` are dlib's own numbers (from
  ``get_face_chip_details`` in dlib/image_transforms/interpolation.h, taken as facts): points on
  the unit square that a chip of ``size`` pixels with ``padding`` places at
  ``(padding + p) / (1 + 2 * padding) * size``.
* :data:`ARCFACE_112` is the widely used five-point 112x112 template (insightface's
  ``arcface_src``).
* :data:`DLIB5_IN_ARCFACE_112` and :data:`ARCFACE5_IN_DLIB_UNIT` are **measured, not
  standard**: dlib's 5-point model gives eye *corners* and the *bottom* of the nose, the
  ArcFace template eye *centres*, the nose *tip* and the mouth corners, so neither template can
  be used with the other layout as is. They were measured on 396 LFW-deepfunneled faces
  (every 33rd file, HOG detector, largest face) that both of dlib's models (5 and 68 points)
  landmarked: for each face the ArcFace points were taken from the 68 points (eye centres =
  mean of points 36-41 and 42-47, nose tip 30, mouth corners 48 and 54), the face was fitted
  to one template by a similarity transform and the other layout's points were mapped through
  it; the constants are the means over the even-indexed half. On the other half, aligning
  with the 5 dlib points to :data:`DLIB5_IN_ARCFACE_112` puts the 68-derived ArcFace points
  3.4 px (mean over the 5 points) from the template, against 3.1 px for a fit of those
  ArcFace points themselves and 5.8 px for the naive mapping "eye-corner means and nose bottom
  onto the template's eye centres and nose tip" (which also shrinks faces by about 11%,
  because the bottom of the nose lies ~8 px lower than the tip in the 112 frame).
"""

from __future__ import annotations

import numpy as np

from facemetric.errors import FacemetricError

LAYOUTS: tuple[str, ...] = ("dlib5", "dlib68", "arcface5")

#: dlib's 5-point chip template on the unit square, in the ``"dlib5"`` order.
DLIB5_UNIT = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

_DLIB68_MEAN_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
)  # fmt: skip
_DLIB68_MEAN_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
)  # fmt: skip

#: dlib's mean face of the 68-point model, points 17..67 on the unit square ([51, 2]).
DLIB68_MEAN_FACE = np.stack([_DLIB68_MEAN_X, _DLIB68_MEAN_Y], axis=1)

#: The 68-point indices dlib aligns on: 27..54 and 60..64 (eyebrows and lower lip left out).
DLIB68_ALIGN_INDICES = np.array([i for i in range(27, 68) if not (55 <= i <= 59 or 65 <= i <= 67)])

#: The five-point 112x112 template (insightface's ``arcface_src``), in the ``"arcface5"`` order.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)

#: Measured (see the module docstring): where dlib's 5 points fall in the ArcFace 112 frame.
DLIB5_IN_ARCFACE_112 = np.array(
    [
        [79.9467, 52.4979],
        [66.3894, 52.9827],
        [31.5792, 52.8055],
        [45.3136, 53.1076],
        [56.1136, 79.6138],
    ]
)

#: Measured (see the module docstring): where the ArcFace points fall on dlib's unit square.
ARCFACE5_IN_DLIB_UNIT = np.array(
    [
        [0.228387, 0.218631],
        [0.752283, 0.219409],
        [0.494383, 0.510991],
        [0.253248, 0.798446],
        [0.725941, 0.800950],
    ]
)

_EXPECTED_POINTS = {"dlib5": 5, "dlib68": 68, "arcface5": 5}


def check_landmarks(landmarks: np.ndarray | None, layout: str | None) -> np.ndarray:
    """``landmarks`` as float64 ``[K, 2]`` after checking them against ``layout``."""
    if landmarks is None or layout is None:
        raise FacemetricError(
            "face has no landmarks: alignment needs a detector that gives landmarks "
            "(e.g. 'dlib-hog' or 'center')"
        )
    if layout not in _EXPECTED_POINTS:
        raise FacemetricError(f"landmark layout {layout!r}; expected one of: {', '.join(LAYOUTS)}")
    pts = np.asarray(landmarks, dtype=np.float64)
    k = _EXPECTED_POINTS[layout]
    if pts.shape != (k, 2):
        raise FacemetricError(
            f"landmarks of layout {layout!r}: expected shape ({k}, 2), got {pts.shape}"
        )
    if not np.isfinite(pts).all():
        row = int(np.flatnonzero(~np.isfinite(pts).all(axis=1))[0])
        raise FacemetricError(f"landmarks of layout {layout!r}: point {row} is NaN or infinite")
    return pts


def arcface5_from_dlib68(landmarks: np.ndarray) -> np.ndarray:
    """The five ArcFace points from 68 iBUG points: eye centres (36-41, 42-47), nose tip (30),
    mouth corners (48, 54)."""
    p = np.asarray(landmarks, dtype=np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def dlib_chip_points(layout: str, size: int, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """``(template points in a dlib chip of size/padding, landmark indices they pair with)``."""
    if layout == "dlib5":
        unit, idx = DLIB5_UNIT, np.arange(5)
    elif layout == "dlib68":
        unit, idx = DLIB68_MEAN_FACE[DLIB68_ALIGN_INDICES - 17], DLIB68_ALIGN_INDICES
    elif layout == "arcface5":
        unit, idx = ARCFACE5_IN_DLIB_UNIT, np.arange(5)
    else:
        raise FacemetricError(f"landmark layout {layout!r}; expected one of: {', '.join(LAYOUTS)}")
    return (padding + unit) / (2 * padding + 1) * size, idx


def arcface_points(
    landmarks: np.ndarray, layout: str, size: int = 112
) -> tuple[np.ndarray, np.ndarray]:
    """``(source points, template points)`` for a ``size`` x ``size`` ArcFace-style chip
    (the 112 template scaled by ``size / 112``)."""
    scale = size / 112.0
    if layout == "arcface5":
        return landmarks, ARCFACE_112 * scale
    if layout == "dlib68":
        return arcface5_from_dlib68(landmarks), ARCFACE_112 * scale
    if layout == "dlib5":
        return landmarks, DLIB5_IN_ARCFACE_112 * scale
    raise FacemetricError(f"landmark layout {layout!r}; expected one of: {', '.join(LAYOUTS)}")
