"""Aligned face chips: :func:`dlib_chip`, :func:`template_112` and the batch API
:func:`align_faces`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facemetric.align.backends import DETECTORS, CenterBoxDetector, Detector, build_detector
from facemetric.align.dlib_geometry import chip_details, extract_chip
from facemetric.align.images import ImageInput, to_rgb, to_rgb_batch
from facemetric.align.templates import arcface_points, check_landmarks, dlib_chip_points
from facemetric.align.transform import similarity_transform, warp
from facemetric.align.types import AlignedResult, Face, sort_faces
from facemetric.errors import ConfigError, FacemetricError

TEMPLATES: tuple[str, ...] = ("dlib-150", "arcface-112")


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ConfigError(f"chip size: expected an int >= 2, got {size!r}")
    return int(size)


def dlib_chip(image: ImageInput, face: Face, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The chip ``dlib.get_face_chip(image, shape, size, padding)`` makes, without dlib:
    uint8 ``[size, size, 3]``, the input of dlib's face recognition model (150, 0.25).

    ``face.layout`` ``"dlib5"`` / ``"dlib68"`` use dlib's own templates (same pixels as dlib,
    see :mod:`facemetric.align.dlib_geometry`); ``"arcface5"`` uses a measured equivalent
    (:data:`~facemetric.align.templates.ARCFACE5_IN_DLIB_UNIT`).
    """
    size = _check_size(size)
    if not float(padding) >= 0:
        raise ConfigError(f"chip padding: expected a number >= 0, got {padding!r}")
    img = to_rgb(image)
    pts = check_landmarks(face.landmarks, face.layout)
    chip_pts, idx = dlib_chip_points(face.layout, size, float(padding))
    return extract_chip(img, chip_details(chip_pts, pts[idx], size))


def arcface_matrix(face: Face, size: int = 112) -> np.ndarray:
    """The 2x3 image -> chip similarity of :func:`template_112`."""
    pts = check_landmarks(face.landmarks, face.layout)
    src, dst = arcface_points(pts, face.layout, size)
    return similarity_transform(src, dst)


def template_112(image: ImageInput, face: Face, size: int = 112) -> np.ndarray:
    """The face warped onto the five-point ArcFace template (uint8 ``[size, size, 3]``; the
    112 template scaled by ``size / 112``).

    ``"arcface5"`` landmarks map onto the template directly, ``"dlib68"`` through the five
    points derived from them (eye centres, nose tip, mouth corners), ``"dlib5"`` (eye corners
    and the bottom of the nose: not the template's points) onto
    :data:`~facemetric.align.templates.DLIB5_IN_ARCFACE_112`, measured on LFW.
    """
    size = _check_size(size)
    return warp(to_rgb(image), arcface_matrix(face, size), size)


def make_chip(
    image: np.ndarray, face: Face, template: str, size: int | None = None, padding: float = 0.25
):
    """One chip of ``face`` for ``template`` (``"dlib-150"`` or ``"arcface-112"``)."""
    if template == "dlib-150":
        return dlib_chip(image, face, 150 if size is None else size, padding)
    if template == "arcface-112":
        return template_112(image, face, 112 if size is None else size)
    raise ConfigError(f"alignment template {template!r}; expected one of: {', '.join(TEMPLATES)}")


def align_faces(
    images: ImageInput | Sequence[ImageInput],
    detector: str | Detector = "dlib-hog",
    template: str = "dlib-150",
    all_faces: bool = False,
    fallback: str | CenterBoxDetector | None = "center-box",
    size: int | None = None,
    padding: float = 0.25,
    landmarks: str | None = "auto",
) -> list[AlignedResult]:
    """Detect and align the faces of a batch of images (paths, PIL images or uint8 arrays;
    one image is a batch of one). One :class:`AlignedResult` per image, in order.

    ``detector``: a registered name (``"dlib-hog"``, ``"center"``, ``"ssd-res10"``, ``"ssd"``)
    or a :class:`Detector`. ``landmarks``: for a detector named here that finds boxes only (the
    SSDs), the landmark model placing points in each box
    (:data:`facemetric.align.landmarks.LANDMARKERS`; ``"auto"``: ``"dlib5-port"``, dlib's
    5-point predictor run natively; ``None``: none — chips then need a detector that gives
    landmarks). Ignored for a :class:`Detector` instance (build it with its own landmarks).
    ``template``: ``"dlib-150"`` (dlib's chip, ``size`` 150 and ``padding`` by default, what
    dlib's recognition model expects) or ``"arcface-112"`` (``size`` 112). ``all_faces``: a chip
    for every face (largest first) instead of the largest only. ``fallback``: when the detector
    finds no face, ``"center-box"`` aligns the image's centre box instead (a
    :class:`CenterBoxDetector` framed like ``template``, or the one given) and sets
    ``fallback_used``; ``None`` leaves the result empty.
    """
    if template not in TEMPLATES:
        raise ConfigError(
            f"alignment template {template!r}; expected one of: {', '.join(TEMPLATES)}"
        )
    if size is not None:
        _check_size(size)
    if fallback is None or isinstance(fallback, CenterBoxDetector):
        fallback_det = fallback
    elif fallback in ("center-box", "center"):
        fallback_det = CenterBoxDetector(framing=template, padding=padding)
    else:
        raise ConfigError(
            f"fallback {fallback!r}; expected 'center-box', a CenterBoxDetector or None"
        )
    det = build_detector(detector, **_landmark_option(detector, landmarks))
    arrays = to_rgb_batch(images)
    found = det.detect(arrays)
    if len(found) != len(arrays):
        raise FacemetricError(f"{det!r} returned {len(found)} results for {len(arrays)} images")
    results = []
    for img, faces in zip(arrays, found, strict=True):
        faces = sort_faces(list(faces))
        used = False
        if not faces and fallback_det is not None:
            faces, used = fallback_det.detect([img])[0], True
        chosen = faces if all_faces else faces[:1]
        chips = [make_chip(img, f, template, size, padding) for f in chosen]
        results.append(AlignedResult(chips, list(faces), used, (img.shape[0], img.shape[1])))
    return results


def _landmark_option(detector: str | Detector, landmarks: str | None) -> dict[str, Any]:
    """``{"landmarks": name}`` for a detector name whose factory places landmarks on request."""
    if isinstance(detector, Detector) or landmarks is None:
        return {}
    factory = DETECTORS.get(detector)
    if getattr(factory, "gives_landmarks", True):
        return {}  # a detector with landmarks of its own (dlib-hog: its 5/68-point option)
    return {"landmarks": "dlib5-port" if landmarks == "auto" else landmarks}


def align_face(
    image: ImageInput, detector: str | Detector = "dlib-hog", **kwargs: Any
) -> AlignedResult:
    """:func:`align_faces` for one image."""
    return align_faces([image], detector, **kwargs)[0]
