"""Shared machinery of the normalised-softmax heads (NormFace and its margin successors).

Every head here classifies the L2-normalised feature with L2-normalised class weights:

``cos theta_j = <x/||x||, W_j/||W_j||>``,
``logit_j = s * cos theta_j`` for ``j != y``  and  ``logit_y = s * f(theta_y)``,
``L = -1/m sum_i log softmax(logits_i)_{y_i}``

and the heads differ only in the target function ``f`` (the margin) and in what they take from
the feature norm ``||x||`` (SphereFace multiplies by it, MagFace and AdaFace set the margin from
it). ``logits(x)`` without labels is the margin-free ``s * cos theta``.

Scale: a number (fixed), ``learn_scale=True`` (a trainable scalar initialised to it), or
``None``/``"auto"``: the L2-softmax lower bound (Ranjan et al. 2017, eq. 7) applied to the
margin-reduced target logit. L2-softmax gives ``alpha_low = log(p (C-2) / (1-p))`` as the norm
at which a feature lying on its class direction reaches probability ``p``; with a margin that
feature's target logit is ``s f(0)`` instead of ``s``, so ``s_auto = alpha_low / f(0)``
(``f(0) = cos m`` for ArcFace, ``1 - m`` for CosFace; ``p = 0.9`` by default).

Numerics (the anchors' trackers report NaN and wrong gradients here):

* computed in at least float32 with autocast disabled, whatever the input dtype, so float16 and
  bfloat16 training never overflow ``s * cos`` or ``||x||^2``;
* the target angle comes from the vectors, not from ``acos(cos)``: for unit vectors u, v,
  ``theta = 2 atan2(||u - v||, ||u + v||)`` (Kahan) is accurate to working precision at every
  angle, including theta near 0 and near pi, where ``acos`` loses half the digits and its
  derivative ``-1/sqrt(1 - c^2)`` explodes (clamping it silently zeroes the gradient instead);
* only the target column needs the angle (``O(B D)``), the other columns use ``cos`` directly.

Sub-centers (``sub_centers = K > 1``, Sub-center ArcFace): ``W`` holds ``K`` rows per class
(row ``j*K + k``), and ``cos theta_j = max_k cos theta_{j,k}``; the target angle is the one to
the class's closest sub-center.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facemetric.errors import FacemetricError
from facemetric.losses.base import ClassifierLoss, check_inputs
from facemetric.losses.l2_softmax import alpha_lower_bound


def unit_angle(u: Tensor, v: Tensor) -> Tensor:
    """Angle between unit rows ``u[i]`` and ``v[i]``: ``2 atan2(||u - v||, ||u + v||)`` in [0, pi]."""
    return 2.0 * torch.atan2(
        torch.linalg.vector_norm(u - v, dim=1), torch.linalg.vector_norm(u + v, dim=1)
    )


def arcface_target(theta: Tensor, margin: Tensor | float, easy_margin: bool = False) -> Tensor:
    """ArcFace's target ``cos(theta + m)`` with the paper's rule where ``theta + m > pi``.

    ``cos(theta + m)`` is not monotonic beyond ``theta = pi - m``; there ArcFace (and insightface)
    use ``cos theta - m sin m`` (a CosFace-like penalty). With ``easy_margin`` the margin applies
    only where ``cos theta > 0`` (``theta < pi/2``) and the target is ``cos theta`` elsewhere.
    ``margin`` may be a per-sample tensor (MagFace).
    """
    margin = torch.as_tensor(margin, dtype=theta.dtype, device=theta.device)
    with_margin = torch.cos(theta + margin)
    if easy_margin:
        return torch.where(theta < math.pi / 2, with_margin, torch.cos(theta))
    return torch.where(
        theta <= math.pi - margin, with_margin, torch.cos(theta) - margin * torch.sin(margin)
    )


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class NormalizedHead(ClassifierLoss):
    """Base class: normalised features and class weights, scale ``s``, a target function.

    Subclasses implement :meth:`target` (the target logit in cosine units) and may override
    :meth:`margin_at_zero` (``1 - f(0)``, used by the automatic scale) and :meth:`logit_scale`.
    """

    normalizes_features = True
    label_dependent_logits = True

    def __init__(self, embedding_dim: int, num_classes: int, sub_centers: int = 1) -> None:
        super().__init__(embedding_dim, num_classes)
        if int(sub_centers) < 1:
            raise FacemetricError(f"sub_centers: expected a positive integer, got {sub_centers}")
        self.sub_centers = int(sub_centers)
        # insightface initialises the class weights N(0, 0.01); only their direction matters
        self.weight = nn.Parameter(torch.empty(self.num_classes * self.sub_centers, self.embedding_dim))
        nn.init.normal_(self.weight, std=0.01)

    # -- scale -------------------------------------------------------------------------------
    def margin_at_zero(self) -> float:
        """``1 - f(0)``: how much the margin lowers the target cosine of a perfect feature."""
        return 0.0

    def auto_scale(self, p: float = 0.9) -> float:
        """``log(p (C-2)/(1-p)) / f(0)``: the L2-softmax bound for the margin-reduced target."""
        reach = 1.0 - self.margin_at_zero()
        if reach <= 0:
            raise FacemetricError(
                f"scale: cannot choose it automatically, the margin leaves f(0) = {reach:.3g} <= 0; give scale"
            )
        return alpha_lower_bound(self.num_classes, p) / reach

    def _init_scale(self, scale: float | str | None, learn_scale: bool, p: float) -> None:
        if scale is None or scale == "auto":
            value = self.auto_scale(p)
        elif isinstance(scale, str):
            raise FacemetricError(f"scale: expected a positive number or 'auto', got {scale!r}")
        else:
            value = float(scale)
        if not value > 0:
            raise FacemetricError(f"scale: expected a positive number, got {value}")
        init = torch.tensor(value, dtype=torch.float32)
        if learn_scale:
            self.scale = nn.Parameter(init)
        else:
            self.register_buffer("scale", init)
        self.learn_scale = bool(learn_scale)

    def logit_scale(self, norms: Tensor) -> Tensor:
        """The factor applied to every cosine: ``s`` (SphereFace: ``||x||``)."""
        return self.scale.to(norms.dtype)

    # -- margin ------------------------------------------------------------------------------
    def target(self, theta: Tensor | None, cos_y: Tensor, norms: Tensor) -> Tensor:
        """Target logit in cosine units ``f(theta_y)`` for each sample ``[B]``."""
        raise NotImplementedError

    #: whether :meth:`target` needs ``theta`` (CosFace and NormFace do not)
    needs_angle: bool = True

    # -- forward -----------------------------------------------------------------------------
    def _cosines(self, embeddings: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x_hat, w_hat, cos [B, C], index of the closest sub-center [B, C], ||x|| [B])``."""
        x = embeddings.to(_compute_dtype(embeddings.dtype))
        norms = torch.linalg.vector_norm(x, dim=1)
        x_hat = F.normalize(x, dim=1)
        w_hat = F.normalize(self.weight.to(x.dtype), dim=1)
        cos = x_hat @ w_hat.t()
        if self.sub_centers > 1:
            cos, sub = cos.view(-1, self.num_classes, self.sub_centers).max(dim=2)
        else:
            sub = torch.zeros_like(cos, dtype=torch.long)
        return x_hat, w_hat, cos, sub, norms

    def _margin_logits(self, embeddings: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(logits with margin, cos, theta_y)``; without labels, margin-free logits."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            x_hat, w_hat, cos, sub, norms = self._cosines(embeddings)
            scale = self.logit_scale(norms)
            if scale.ndim == 1:
                scale = scale[:, None]
            if labels is None:
                return scale * cos, cos, None
            index = labels[:, None]
            cos_y = cos.gather(1, index).squeeze(1)
            theta = None
            if self.needs_angle:
                rows = labels * self.sub_centers + sub.gather(1, index).squeeze(1)
                theta = unit_angle(x_hat, w_hat[rows])
            target = self.target(theta, cos_y, norms).to(cos.dtype)
            logits = scale * cos.scatter(1, index, target[:, None])
            return logits, cos, theta

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        return self._margin_logits(embeddings, labels)[0]

    def regularizer(self, norms: Tensor) -> Tensor | None:
        """An extra term added to the loss (MagFace's ``lambda_g g(a)``); none by default."""
        return None

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_inputs(embeddings, labels, dim=self.embedding_dim, num_classes=self.num_classes)
        logits, cos, theta = self._margin_logits(embeddings, labels)
        loss = F.cross_entropy(logits, labels)
        norms = torch.linalg.vector_norm(embeddings.to(_compute_dtype(embeddings.dtype)), dim=1)
        extra = self.regularizer(norms)
        if extra is not None:
            loss = loss + extra
        with torch.no_grad():
            self.stats = {
                "accuracy": float((cos.argmax(1) == labels).float().mean()),
                "feature_norm": float(norms.mean()),
            }
            if isinstance(getattr(self, "scale", None), Tensor):
                self.stats["scale"] = float(self.scale.detach())
            if theta is not None:
                self.stats["target_angle_deg"] = float(torch.rad2deg(theta).mean())
            if extra is not None:
                self.stats["regularizer"] = float(extra.detach())
        return loss

    @torch.no_grad()
    def init_from_class_means(self, means: Tensor) -> None:
        """Every (sub-)center of class j starts at the direction of ``m_j``."""
        rows = F.normalize(means.to(self.weight.dtype), dim=1).repeat_interleave(self.sub_centers, 0)
        self.weight.copy_(rows)

    @torch.no_grad()
    def predict(self, embeddings: Tensor) -> Tensor:
        return self._margin_logits(embeddings, None)[1].argmax(1)
