"""SSD face detection parts (Liu et al., ECCV 2016, after weiliu89's Caffe layers): prior boxes,
box coding, NMS, L2Norm, matching, the MultiBox loss, detection output, SSD augmentation and an
SSD assembly. Boxes are corner form ``(xmin, ymin, xmax, ymax)`` relative to the image (0..1)
unless a name says pixels."""

from facemetric.detect.boxes import box_iou, center_to_corner, corner_to_center, decode, encode
from facemetric.detect.detection_output import DetectionOutput
from facemetric.detect.l2norm import L2Norm
from facemetric.detect.matching import match_batch, match_priors, match_targets
from facemetric.detect.multibox_loss import MultiBoxLoss
from facemetric.detect.nms import batched_nms, nms
from facemetric.detect.priors import PriorBoxSpec, prior_boxes, ssd_priors
from facemetric.detect.ssd import SSD, SSDInput, build_ssd, load_ssd_artifact, save_ssd_artifact

__all__ = [
    "DetectionOutput",
    "L2Norm",
    "MultiBoxLoss",
    "PriorBoxSpec",
    "SSD",
    "SSDInput",
    "batched_nms",
    "box_iou",
    "build_ssd",
    "center_to_corner",
    "corner_to_center",
    "decode",
    "encode",
    "load_ssd_artifact",
    "match_batch",
    "match_priors",
    "match_targets",
    "nms",
    "prior_boxes",
    "save_ssd_artifact",
    "ssd_priors",
]
