"""Batched SSD inference: photos of any sizes in, boxes and scores in each photo's pixels out.

:class:`SSDDetector` wraps ANY ``nn.Module`` whose ``forward(x [B, 3, h, w])`` returns
``(loc [B, N, 4], conf [B, N, C])`` -- the res10 port (:mod:`facemetric.detect.res10`) and the
trained SSDs of :mod:`facemetric.detect.ssd` alike -- with its priors ``[N, 4]`` (relative
corners; default ``model.priors``). For each chunk of ``batch_size`` photos:

1. every photo (RGB uint8 ``[H, W, 3]``) is resized to the network input ``(h, w)`` on the
   model's device: bilinear with half-pixel centres and no antialiasing, rounded to integers --
   the pixels of ``cv2.resize(img, (w, h))`` (``INTER_LINEAR``) up to OpenCV's fixed-point
   rounding (at most 1 grey level);
2. :class:`SSDPreprocessing` (``colour`` order, ``(pixel - mean) * scale``; for res10:
   BGR, mean (104, 177, 123), scale 1 -- OpenCV's ``blobFromImage``);
3. the forward pass under :func:`torch.inference_mode`; ``conf`` goes through ``softmax`` over
   the classes unless ``outputs="probs"`` (a model that returns probabilities already);
4. :class:`~facemetric.detect.detection_output.DetectionOutput` (decode, per-class confidence
   threshold, NMS, top_k, keep_top_k), with its confidence threshold raised to ``threshold``
   -- which changes nothing above it: a box below the threshold suppresses only lower-scored
   boxes, and the top_k cuts remove the lowest scores first;
5. detections with ``score > threshold`` (Caffe's comparison), boxes scaled to the photo:
   ``x * W``, ``y * H`` (not clipped: a box may reach past the border, as Caffe's are).

Results are :class:`SSDDetections`, sorted by score, descending.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facemetric.detect.detection_output import DetectionOutput
from facemetric.detect.res10 import RES10_DETECTION_OUTPUT, RES10_MEAN_BGR, load_res10
from facemetric.detect.ssd import SSDInput, load_ssd_artifact
from facemetric.errors import ConfigError, FacemetricError

__all__ = ["SSDDetections", "SSDDetector", "SSDPreprocessing", "default_device", "resize_rgb"]

#: How a photo becomes the network input (input size, colour order, mean, scale): the same
#: dataclass the trained-SSD artifacts store (:class:`facemetric.detect.ssd.SSDInput`).
SSDPreprocessing = SSDInput


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class SSDDetections:
    """The detections in one photo, highest score first: ``boxes`` float32 ``[M, 4]``
    ``(x0, y0, x1, y1)`` in the photo's pixels, ``scores`` float32 ``[M]``, ``labels`` int64
    ``[M]`` (class index; 1 = face for the face detectors), ``image_size`` ``(H, W)``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def relative_boxes(self) -> np.ndarray:
        """``boxes`` divided by ``(W, H, W, H)`` (the network's relative corners)."""
        h, w = self.image_size
        return self.boxes / np.array([w, h, w, h], dtype=np.float32)

    def to_json(self) -> list[dict[str, Any]]:
        """One dict per detection: ``box`` (pixels), ``score``, ``label``."""
        return [
            {"box": [round(float(v), 3) for v in box], "score": round(float(s), 6), "label": int(lab)}
            for box, s, lab in zip(self.boxes, self.scores, self.labels, strict=True)
        ]


def resize_rgb(image: np.ndarray, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, h, w]`` on ``device``: bilinear, half-pixel
    centres, no antialiasing, rounded to integers (``cv2.resize`` ``INTER_LINEAR``)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float()
    if tuple(x.shape[1:]) == tuple(size):
        return x
    x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=False)[0]
    return x.round_().clamp_(0, 255)


def _check_image(image: Any, index: int) -> np.ndarray:
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
            or image.shape[2] != 3 or 0 in image.shape[:2]):
        desc = f"array {image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise FacemetricError(f"image {index}: expected an RGB uint8 [H, W, 3] array, got {desc}")
    return image


class SSDDetector:
    """Batched inference for an SSD (see the module docstring).

    ``model``: an ``nn.Module`` returning ``(loc, conf)``; ``preprocessing``: an
    :class:`SSDPreprocessing`; ``detection_output``: a
    :class:`~facemetric.detect.detection_output.DetectionOutput` or its keyword arguments
    (default: the res10 prototxt's); ``priors``: ``[N, 4]`` (default ``model.priors``);
    ``threshold``: keep detections with ``score > threshold``; ``device``: default CUDA when
    available; ``batch_size``: photos per forward pass; ``outputs``: ``"logits"`` (softmax
    applied here) or ``"probs"``; ``channels_last``: run the model in NHWC memory format
    (the model is converted in place; same outputs, faster on CPUs). Usage::

        det = SSDDetector.res10(threshold=0.5)
        found = det.detect([rgb_array_a, rgb_array_b])   # RGB uint8, any sizes
        found[0].boxes, found[0].scores                   # pixels, highest score first
    """

    def __init__(
        self,
        model: nn.Module,
        preprocessing: SSDPreprocessing,
        detection_output: DetectionOutput | Mapping[str, Any] | None = None,
        priors: torch.Tensor | None = None,
        threshold: float = 0.5,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        outputs: str = "logits",
        channels_last: bool = True,
    ):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
            raise ConfigError(f"detector threshold: expected a number in [0, 1), got {threshold!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"detector batch_size: expected an int >= 1, got {batch_size!r}")
        if outputs not in ("logits", "probs"):
            raise ConfigError(f"detector outputs: expected 'logits' or 'probs', got {outputs!r}")
        if detection_output is None:
            detection_output = dict(RES10_DETECTION_OUTPUT)
        if isinstance(detection_output, Mapping):
            detection_output = DetectionOutput(**dict(detection_output))
        self.device = torch.device(device) if device is not None else default_device()
        self.channels_last = bool(channels_last)
        self.model = model.eval().to(self.device)
        if self.channels_last:  # NHWC: every convolution takes oneDNN's fast path on CPUs
            self.model = self.model.to(memory_format=torch.channels_last)
        self.preprocessing = preprocessing
        if priors is None:
            priors = getattr(model, "priors", None)
            if not isinstance(priors, torch.Tensor):
                raise ConfigError("detector priors: the model has no `priors` tensor; pass priors=")
        self.priors = priors.to(self.device)
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.outputs = outputs
        base = detection_output
        self.detection_output = DetectionOutput(
            num_classes=base.num_classes, background_label=base.background_label,
            confidence_threshold=max(float(base.confidence_threshold), self.threshold),
            nms_threshold=base.nms_threshold, top_k=base.top_k, keep_top_k=base.keep_top_k,
            variances=base.variances, clip=base.clip,
        )
        self.input_size = tuple(int(v) for v in preprocessing.input_size)

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def res10(cls, threshold: float = 0.5, device: str | torch.device | None = None,
              batch_size: int = 32, fuse: bool = True) -> SSDDetector:
        """OpenCV's res10 face SSD (:func:`facemetric.detect.res10.load_res10`; ``fuse``
        folds its BatchNorms into the convolutions, which leaves the outputs within float
        rounding)."""
        model = load_res10(fuse=fuse)
        pre = SSDPreprocessing(tuple(model.input_size), colour="bgr", mean=RES10_MEAN_BGR, scale=1.0)
        return cls(model, pre, RES10_DETECTION_OUTPUT, threshold=threshold, device=device,
                   batch_size=batch_size)

    @classmethod
    def from_artifact(cls, path: Any, threshold: float = 0.5,
                      device: str | torch.device | None = None, batch_size: int = 32) -> SSDDetector:
        """A trained SSD saved by :func:`facemetric.detect.ssd.save_ssd_artifact`."""
        dev = torch.device(device) if device is not None else default_device()
        art = load_ssd_artifact(path, device=dev)
        return cls(art.model, art.preprocessing, art.detection_output, threshold=threshold,
                   device=dev, batch_size=batch_size)

    def __repr__(self) -> str:
        return (f"SSDDetector({type(self.model).__name__}, input={self.input_size}, "
                f"threshold={self.threshold}, device={self.device.type}, batch_size={self.batch_size})")

    # -- inference ---------------------------------------------------------------------------
    def _chunks(self, images: Sequence[np.ndarray]) -> Iterator[Sequence[np.ndarray]]:
        for start in range(0, len(images), self.batch_size):
            yield images[start:start + self.batch_size]

    def network_input(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The network's input ``[B, 3, h, w]`` for RGB uint8 photos (steps 1-2)."""
        rgb = torch.stack([resize_rgb(img, self.input_size, self.device) for img in images])
        return self.preprocessing.to_tensor(rgb)

    @torch.inference_mode()
    def raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        """DetectionOutput rows ``(label, score, xmin, ymin, xmax, ymax)`` (relative) per image
        of a preprocessed batch ``x`` (steps 3-4; the threshold not yet applied as ``>``)."""
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loc, conf = self.model(x)
        probs = conf.softmax(-1) if self.outputs == "logits" else conf
        return self.detection_output(loc, probs, self.priors)

    def detect(self, images: Sequence[np.ndarray]) -> list[SSDDetections]:
        """Detections per photo (RGB uint8 ``[H, W, 3]`` arrays of any sizes), in order."""
        images = [_check_image(img, i) for i, img in enumerate(images)]
        out: list[SSDDetections] = []
        for chunk in self._chunks(images):
            rows = self.raw(self.network_input(chunk))
            for img, det in zip(chunk, rows, strict=True):
                det = det[det[:, 1] > self.threshold].cpu().numpy()
                h, w = img.shape[:2]
                boxes = (det[:, 2:6] * np.array([w, h, w, h], dtype=np.float32)).astype(np.float32)
                out.append(SSDDetections(boxes, det[:, 1].astype(np.float32),
                                         det[:, 0].astype(np.int64), (h, w)))
        return out
