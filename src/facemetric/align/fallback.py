"""How the face of a photo is found: detection, then a fallback decided from the photo itself.

:func:`find_faces` runs a detector over a batch of RGB photos and, for every photo, returns one
:class:`FoundFace` saying which face was taken and **how it was found** (``how``):

Every pass keeps only detections with at least half of their box inside the photo (for the
zoomed-out copy: inside the photo's place in the canvas). A face of the photo lies mostly in
it; SSD detectors (res10 included, OpenCV's original as much as the port) answer a face that
fills the frame with confident boxes spread over and beyond the frame, which this drops.

``"detected"``
    The detector found it in the photo. With several faces, ``select`` picks one
    (``"largest"`` box, the box ``"center"`` nearest the photo's centre, or the detector's best
    ``"score"``) and ``why`` says so (``"largest of 3 faces"``).
``"detected-padded"``
    The detector found nothing in the photo -- or the face it found fills the photo (its box
    is at least half the photo's area: detectors are trained on faces with context around
    them and answer a frame-filling face unreliably, res10 with confident but shifted boxes)
    -- and found a face in a *zoomed-out copy*: the
    photo centred on a black canvas ``1 + 2 * pad`` times its size (``pad=0.5``: twice). A photo
    that is itself a tight face crop is the usual case: detectors are trained on faces with
    context around them and at sizes well below the frame, so a face that fills (or is cut by)
    the frame is missed, and shrinking it inside a canvas restores both. The box is mapped
    back to the photo (it may reach past the border). The canvas is black because dlib's
    landmark sampling and chip extraction read black outside a photo: landmarks and chips of
    the mapped box on the photo are the same as on the canvas.
``"whole-photo"``
    No face even zoomed out, and the photo has the shape of a face crop (its longer side at
    most ``max_aspect`` = 2 times its shorter side): the photo is taken to *be* the face, with
    the box ``(0, 0, W, H)`` and landmarks predicted inside it (what face_recognition does with
    a face location covering the crop). A face crop is the only kind of photo in which a face
    can fill the frame; a photo twice as long as it is wide cannot be one face filling it.
``"center-box"``
    No face at either scale and the photo is not crop-shaped (or the caller chose it): the
    legacy centre box (:class:`~facemetric.align.CenterBoxDetector`: a centred square of
    ``fraction`` times the shorter side) with landmarks predicted inside it.
``"none"``
    No face, and ``otherwise="none"``: the photo is left without a face (callers skip it and
    report "no face found").

The rule uses no fraction measured on a data set: the only constants are the zoom-out factor
(one octave: the step between a detector's scales) and the aspect bound (a geometric property
of one face filling a frame). Landmarks come from a :class:`~facemetric.align.landmarks.Landmarker`
when one is given (for every face, the detector's own landmarks are then ignored); otherwise
the detector's own landmarks are kept.

``landmark_box`` adapts a detector's boxes to the boxes a landmark model was trained on
(``(shift_x, shift_y, scale_x, scale_y)``: the landmark box has the centre
``c + shift * (w, h)`` and the size ``scale * (w, h)`` of a detected box with centre ``c`` and
size ``(w, h)``); it applies to detected faces only (a whole photo or a centre box is given
as is). E.g. dlib's shape predictor was trained on dlib HOG boxes, and res10 SSD boxes are
taller and higher (see :data:`facemetric.inference.pretrained.DLIB_RESNET_V1_ALIGNMENT`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from facemetric.align.backends import CenterBoxDetector, Detector
from facemetric.align.landmarks import Landmarker
from facemetric.align.types import Face, sort_faces
from facemetric.errors import ConfigError, FacemetricError

#: every value of :attr:`FoundFace.how`, in the order the policy tries them
HOW: tuple[str, ...] = ("detected", "detected-padded", "whole-photo", "center-box", "none")
SELECT: tuple[str, ...] = ("largest", "center", "score")
OTHERWISE: tuple[str, ...] = ("center-box", "whole-photo", "none")


@dataclass
class FoundFace:
    """The face taken from one photo: ``face`` (with landmarks; None when ``how == "none"``),
    ``how`` (see the module docstring), ``why`` (a short human note, e.g. ``"largest of 2
    faces"``), ``n_faces`` (faces the detector found in the photo or, for
    ``"detected-padded"``, in the zoomed-out copy) and the photo's ``image_size`` (H, W)."""

    face: Face | None
    how: str
    why: str
    n_faces: int
    image_size: tuple[int, int]

    def to_dict(self) -> dict:
        box = None if self.face is None else [round(v, 2) for v in self.face.box]
        return {"how": self.how, "why": self.why, "faces": self.n_faces, "box": box}


def pick(faces: list[Face], select: str, image_size: tuple[int, int]) -> tuple[int, str]:
    """Index of the face ``select`` picks among ``faces`` and why (``"1 face"``, ...)."""
    n = len(faces)
    if n == 1:
        return 0, "1 face"
    if select == "largest":
        i = int(np.argmax([f.area for f in faces]))
        return i, f"largest of {n} faces"
    if select == "score":
        return int(np.argmax([f.score for f in faces])), f"most confident of {n} faces"
    h, w = image_size
    d = [((f.box[0] + f.box[2]) / 2 - w / 2) ** 2 + ((f.box[1] + f.box[3]) / 2 - h / 2) ** 2
         for f in faces]
    return int(np.argmin(d)), f"nearest the centre of {n} faces"


def zoomed_out(image: np.ndarray, pad: float) -> tuple[np.ndarray, int, int]:
    """``image`` centred on a black canvas, ``round(pad * W)`` / ``round(pad * H)`` pixels
    added on the left and right / top and bottom; returns (canvas, dx, dy)."""
    h, w = image.shape[:2]
    dx, dy = int(round(pad * w)), int(round(pad * h))
    canvas = np.zeros((h + 2 * dy, w + 2 * dx, image.shape[2]), dtype=image.dtype)
    canvas[dy : dy + h, dx : dx + w] = image
    return canvas, dx, dy


def inside_fraction(box: Sequence[float], region: Sequence[float]) -> float:
    """The fraction of ``box``'s area inside ``region`` (both ``(x0, y0, x1, y1)``)."""
    w, h = box[2] - box[0], box[3] - box[1]
    if w <= 0 or h <= 0:
        return 0.0
    iw = max(0.0, min(box[2], region[2]) - max(box[0], region[0]))
    ih = max(0.0, min(box[3], region[3]) - max(box[1], region[1]))
    return iw * ih / (w * h)


def is_crop_shaped(image_size: tuple[int, int], max_aspect: float = 2.0) -> bool:
    """Whether a photo of ``(H, W)`` could be one face filling the frame: its longer side is
    at most ``max_aspect`` times its shorter side."""
    h, w = image_size
    return max(h, w) <= max_aspect * min(h, w)


class FallbackPolicy:
    """The policy of the module docstring, configured once and applied with
    :meth:`find` (or :func:`find_faces`).

    ``select``: ``"largest"``, ``"center"`` or ``"score"`` among several faces. ``pad``: the
    zoom-out margin per side as a fraction of the photo (0 turns the zoomed-out pass off).
    ``otherwise``: what a photo without a detected face gets when it is not crop-shaped
    (``"center-box"``, ``"whole-photo"``, ``"none"``); ``crop_fallback``: what a crop-shaped one
    gets (``"whole-photo"`` by default; ``"center-box"`` or ``"none"`` to opt out).
    ``center``: the :class:`CenterBoxDetector` of the centre-box fallback (its landmarks are
    replaced by the landmarker's when one is given).
    """

    def __init__(
        self,
        select: str = "largest",
        pad: float = 0.5,
        otherwise: str = "center-box",
        crop_fallback: str = "whole-photo",
        max_aspect: float = 2.0,
        center: CenterBoxDetector | None = None,
        landmark_box: Sequence[float] | None = None,
    ):
        if select not in SELECT:
            raise ConfigError(f"select: expected one of {', '.join(SELECT)}, got {select!r}")
        for key, value in (("otherwise", otherwise), ("crop_fallback", crop_fallback)):
            if value not in OTHERWISE:
                raise ConfigError(f"{key}: expected one of {', '.join(OTHERWISE)}, got {value!r}")
        if isinstance(pad, bool) or not isinstance(pad, (int, float)) or not 0 <= pad <= 4:
            raise ConfigError(f"pad: expected a number in [0, 4], got {pad!r}")
        if not float(max_aspect) >= 1:
            raise ConfigError(f"max_aspect: expected a number >= 1, got {max_aspect!r}")
        self.select = select
        self.pad = float(pad)
        self.otherwise = otherwise
        self.crop_fallback = crop_fallback
        self.max_aspect = float(max_aspect)
        self.center = center or CenterBoxDetector()
        self.landmark_box = None
        if landmark_box is not None:
            lb = np.asarray(landmark_box, dtype=np.float64).reshape(-1)
            if lb.shape != (4,) or not np.isfinite(lb).all() or (lb[2:] <= 0).any():
                raise ConfigError(
                    "landmark_box: expected [shift_x, shift_y, scale_x, scale_y] with "
                    f"positive scales, got {landmark_box!r}"
                )
            self.landmark_box = lb

    def __repr__(self) -> str:
        return (f"FallbackPolicy(select={self.select!r}, pad={self.pad}, "
                f"otherwise={self.otherwise!r}, crop_fallback={self.crop_fallback!r})")

    def _fallback(self, img: np.ndarray) -> tuple[str, Face | None, str]:
        size = (img.shape[0], img.shape[1])
        crop = is_crop_shaped(size, self.max_aspect)
        kind = self.crop_fallback if crop else self.otherwise
        shape = "crop-shaped" if crop else "not crop-shaped"
        if kind == "none":
            return "none", None, f"no face found ({shape} photo)"
        if kind == "whole-photo":
            face = Face((0.0, 0.0, float(size[1]), float(size[0])), 0.0, None, None, "whole-photo")
            return "whole-photo", face, f"no face found; {shape} photo taken whole"
        face = self.center.detect([img])[0][0]
        return "center-box", face, f"no face found; {shape} photo, centre box"

    def find(
        self,
        images: Sequence[np.ndarray],
        detector: Detector,
        landmarker: Landmarker | None = None,
    ) -> list[FoundFace]:
        """One :class:`FoundFace` per RGB uint8 photo of ``images`` (see the module docstring)."""
        images = list(images)
        found = detector.detect(images)
        if len(found) != len(images):
            raise FacemetricError(f"{detector!r} returned {len(found)} results for {len(images)} images")
        out: list[FoundFace | None] = [None] * len(images)
        missed = []
        for i, (img, faces) in enumerate(zip(images, found, strict=True)):
            h, w = img.shape[:2]
            faces = sort_faces([f for f in faces if inside_fraction(f.box, (0, 0, w, h)) >= 0.5])
            if faces:
                j, why = pick(faces, self.select, img.shape[:2])
                out[i] = FoundFace(faces[j], "detected", why, len(faces), img.shape[:2])
                if faces[j].area >= 0.5 * h * w:  # fills the photo: check it zoomed out
                    missed.append(i)
            else:
                missed.append(i)
        if missed and self.pad > 0:
            canvases = [zoomed_out(images[i], self.pad) for i in missed]
            again = detector.detect([c for c, _, _ in canvases])
            still = []
            for i, (canvas, dx, dy), faces in zip(missed, canvases, again, strict=True):
                h, w = images[i].shape[:2]
                region = (dx, dy, dx + w, dy + h)
                faces = sort_faces([f for f in faces if inside_fraction(f.box, region) >= 0.5])
                if not faces:
                    if out[i] is None:  # (a frame-filling detection stays as it was)
                        still.append(i)
                    continue
                filled = out[i] is not None
                j, why = pick(faces, self.select, canvas.shape[:2])
                f = faces[j]
                x0, y0, x1, y1 = f.box
                lm = None if f.landmarks is None else f.landmarks - np.array([dx, dy])
                moved = Face((x0 - dx, y0 - dy, x1 - dx, y1 - dy), f.score, lm, f.layout,
                             "detector-padded")
                note = "; the face found in the photo filled it" if filled else ""
                out[i] = FoundFace(moved, "detected-padded", f"{why} in the zoomed-out photo{note}",
                                   len(faces), images[i].shape[:2])
            missed = still
        for i in [i for i in missed if out[i] is None]:
            how, face, why = self._fallback(images[i])
            out[i] = FoundFace(face, how, why, 0, images[i].shape[:2])
        results = [r for r in out if r is not None]
        return self._landmark(images, results, landmarker)

    def landmark_box_of(self, face: Face) -> np.ndarray:
        """The box the landmark model is given for ``face`` (see ``landmark_box``)."""
        box = np.array(face.box, dtype=np.float64)
        if self.landmark_box is None or face.source not in ("detector", "detector-padded"):
            return box
        sx, sy, kx, ky = self.landmark_box
        w, h = box[2] - box[0], box[3] - box[1]
        cx, cy = (box[0] + box[2]) / 2 + sx * w, (box[1] + box[3]) / 2 + sy * h
        return np.array([cx - kx * w / 2, cy - ky * h / 2, cx + kx * w / 2, cy + ky * h / 2])

    def _landmark(
        self, images: list[np.ndarray], results: list[FoundFace], landmarker: Landmarker | None
    ) -> list[FoundFace]:
        for img, r in zip(images, results, strict=True):
            if r.face is None:
                continue
            if landmarker is None:
                if r.face.landmarks is None:
                    raise FacemetricError(
                        f"the {r.how} face has no landmarks: configure a landmark model "
                        "(e.g. landmarks='dlib5-port')"
                    )
                continue
            pts = landmarker.predict(img, self.landmark_box_of(r.face)[None])[0]
            r.face = replace(r.face, landmarks=pts, layout=landmarker.layout)
        return results


class PolicyDetector(Detector):
    """A :class:`Detector` that answers with the one face :class:`FallbackPolicy` takes from each
    photo (an empty list for ``how == "none"``): ``detector`` finds, ``landmarker`` (optional)
    places the landmarks, ``policy`` decides; the face's ``source`` says how it was found
    (``"detector"``, ``"detector-padded"``, ``"whole-photo"``, ``"center-box"``). What
    ``facemetric align`` uses unless ``--all-faces``."""

    def __init__(self, detector: Detector, landmarker: Landmarker | None = None,
                 policy: FallbackPolicy | None = None):
        self.detector = detector
        self.landmarker = landmarker
        self.policy = policy or FallbackPolicy()
        self.name = f"policy({getattr(detector, 'name', '') or type(detector).__name__})"

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        found = self.policy.find(list(images), self.detector, self.landmarker)
        return [[] if r.face is None else [r.face] for r in found]

    def __repr__(self) -> str:
        return f"PolicyDetector({self.detector!r}, {self.landmarker!r}, {self.policy!r})"


def find_faces(
    images: Sequence[np.ndarray],
    detector: Detector,
    landmarker: Landmarker | None = None,
    policy: FallbackPolicy | None = None,
) -> list[FoundFace]:
    """:meth:`FallbackPolicy.find` with ``policy`` (default: :class:`FallbackPolicy()`)."""
    return (policy or FallbackPolicy()).find(images, detector, landmarker)


__all__ = [
    "HOW",
    "FallbackPolicy",
    "PolicyDetector",
    "FoundFace",
    "find_faces",
    "inside_fraction",
    "is_crop_shaped",
    "pick",
    "zoomed_out",
]
