"""Face detection and alignment.

>>> from facemetric.align import align_faces
>>> results = align_faces(["a.jpg", "b.jpg"], detector="dlib-hog", template="dlib-150")
>>> results[0].chip.shape          # (150, 150, 3) uint8, largest face
>>> results[0].fallback_used       # True when no face was found and the centre box stood in

Detectors (``build_detector(name, **opts)``): ``"dlib-hog"`` (:class:`DlibHogDetector`, needs
``pip install 'facemetric[dlib]'``) and ``"center"`` (:class:`CenterBoxDetector`, for
pre-cropped images; no dependency), ``"ssd-res10"`` (:class:`SSDRes10Detector`, OpenCV's res10
SSD ported to PyTorch, batched, GPU when available; needs ``pip install 'facemetric[pretrained]'``)
and ``"ssd"`` (:class:`TrainedSSDDetector`, a trained SSD's ``detector.pt`` or run directory).
Templates: ``"dlib-150"`` (:func:`dlib_chip`, the same pixels as ``dlib.get_face_chip``) and
``"arcface-112"`` (:func:`template_112`).
"""

from facemetric.align.backends import (
    DETECTORS,
    CenterBoxDetector,
    Detector,
    DlibHogDetector,
    build_detector,
    detect_faces,
)
from facemetric.align.chips import (
    TEMPLATES,
    align_face,
    align_faces,
    arcface_matrix,
    dlib_chip,
    template_112,
)
from facemetric.align.images import to_rgb
from facemetric.align.landmark_net import Learned5Landmarker  # noqa: F401  (registers 'learned5')
from facemetric.align.ssd_backend import SSDRes10Detector, TrainedSSDDetector
from facemetric.align.templates import ARCFACE_112, DLIB5_IN_ARCFACE_112, DLIB5_UNIT
from facemetric.align.transform import apply_affine, invert_affine, similarity_transform, warp
from facemetric.align.types import AlignedResult, DetectionResult, Face

__all__ = [
    "ARCFACE_112",
    "DETECTORS",
    "DLIB5_IN_ARCFACE_112",
    "DLIB5_UNIT",
    "TEMPLATES",
    "AlignedResult",
    "CenterBoxDetector",
    "DetectionResult",
    "Detector",
    "DlibHogDetector",
    "Face",
    "SSDRes10Detector",
    "TrainedSSDDetector",
    "align_face",
    "align_faces",
    "apply_affine",
    "arcface_matrix",
    "build_detector",
    "detect_faces",
    "dlib_chip",
    "invert_affine",
    "similarity_transform",
    "template_112",
    "to_rgb",
    "warp",
]
