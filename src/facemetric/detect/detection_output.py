"""Caffe SSD's ``DetectionOutputLayer`` (``detection_output_layer.cpp``), ``share_location = true``,
``code_type = CENTER_SIZE``, ``eta = 1``.

Per image: decode every prior's ``loc`` with :func:`facemetric.detect.boxes.decode`; for every
class ``c != background_label``, take the boxes whose probability is ``> confidence_threshold``,
run greedy NMS (:func:`facemetric.detect.nms.nms`) at ``nms_threshold`` on the ``top_k``
highest of them; then, if more than ``keep_top_k`` detections remain over all classes, keep
the ``keep_top_k`` highest-scoring ones. Each detection is a row
``(label, score, xmin, ymin, xmax, ymax)`` (relative corners, not clipped unless ``clip``),
rows sorted by score, descending (for one foreground class this is Caffe's order; with several
Caffe groups rows by label, here they are merged by score). An image without a detection
gives an empty ``[0, 6]`` tensor (Caffe writes a row of -1 instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from facemetric.detect.boxes import decode
from facemetric.detect.nms import nms

__all__ = ["DetectionOutput"]


class DetectionOutput:
    def __init__(
        self,
        num_classes: int,
        background_label: int = 0,
        confidence_threshold: float = 0.01,
        nms_threshold: float = 0.45,
        top_k: int = 400,
        keep_top_k: int = 200,
        variances: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
        clip: bool = False,
    ):
        self.num_classes = num_classes
        self.background_label = background_label
        self.confidence_threshold = confidence_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self.keep_top_k = keep_top_k
        self.variances = tuple(variances)
        self.clip = clip

    @torch.no_grad()
    def __call__(self, loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor) -> list[torch.Tensor]:
        """``loc [B, N, 4]``, ``conf [B, N, C]`` (softmax probabilities), ``priors [N, 4]``."""
        if loc.dim() != 3 or conf.dim() != 3 or loc.shape[:2] != conf.shape[:2] or loc.shape[1] != priors.shape[0]:
            raise ValueError(
                f"DetectionOutput: expected loc [B, N, 4], conf [B, N, C] and priors [N, 4], got "
                f"{tuple(loc.shape)}, {tuple(conf.shape)}, {tuple(priors.shape)}"
            )
        if conf.shape[2] != self.num_classes:
            raise ValueError(f"DetectionOutput: conf has {conf.shape[2]} classes, expected {self.num_classes}")
        boxes_all = decode(loc.float(), priors.to(loc.device).float(), self.variances)
        if self.clip:
            boxes_all = boxes_all.clamp(0.0, 1.0)
        out = []
        for boxes, scores_all in zip(boxes_all, conf.float(), strict=True):
            rows = []
            for c in range(self.num_classes):
                if c == self.background_label:
                    continue
                scores = scores_all[:, c]
                index = torch.nonzero(scores > self.confidence_threshold).flatten()
                if index.numel() == 0:
                    continue
                keep = index[nms(boxes[index], scores[index], self.nms_threshold, self.top_k)]
                label = torch.full((keep.numel(), 1), float(c), device=boxes.device)
                rows.append(torch.cat([label, scores[keep, None], boxes[keep]], dim=1))
            if not rows:
                out.append(torch.zeros((0, 6), device=boxes.device))
                continue
            det = torch.cat(rows)
            det = det[torch.sort(det[:, 1], descending=True, stable=True).indices]
            if self.keep_top_k > -1:
                det = det[: self.keep_top_k]
            out.append(det)
        return out
