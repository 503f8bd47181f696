"""Partial FC (An, Deng, Guo, Feng, Zhu, Yang & Liu, "Killing Two Birds with One Stone:
Efficient and Robust Training of Face Recognition CNNs by Partial FC", CVPR 2022).

A margin head (ArcFace, CosFace, the combined margin or NormFace: the formulas of
:mod:`facemetric.losses.normalized_head` and the head modules, unchanged) whose classifier is
**sharded by class** across the ``N`` ranks of a process group and whose negative class centres
are **sampled**:

* rank ``r`` holds the rows ``[start_r, start_r + C_r)`` of ``W`` (``C_r = C // N``, plus one
  for the first ``C mod N`` ranks); ``state_dict()`` holds the *full* ``W`` (gathered; see
  below), so checkpoints do not depend on ``N``;
* every rank gathers the global batch ``x = cat_q x_q`` and ``y = cat_q y_q``
  (:func:`facemetric.distributed.all_gather_with_grad`);
* with ``sample_rate = rho < 1`` (training mode only) rank ``r`` keeps the classes of its shard
  that are labels of the global batch (the positives, always kept) plus uniformly drawn
  negatives up to ``max(1, int(rho C_r))`` centres (all positives when they are more);
* on its (sampled) shard it computes the head's logits ``z_ij = s cos theta_ij``, with
  ``s f(theta_{i y_i})`` in the target column of the rank that owns ``y_i`` (the head's
  :meth:`~facemetric.losses.normalized_head.NormalizedHead.target`: ArcFace's
  ``cos(theta + m)``, CosFace's ``cos theta - m``, ...);
* the softmax cross-entropy over all shards uses an all-reduced max and sum:
  ``M_i = max_r max_j z_ij``, ``S_i = sum_r sum_j exp(z_ij - M_i)``,
  ``L = 1/B sum_i (log S_i + M_i - z_{i y_i})`` with ``B`` the global batch size (the same
  value on every rank).

Gradients (checked against the full classifier with 2 gloo processes): the shard's weight gets
exactly ``dL/dW_shard`` (the cross-entropy's backward ``(softmax - onehot) / B`` is local to
the shard; no communication), and rank ``r``'s input embeddings get ``N dL/dx_r``, the
contract of :func:`~facemetric.distributed.all_gather_with_grad` for a loss computed on the
global batch, so that DDP's averaging of backbone gradients yields the one-process gradient.
The shard is not replicated: it must stay out of DDP's gradient averaging (hence
:attr:`PartialFCLoss.sharded`). At ``sample_rate = 1`` the loss and every gradient equal the
full head on the global batch; in one process without a process group it *is* the head
(same loss, same gradients: ``partial-fc`` with ``head: arcface`` equals ``arcface``).

Deviations from the paper's code (insightface ``partial_fc_v2``): centres are not re-sampled
per optimizer state (the gradient of an unsampled centre is zero, so momentum and weight decay
still move it, as in ``partial_fc_v2``); the learned scale is not supported (it would drift
apart on the ranks); the target angle comes from the vectors (:func:`unit_angle`), not
``acos``.

``state_dict()`` and ``load_state_dict()`` are **collective** in a process group (every rank
must call them): saving all-gathers the shards into the full ``[C, D]`` weight, loading takes
this rank's rows of a full weight (a shard of exactly this rank's size is also accepted).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from facemetric import distributed
from facemetric.errors import FacemetricError
from facemetric.losses.arcface import ArcFaceLoss
from facemetric.losses.base import ClassifierLoss, check_inputs
from facemetric.losses.combined_margin import CombinedMarginLoss
from facemetric.losses.cosface import CosFaceLoss
from facemetric.losses.normalized_head import NormalizedHead, unit_angle
from facemetric.losses.normface import NormFaceLoss
from facemetric.losses.registry import LOSSES

#: the heads Partial FC can shard (their target depends on one sample's target angle only)
HEADS: tuple[type[NormalizedHead], ...] = (ArcFaceLoss, CosFaceLoss, CombinedMarginLoss, NormFaceLoss)


def shard_range(num_classes: int, world: int, rank: int) -> tuple[int, int]:
    """``(start, count)`` of rank ``rank``'s classes: ``C // N`` each, one more for the first
    ``C mod N`` ranks (contiguous, in rank order)."""
    base, extra = divmod(int(num_classes), int(world))
    count = base + (1 if rank < extra else 0)
    start = rank * base + min(rank, extra)
    return start, count


def _group_up() -> bool:
    return distributed.is_distributed() and distributed.world_size() > 1


def _all_reduce_(tensor: Tensor, op: Any) -> Tensor:
    """In-place all-reduce (no autograd); no-op without a process group."""
    if _group_up():
        dist.all_reduce(tensor, op=op)
    return tensor


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``factor``."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.factor, None


class _ShardedSoftmaxCE(torch.autograd.Function):
    """Mean softmax cross-entropy over class shards (see the module docstring).

    ``logits [B, C_r]`` are this rank's columns; ``target [B]`` is the column of the label in
    this shard, or -1 where another rank owns the label. Forward all-reduces the row maxima
    (MAX), the sums of exponentials (SUM) and the target logits (SUM); backward is local:
    ``(softmax - onehot) / B`` on this shard's columns.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor) -> Tensor:  # type: ignore[override]
        batch = logits.shape[0]
        row_max = logits.detach().max(dim=1).values
        _all_reduce_(row_max, dist.ReduceOp.MAX)
        probs = (logits.detach() - row_max[:, None]).exp_()
        total = probs.sum(dim=1)
        _all_reduce_(total, dist.ReduceOp.SUM)
        probs.div_(total[:, None])
        local = target >= 0
        rows = local.nonzero().squeeze(1)
        z_target = logits.new_zeros(batch)
        z_target[rows] = logits.detach()[rows, target[rows]]
        _all_reduce_(z_target, dist.ReduceOp.SUM)
        losses = total.log() + row_max - z_target
        ctx.save_for_backward(probs, rows, target)
        ctx.batch = batch
        return losses.mean()

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        probs, rows, target = ctx.saved_tensors
        grad = probs.clone()
        grad[rows, target[rows]] -= 1.0
        grad.mul_(grad_out / ctx.batch)
        return grad, None


@LOSSES.register("partial-fc", "partialfc", "partial_fc")
class PartialFCLoss(ClassifierLoss):
    """Partial FC: a margin head, its classifier sharded by class over ranks, negatives sampled.

    ``head``: ``arcface`` (default), ``cosface``, ``combined-margin`` or ``normface`` (or an
    alias); ``head_options`` (``margin``, ``scale``, ``easy_margin``, ``m1``/``m2``/``m3``,
    ``p``) go to that head. ``sample_rate`` in ``(0, 1]``: the fraction of each shard's
    centres used per training step (positives always kept).
    """

    normalizes_features = True
    label_dependent_logits = True
    #: the classifier rows are sharded across ranks: keep them out of DDP's averaging
    sharded = True
    #: the loss gathers the global batch itself (callers pass the local batch)
    gathers_global_batch = True

    def __init__(
        self, embedding_dim: int, num_classes: int, head: str = "arcface", sample_rate: float = 1.0,
        **head_options: Any,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        head_cls = LOSSES.get(head)
        if head_cls not in HEADS:
            names = "arcface, cosface, combined-margin, normface"
            raise FacemetricError(f"head: partial-fc shards {names}; got {head!r}")
        if head_options.get("learn_scale"):
            raise FacemetricError("learn_scale: not supported by partial-fc (the ranks' scales would drift apart)")
        if "sub_centers" in head_options and int(head_options["sub_centers"]) != 1:
            raise FacemetricError("sub_centers: partial-fc supports one centre per class")
        rate = float(sample_rate)
        if not 0.0 < rate <= 1.0 or math.isnan(rate):
            raise FacemetricError(f"sample_rate: expected a number in (0, 1], got {sample_rate}")
        self.sample_rate = rate
        self.head_name = str(head)
        options = {k: v for k, v in head_options.items() if k not in ("scale", "p", "learn_scale", "sub_centers")}
        # the head supplies the target function and the scale (its automatic scale for C
        # classes); it is built with a 3-class placeholder weight, so that C x D is never
        # allocated twice, and kept outside the module tree: the state holds ``weight`` and
        # ``scale`` under the same names as the head's own (a head's checkpoint loads here)
        head_module = head_cls(embedding_dim, 3, scale=1.0, **options)
        del head_module.weight
        head_module.num_classes = self.num_classes
        head_module._init_scale(head_options.get("scale"), False, float(head_options.get("p", 0.9)))
        object.__setattr__(self, "head", head_module)
        self.register_buffer("scale", head_module.scale.detach().clone())

        self.world = distributed.world_size()
        self.rank = distributed.rank()
        if self.num_classes < self.world:
            raise FacemetricError(
                f"num_classes: partial-fc needs at least one class per rank ({self.num_classes} < {self.world} ranks)"
            )
        self.class_start, self.num_local = shard_range(self.num_classes, self.world, self.rank)
        self.weight = nn.Parameter(torch.empty(self.num_local, self.embedding_dim))
        nn.init.normal_(self.weight, std=0.01)
        #: the shard columns used by the latest training forward (None: the whole shard)
        self.last_sampled: Tensor | None = None

    # -- shards --------------------------------------------------------------------------------
    def num_sample(self) -> int:
        """Centres drawn from this rank's shard per training step (before adding positives)."""
        return max(1, int(self.sample_rate * self.num_local))

    def _sample(self, target: Tensor) -> tuple[Tensor | None, Tensor]:
        """``(index of the kept shard rows (sorted), target remapped to them)``."""
        if not self.training or self.sample_rate >= 1.0:
            return None, target
        positive = torch.unique(target[target >= 0])
        count = self.num_sample()
        if positive.numel() >= count:
            index = positive
        else:
            score = torch.rand(self.num_local, device=self.weight.device)
            score[positive] = 2.0
            index = torch.topk(score, count).indices.sort().values
        remapped = torch.where(target >= 0, torch.searchsorted(index, target.clamp_min(0)), target)
        return index, remapped

    def _cosines(self, x: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x_hat = F.normalize(x, dim=1)
        w_hat = F.normalize(w.to(x.dtype), dim=1)
        return x_hat, w_hat, x_hat @ w_hat.t()

    # -- loss ----------------------------------------------------------------------------------
    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_inputs(embeddings, labels, dim=self.embedding_dim, num_classes=self.num_classes)
        dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            x = distributed.all_gather_with_grad(embeddings.to(dtype))
            y = distributed.all_gather_no_grad(labels)
            norms = torch.linalg.vector_norm(x.detach(), dim=1)
            if self.world > 1:  # rank r's embeddings get N dL/dx_r (module docstring)
                x = _ScaleGrad.apply(x, float(self.world))
            local = (y >= self.class_start) & (y < self.class_start + self.num_local)
            target = torch.where(local, y - self.class_start, torch.full_like(y, -1))
            index, target = self._sample(target)
            self.last_sampled = index
            weight = self.weight if index is None else self.weight[index]
            x_hat, w_hat, cos = self._cosines(x, weight)
            rows = local.nonzero().squeeze(1)
            cols = target[rows]
            theta = unit_angle(x_hat[rows], w_hat[cols]) if self.head.needs_angle else None
            f_target = self.head.target(theta, cos[rows, cols], norms[rows]).to(cos.dtype)
            logits = self.scale.to(cos.dtype) * cos.index_put((rows, cols), f_target)
            loss = _ShardedSoftmaxCE.apply(logits, target)
            self.stats = self._stats(cos.detach(), target, norms, theta, y.shape[0], weight.shape[0])
        return loss

    def _stats(self, cos: Tensor, target: Tensor, norms: Tensor, theta: Tensor | None,
               batch: int, used: int) -> dict[str, float]:
        """Global top-1 accuracy of the margin-free cosines (over the classes used), mean
        feature norm, mean target angle and the number of centres used (all ranks)."""
        with torch.no_grad():
            best, arg = cos.max(dim=1)
            overall = _all_reduce_(best.clone(), dist.ReduceOp.MAX)
            hits = ((target >= 0) & (arg == target) & (best >= overall)).to(torch.float64)
            summary = torch.stack([
                hits.sum(),
                torch.rad2deg(theta).sum().double() if theta is not None else hits.new_zeros(()),
                hits.new_tensor(float(used)),
            ])
            _all_reduce_(summary, dist.ReduceOp.SUM)
        stats = {
            "accuracy": float(summary[0]) / batch,
            "feature_norm": float(norms.mean()),
            "scale": float(self.scale),
            "sampled_classes": float(summary[2]),
        }
        if theta is not None:
            stats["target_angle_deg"] = float(summary[1]) / batch
        return stats

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """Margin-free logits ``s cos theta`` of this rank's shard columns ``[B, C_r]`` (the
        full ``[B, C]`` in one process) for the local ``embeddings``; ``labels`` are ignored."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            x = embeddings.to(torch.float64 if embeddings.dtype == torch.float64 else torch.float32)
            return self.scale.to(x.dtype) * self._cosines(x, self.weight)[2]

    @torch.no_grad()
    def predict(self, embeddings: Tensor) -> Tensor:
        """Global class ids ``[B]`` of the local ``embeddings``: the nearest centre over all
        shards (collective: the batch is gathered, every rank scores it on its shard)."""
        x = distributed.all_gather_no_grad(embeddings.float())
        owner = distributed.all_gather_no_grad(
            torch.full((embeddings.shape[0],), self.rank, dtype=torch.long, device=embeddings.device)
        )
        best, arg = self._cosines(x, self.weight)[2].max(dim=1)
        overall = _all_reduce_(best.clone(), dist.ReduceOp.MAX)
        # the lowest rank holding the overall best wins ties
        claim = torch.where(best >= overall, torch.full_like(arg, self.rank), torch.full_like(arg, self.world))
        _all_reduce_(claim, dist.ReduceOp.MIN)
        ids = torch.where(claim == self.rank, arg + self.class_start, torch.zeros_like(arg))
        return _all_reduce_(ids, dist.ReduceOp.SUM)[owner == self.rank]

    @torch.no_grad()
    def init_from_class_means(self, means: Tensor) -> None:
        """This shard's centres start at the directions of its classes' means ``[C, D]``."""
        part = means[self.class_start : self.class_start + self.num_local]
        self.weight.copy_(F.normalize(part.to(self.weight.dtype), dim=1))

    # -- world-size independent state ----------------------------------------------------------
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if _group_up():  # collective: the full [C, D] weight on every rank
            destination[prefix + "weight"] = distributed.all_gather_no_grad(self.weight.detach())

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        key = prefix + "weight"
        value = state_dict.get(key)
        if isinstance(value, Tensor) and value.ndim == 2 and value.shape[0] != self.num_local:
            if value.shape[0] != self.num_classes:
                raise FacemetricError(
                    f"{key}: expected the full classifier [{self.num_classes}, {self.embedding_dim}] "
                    f"or this rank's shard [{self.num_local}, {self.embedding_dim}], got {tuple(value.shape)}"
                )
            state_dict[key] = value[self.class_start : self.class_start + self.num_local]
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return (f"head={self.head_name}, classes={self.num_classes}, shard=[{self.class_start}, "
                f"{self.class_start + self.num_local}), sample_rate={self.sample_rate}")


__all__ = ["HEADS", "PartialFCLoss", "shard_range"]
