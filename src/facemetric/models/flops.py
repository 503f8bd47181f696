"""Parameter and FLOP counts of the backbones.

Convention: **FLOPs = 2 x MACs** (one multiply-accumulate = one multiply + one add = 2 FLOPs),
counted by :class:`torch.utils.flop_counter.FlopCounterMode` for one image in eval mode. Only
the matrix-multiply-like operators are counted (convolutions, linear layers / matmuls); batch
norm, activations, residual additions, pooling and biases are not (they are a small fraction).

insightface's ``arcface_torch/flops.py`` prints ptflops' *MAC* count labelled "GFLOPs" (e.g.
IResNet-50 ~ 6.3 "GFLOPs" there is ~ 12.6 GFLOPs here): divide :func:`count_flops` by 2 to
compare with those tables.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from facemetric.errors import ConfigError
from facemetric.models.common import hw
from facemetric.models.registry import build_model


def count_flops(model: nn.Module, input_size: int | tuple[int, int], in_channels: int = 3) -> int:
    """FLOPs (= 2 x multiply-accumulates) of one forward pass of a single image.

    The model is run in eval mode without gradients and put back in its previous mode.
    """
    h, w = hw(input_size)
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, int(in_channels), h, w, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    # FlopCounterMode already reports 2 * MACs for convolutions and matrix products.
    return int(counter.get_total_flops())


def model_summary(name: str, **options: Any) -> dict[str, Any]:
    """``{"name", "parameters", "flops", "input_size", "embedding_dim"}`` of a registered backbone.

    ``parameters`` counts every parameter (also ones with ``requires_grad=False``, such as the
    fixed weight of IResNet's output BatchNorm1d); ``flops`` follows :func:`count_flops`.
    """
    model = build_model(name, **options)
    size = getattr(model, "input_size", options.get("input_size"))
    if size is None:
        raise ConfigError(f"model {name!r}: no input_size; pass input_size=(height, width)")
    h, w = hw(size)
    in_channels = int(getattr(model, "in_channels", options.get("in_channels", 3)))
    return {
        "name": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "flops": count_flops(model, (h, w), in_channels),
        "input_size": (h, w),
        "embedding_dim": int(getattr(model, "embedding_dim", options.get("embedding_dim", 0))),
    }
