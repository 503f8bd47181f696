"""Optimizers by name.

``build_optimizer(name, params, lr, weight_decay, **options)`` looks ``name`` up in
:data:`OPTIMIZERS` and validates every option; any problem is a one-line
:class:`~facemetric.errors.ConfigError` of the form ``optimizer.<field>: ...``.

``params`` may be modules (``[model, loss]``): the builder then splits their parameters
itself with :func:`param_groups_no_decay`, so weight decay reaches only weight matrices and
convolution kernels (the rule is stated there). Pass tensors or param-group dicts to decay
exactly what you give.

Registered: ``sgd`` (momentum 0.9 by default, optional Nesterov), ``adam``, ``adamw``
(decoupled weight decay), ``adagrad``, ``rmsprop``. davidsandberg/facenet's RMSProp is TF's
``RMSPropOptimizer(decay=0.9, momentum=0.9, epsilon=1.0)``; the torch equivalents are
``alpha=0.9, momentum=0.9, eps=1.0`` (torch's defaults are kept here; TF adds ``eps`` inside
the square root, torch outside, so the two are close but not identical).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from facemetric.errors import ConfigError
from facemetric.registry import Registry

OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry("optimizer")

_NORM_TYPES: tuple[type[nn.Module], ...] = tuple(
    t
    for t in (
        nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
        nn.LayerNorm,
        nn.GroupNorm,
        nn.LocalResponseNorm,
        getattr(nn, "RMSNorm", None),
    )
    if t is not None
)


# ----------------------------------------------------------------------------- validation
def _number(field: str, value: Any, lo: float = 0.0, hi: float | None = None,
            hi_open: bool = False, lo_open: bool = False) -> float:
    """``value`` as a finite float in [lo, hi] (ends open when asked), else ConfigError."""
    lo_s = "(" if lo_open else "["
    hi_s = "inf)" if hi is None else (f"{hi:g})" if hi_open else f"{hi:g}]")
    expected = f"a number in {lo_s}{lo:g}, {hi_s}"
    if isinstance(value, bool):
        raise ConfigError(f"optimizer.{field}: expected {expected}, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"optimizer.{field}: expected {expected}, got {value!r}") from None
    bad = (
        not math.isfinite(x)
        or x < lo
        or (lo_open and x == lo)
        or (hi is not None and (x > hi or (hi_open and x == hi)))
    )
    if bad:
        raise ConfigError(f"optimizer.{field}: expected {expected}, got {value!r}")
    return x


def _flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"optimizer.{field}: expected true or false, got {value!r}")
    return value


def _betas(value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"optimizer.betas: expected two numbers in [0, 1), got {value!r}")
    return (
        _number("betas", value[0], 0.0, 1.0, hi_open=True),
        _number("betas", value[1], 0.0, 1.0, hi_open=True),
    )


# ----------------------------------------------------------------------------- optimizers
@OPTIMIZERS.register("sgd")
def _sgd(params: Any, lr: float, weight_decay: float, momentum: float = 0.9,
         nesterov: bool = False, dampening: float = 0.0) -> torch.optim.Optimizer:
    """SGD with (heavy-ball or Nesterov) momentum."""
    momentum = _number("momentum", momentum, 0.0, 1.0, hi_open=True)
    dampening = _number("dampening", dampening, 0.0, 1.0)
    if _flag("nesterov", nesterov) and (momentum <= 0 or dampening != 0):
        raise ConfigError(
            f"optimizer.nesterov: requires momentum > 0 and dampening = 0, "
            f"got momentum={momentum:g}, dampening={dampening:g}"
        )
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum,
                           nesterov=nesterov, dampening=dampening)


@OPTIMIZERS.register("adam")
def _adam(params: Any, lr: float, weight_decay: float, betas: Any = (0.9, 0.999),
          eps: float = 1e-8, amsgrad: bool = False) -> torch.optim.Optimizer:
    """Adam; ``weight_decay`` is L2 added to the gradient (use ``adamw`` for decoupled decay)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=_betas(betas),
                            eps=_number("eps", eps, 0.0, lo_open=True),
                            amsgrad=_flag("amsgrad", amsgrad))


@OPTIMIZERS.register("adamw")
def _adamw(params: Any, lr: float, weight_decay: float, betas: Any = (0.9, 0.999),
           eps: float = 1e-8, amsgrad: bool = False) -> torch.optim.Optimizer:
    """AdamW: decoupled weight decay ``p -= lr * weight_decay * p``."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=_betas(betas),
                             eps=_number("eps", eps, 0.0, lo_open=True),
                             amsgrad=_flag("amsgrad", amsgrad))


@OPTIMIZERS.register("adagrad")
def _adagrad(params: Any, lr: float, weight_decay: float, lr_decay: float = 0.0,
             initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> torch.optim.Optimizer:
    """Adagrad (facenet's ADAGRAD option)."""
    return torch.optim.Adagrad(
        params, lr=lr, weight_decay=weight_decay, lr_decay=_number("lr_decay", lr_decay),
        initial_accumulator_value=_number("initial_accumulator_value", initial_accumulator_value),
        eps=_number("eps", eps, 0.0, lo_open=True),
    )


@OPTIMIZERS.register("rmsprop")
def _rmsprop(params: Any, lr: float, weight_decay: float, alpha: float = 0.99,
             momentum: float = 0.0, eps: float = 1e-8, centered: bool = False
             ) -> torch.optim.Optimizer:
    """RMSProp; ``alpha`` is TF's ``decay`` (facenet: alpha=0.9, momentum=0.9, eps=1.0)."""
    return torch.optim.RMSprop(
        params, lr=lr, weight_decay=weight_decay, alpha=_number("alpha", alpha, 0.0, 1.0),
        momentum=_number("momentum", momentum, 0.0, 1.0, hi_open=True),
        eps=_number("eps", eps, 0.0, lo_open=True), centered=_flag("centered", centered),
    )


# ----------------------------------------------------------------------------- public API
def build_optimizer(
    name: str,
    params: nn.Module | Iterable[nn.Module] | Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    lr: float,
    weight_decay: float = 0.0,
    **options: Any,
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params``.

    ``params``: a module or modules (split into a decayed and a non-decayed group by
    :func:`param_groups_no_decay`; this is what training uses), or tensors / param-group
    dicts taken as given. ``lr`` and ``weight_decay`` are the defaults for groups that do not
    set their own. Unknown names/options or bad values -> ConfigError.
    """
    if str(name).lower() not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer.name: unknown optimizer {name!r}; expected one of: "
            f"{', '.join(OPTIMIZERS.names())}"
        )
    factory: Callable[..., torch.optim.Optimizer] = OPTIMIZERS.get(name)
    allowed = [p for p in inspect.signature(factory).parameters
               if p not in ("params", "lr", "weight_decay")]
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"optimizer.{key}: unknown option for {str(name).lower()!r}; expected one of: "
                f"lr, weight_decay, {', '.join(allowed)}"
            )
    lr = _number("lr", lr, lo_open=True)
    weight_decay = _number("weight_decay", weight_decay)
    if isinstance(params, nn.Module):
        params = [params]
    params = list(params)
    if params and all(isinstance(m, nn.Module) for m in params):
        params = param_groups_no_decay(params, weight_decay)
    elif any(isinstance(m, nn.Module) for m in params):
        raise TypeError("build_optimizer: params mixes modules with tensors/param groups")
    if not params:
        raise ConfigError("optimizer: there are no trainable parameters to optimize")
    for i, group in enumerate(params):
        if isinstance(group, dict):
            for key in ("lr", "weight_decay"):
                if key in group:
                    group[key] = _number(f"param_groups[{i}].{key}", group[key])
    try:
        return factory(params, lr=lr, weight_decay=weight_decay, **options)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        msg = " ".join(str(exc).split())
        raise ConfigError(f"optimizer.{str(name).lower()}: {msg}") from None


def decays(module: nn.Module, param_name: str, param: torch.Tensor) -> bool:
    """Whether ``param`` (called ``param_name`` directly inside ``module``) gets weight decay.

    The rule (insightface's ``arcface_torch`` and timm's: decay what multiplies the input):
    weight matrices and convolution kernels (``ndim >= 2``) are decayed, including the
    class-weight matrix of a classifier head (softmax, L2-softmax, center loss's softmax part,
    NormFace/SphereFace/CosFace/ArcFace weights). Not decayed: biases, every parameter of a
    normalization layer (BatchNorm, InstanceNorm, LayerNorm, GroupNorm, RMSNorm, and 1-D
    affine gains/shifts such as dlib's), and scalars such as L2-softmax's learnable ``alpha``
    or a head's learnable ``scale`` -- decay would only drag a gain, shift or scale towards
    0 and fight the loss. Center loss's centers are a buffer (updated by the paper's rule, not
    by the optimizer) and never reach the optimizer.
    """
    return not (isinstance(module, _NORM_TYPES) or param_name.endswith("bias") or param.ndim <= 1)


def param_groups_no_decay(
    module: nn.Module | Iterable[nn.Module], weight_decay: float
) -> list[dict[str, Any]]:
    """Split the trainable parameters of ``module`` (or several modules) into two groups.

    Weight decay stays on where :func:`decays` says so and is 0 elsewhere. Returns
    ``[{"params": decay, "weight_decay": weight_decay},
    {"params": no_decay, "weight_decay": 0.0}]`` without empty groups; a parameter shared by
    several modules appears once.
    """
    modules = [module] if isinstance(module, nn.Module) else list(module)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for top in modules:
        for mod in top.modules():
            for pname, p in mod.named_parameters(recurse=False):
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                (decay if decays(mod, pname, p) else no_decay).append(p)
    groups: list[dict[str, Any]] = []
    if decay:
        groups.append({"params": decay, "weight_decay": float(weight_decay)})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
