"""Losses and heads: each is ``loss(embeddings [B,D], labels [B]) -> scalar``.

Build one by name with :func:`build_loss` (``LOSSES`` is the registry).
"""

from facemetric.losses.base import ClassifierLoss, EmbeddingLoss, check_inputs
from facemetric.losses.registry import LOSSES, build_loss

__all__ = ["LOSSES", "build_loss", "EmbeddingLoss", "ClassifierLoss", "check_inputs"]

# importing the modules registers them
from facemetric.losses import center as _center  # noqa: E402,F401
from facemetric.losses import l2_softmax as _l2_softmax  # noqa: E402,F401
from facemetric.losses import softmax as _softmax  # noqa: E402,F401
from facemetric.losses.center import CenterLoss, center_update  # noqa: E402
from facemetric.losses.l2_softmax import L2SoftmaxLoss, alpha_lower_bound  # noqa: E402
from facemetric.losses.softmax import SoftmaxLoss  # noqa: E402
from facemetric.losses.triplet import TripletLoss  # noqa: E402  (importing registers it)

__all__ += ["SoftmaxLoss", "L2SoftmaxLoss", "alpha_lower_bound", "CenterLoss", "center_update"]
__all__ += ["TripletLoss"]

# normalised-softmax heads (NormFace and the margin heads)
from facemetric.losses.adaface import AdaFaceLoss  # noqa: E402
from facemetric.losses.arcface import ArcFaceLoss  # noqa: E402
from facemetric.losses.combined_margin import CombinedMarginLoss  # noqa: E402
from facemetric.losses.cosface import CosFaceLoss  # noqa: E402
from facemetric.losses.magface import MagFaceLoss  # noqa: E402
from facemetric.losses.normalized_head import NormalizedHead, arcface_target, unit_angle  # noqa: E402
from facemetric.losses.normface import NormFaceLoss  # noqa: E402
from facemetric.losses.sphereface import SphereFaceLoss, sphereface_psi  # noqa: E402
from facemetric.losses.subcenter_arcface import SubCenterArcFaceLoss  # noqa: E402

__all__ += ["NormalizedHead", "NormFaceLoss", "SphereFaceLoss", "CosFaceLoss", "ArcFaceLoss"]
__all__ += ["CombinedMarginLoss", "SubCenterArcFaceLoss", "AdaFaceLoss", "MagFaceLoss"]
__all__ += ["arcface_target", "unit_angle", "sphereface_psi"]
