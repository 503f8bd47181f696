"""Losses and heads: each is ``loss(embeddings [B,D], labels [B]) -> scalar``.

Build one by name with :func:`build_loss` (``LOSSES`` is the registry). Pair and triplet
losses (``triplet``, ``contrastive``) are composed PML-style from a distance object
(:mod:`facemetric.distances`: ``SquaredL2Distance``, ``EuclideanDistance``, ``LpDistance``,
``CosineSimilarity``) and a miner (:mod:`facemetric.losses.miners`), and also accept
``indices_tuple=`` in ``forward``.

One vocabulary for the hyper-parameters of every loss:

* ``scale`` -- the factor a normalised feature or cosine is multiplied by before the softmax
  (L2-softmax's alpha, NormFace/CosFace/ArcFace's ``s``); ``learn_scale`` makes it trainable;
* ``margin`` -- the margin of a loss in its own units (the triplet loss's, facenet's alpha;
  the contrastive loss's ``m``; the additive/angular/multiplicative margins of the heads);
* ``lambda_`` -- the weight of an auxiliary term added to a main loss (center loss);
* ``center_lr`` -- the center loss's center update rate (the paper's alpha).

Deprecated aliases, still accepted with a ``DeprecationWarning``: ``l2-softmax``
``alpha``/``learn_alpha`` (use ``scale``/``learn_scale``) and ``center`` ``alpha`` (use
``center_lr``).
"""

from facemetric.losses.base import ClassifierLoss, EmbeddingLoss, check_inputs
from facemetric.losses.registry import LOSSES, build_loss

__all__ = ["LOSSES", "build_loss", "EmbeddingLoss", "ClassifierLoss", "check_inputs"]

# importing the modules registers them
from facemetric.losses import center as _center  # noqa: E402,F401
from facemetric.losses import l2_softmax as _l2_softmax  # noqa: E402,F401
from facemetric.losses import softmax as _softmax  # noqa: E402,F401
from facemetric.losses.center import CenterLoss, center_update  # noqa: E402
from facemetric.losses.contrastive import ContrastiveLoss  # noqa: E402
from facemetric.losses.l2_softmax import L2SoftmaxLoss, alpha_lower_bound  # noqa: E402
from facemetric.losses.miners import (  # noqa: E402
    MINERS,
    AllPairsMiner,
    AllTripletsMiner,
    BaseMiner,
    BatchHardMiner,
    PairMarginMiner,
    RandomViolatingMiner,
    SemiHardMiner,
    build_miner,
)
from facemetric.losses.softmax import SoftmaxLoss  # noqa: E402
from facemetric.losses.triplet import TripletLoss  # noqa: E402  (importing registers it)

__all__ += ["SoftmaxLoss", "L2SoftmaxLoss", "alpha_lower_bound", "CenterLoss", "center_update"]
__all__ += ["TripletLoss", "ContrastiveLoss", "MINERS", "build_miner", "BaseMiner"]
__all__ += ["SemiHardMiner", "RandomViolatingMiner", "BatchHardMiner", "AllTripletsMiner"]
__all__ += ["AllPairsMiner", "PairMarginMiner"]

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

# Partial FC: a margin head with a class-sharded, sampled classifier (importing registers it)
from facemetric.losses.partial_fc import PartialFCLoss  # noqa: E402

__all__ += ["PartialFCLoss"]
