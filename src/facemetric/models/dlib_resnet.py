"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

The network of dlib's ``dnn_face_recognition_ex.cpp`` (``anet_type``), as serialised in the
model file (read by :mod:`facemetric.models.dlib_format`; the layer list below is what the
file holds, input first):

* input: a 150x150 RGB chip, ``(pixel - mean[c]) / 256`` with the per-channel means
  ``(122.782, 117.001, 104.298)`` stored in the file (dlib's ``input_rgb_image_sized<150>``);
* stem: convolution 7x7, stride 2, **no padding**, 32 filters, with bias -> affine -> ReLU ->
  max pool 3x3, stride 2, no padding (150 -> 72 -> 35);
* 14 residual blocks in 5 stages of (width, blocks): (32, 3), (64, 4), (128, 3), (256, 3),
  (256, 1). A block is ``relu(shortcut + affine(conv3x3(relu(affine(conv3x3(x))))))``
  (convolutions with bias). The first block of stages 2-5 downsamples: its first convolution
  has stride 2 and no padding, and its shortcut is ``avg_pool 2x2, stride 2`` of ``x``
  (dlib's ``residual_down``); the other blocks use ``x`` itself (stride 1, padding 1);
* average over all positions -> fully connected 256 -> 128 **without bias**: the descriptor.

29 convolutions ("ResNet with 29 conv layers"), 5,614,592 parameters (all the values the file
holds); each "affine" is a batch norm frozen into a per-channel scale and shift
(:class:`Affine`).

dlib's conventions that differ from the usual PyTorch ResNet, all reproduced here:

* padding: dlib's default is ``kernel // 2`` for stride 1 but **0** for stride != 1
  (``con_``, ``max_pool_``, ``avg_pool_``), so downsampling layers floor
  (``1 + (n - k) // stride``) without padding;
* the residual sum (``add_prev``) of tensors of different shapes is taken over the
  *largest* shape, each operand zero-padded at the end of every dimension
  (:func:`add_zero_padded`): the extra channels of a widening block get the block's output
  only, and where the stride-2 convolution and the 2x2 average pool disagree on the spatial
  size (8 -> 3 vs 4 and 4 -> 1 vs 2 at 150x150) the bottom/right cells get the pooled shortcut
  only;
* the descriptor is the raw output of the last layer: dlib does not L2-normalise it (its
  norm is about 1 only because of the training loss), and faces match when the Euclidean
  distance between descriptors is below 0.6.

:func:`load_dlib_resnet` builds the module from the file; :func:`chips_to_tensor` turns uint8
RGB chips into the network input exactly as dlib does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facemetric.errors import ConfigError, FacemetricError
from facemetric.models.common import check_common, hw
from facemetric.models.dlib_format import read_dlib_net
from facemetric.models.registry import MODELS

#: Per-channel means (R, G, B) of dlib's ``input_rgb_image`` layers.
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
#: dlib's input layers divide by 256 after subtracting the mean.
INPUT_SCALE = 256.0
#: (width, blocks, stride of the first block) of dlib_face_recognition_resnet_model_v1.
V1_STAGES: tuple[tuple[int, int, int], ...] = (
    (32, 3, 1), (64, 4, 2), (128, 3, 2), (256, 3, 2), (256, 1, 2),
)
V1_STEM_WIDTH = 32


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return 1 + (n + 2 * padding - kernel) // stride


def add_zero_padded(a: Tensor, b: Tensor) -> Tensor:
    """``a + b`` over the largest shape of the two, each zero-padded at the end of every
    dimension (dlib's ``add_prev`` / ``tt::add`` of tensors of different dimensions)."""
    if a.shape == b.shape:
        return a + b
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"add_zero_padded: batch sizes differ ({a.shape[0]} vs {b.shape[0]})")
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: Tensor) -> Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class Affine(nn.Module):
    """Per-channel ``x * gamma + beta`` (dlib's ``affine`` layer: a frozen batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


class DlibResidual(nn.Module):
    """dlib's ``ares`` (``stride=1``) / ``ares_down`` (``stride=2``) block (see the module
    docstring): ``relu(shortcut(x) (+) affine2(conv2(relu(affine1(conv1(x))))))``."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"dlib residual block: stride must be 1 or 2, got {stride}")
        if stride == 1 and in_channels != width:
            raise ConfigError(
                f"dlib residual block: a stride-1 block keeps the width ({in_channels} -> {width})"
            )
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1 if stride == 1 else 0)
        self.affine1 = Affine(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1)
        self.affine2 = Affine(width)

    def forward(self, x: Tensor) -> Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.stride != 1 else x
        return F.relu(add_zero_padded(y, shortcut))

    def output_size(self, n: int) -> int:
        if self.stride == 1:
            return n
        return max(_conv_out(n, 3, 2, 0), _conv_out(n, 2, 2, 0))


class DlibResNet(nn.Module):
    """dlib's face recognition ResNet: normalised RGB ``[B, 3, H, W]`` -> raw descriptors
    ``[B, embedding_dim]`` (see the module docstring).

    The input is ``(rgb - mean_rgb) / 256`` (:func:`chips_to_tensor`); in a model card that is
    ``normalize="mean_std"`` with ``mean = mean_rgb / 255`` and ``std = 256 / 255``.
    ``stages``: (width, blocks, first stride) per stage; the defaults are the v1 model's.
    """

    def __init__(
        self,
        embedding_dim: int = 128,
        in_channels: int = 3,
        input_size: int | tuple[int, int] = (150, 150),
        stem_width: int = V1_STEM_WIDTH,
        stages: Sequence[Sequence[int]] = V1_STAGES,
        mean_rgb: Sequence[float] = DLIB_MEAN_RGB,
    ) -> None:
        super().__init__()
        check_common(embedding_dim, in_channels)
        self.embedding_dim = int(embedding_dim)
        self.in_channels = int(in_channels)
        self.input_size = hw(input_size)
        self.mean_rgb = tuple(float(m) for m in mean_rgb)
        try:
            self.stages_spec = tuple((int(w), int(n), int(s)) for w, n, s in stages)
        except (TypeError, ValueError):
            raise ConfigError(
                f"model.stages: expected [width, blocks, stride] triples, got {stages!r}"
            ) from None
        if not self.stages_spec or any(w < 1 or n < 1 for w, n, _ in self.stages_spec):
            raise ConfigError(f"model.stages: expected positive widths and block counts, got {stages!r}")
        self.conv1 = nn.Conv2d(self.in_channels, int(stem_width), 7, 2, 0)
        self.affine1 = Affine(int(stem_width))
        prev = int(stem_width)
        stage_modules = []
        for width, blocks, stride in self.stages_spec:
            mods = [DlibResidual(prev, width, stride)]
            mods += [DlibResidual(width, width, 1) for _ in range(blocks - 1)]
            stage_modules.append(nn.Sequential(*mods))
            prev = width
        self.stages = nn.Sequential(*stage_modules)
        self.fc = nn.Linear(prev, self.embedding_dim, bias=False)
        self.feature_size = self._feature_size(self.input_size)

    def _feature_size(self, size: tuple[int, int]) -> tuple[int, int]:
        out = []
        for n in size:
            n = _conv_out(n, 7, 2, 0) if n >= 7 else 0
            n = _conv_out(n, 3, 2, 0) if n >= 3 else 0
            for stage in self.stages:
                for block in stage:
                    if block.stride != 1:
                        n = block.output_size(n) if n >= 3 else 0
            if n < 1:
                raise ConfigError(
                    f"model.input_size: {list(size)} is too small for dlib-resnet "
                    "(at least 3 positions are needed before every stride-2 block)"
                )
            out.append(n)
        return out[0], out[1]

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.affine1(self.conv1(x))), 3, 2)
        x = self.stages(x)
        return self.fc(x.mean(dim=(2, 3)))


@MODELS.register("dlib-resnet-29")
def dlib_resnet29(
    embedding_dim: int = 128,
    in_channels: int = 3,
    input_size: int | tuple[int, int] = (150, 150),
) -> DlibResNet:
    """dlib's face recognition ResNet (29 convolutions, 128-D, 150x150); random weights here,
    the trained ones via ``facemetric.load_model("dlib-resnet-v1")``."""
    return DlibResNet(embedding_dim, in_channels, input_size)


# ------------------------------------------------------------------------------ inputs
def chips_to_tensor(
    chips: np.ndarray | Sequence[np.ndarray], mean_rgb: Sequence[float] = DLIB_MEAN_RGB
) -> Tensor:
    """uint8 RGB chips ``[H, W, 3]`` or ``[B, H, W, 3]`` -> float32 ``[B, 3, H, W]`` computed as
    dlib's input layer does: ``(float32(pixel) - float32(mean)) / 256``."""
    arr = np.asarray(chips if isinstance(chips, np.ndarray) else np.stack(chips))
    if arr.ndim == 3:
        arr = arr[None]
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
        raise FacemetricError(
            f"chips: expected uint8 RGB [H, W, 3] or [B, H, W, 3], got {arr.dtype} {arr.shape}"
        )
    mean = np.asarray(mean_rgb, dtype=np.float32).reshape(1, 1, 1, 3)
    x = (arr.astype(np.float32) - mean) / np.float32(INPUT_SCALE)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


# ------------------------------------------------------------------------------ loading
class _Layers:
    """A cursor over a :class:`~facemetric.models.dlib_format.DlibNet`'s layers that checks
    each layer against what the ResNet definition expects."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.i = 0

    def fail(self, problem: str, index: int | None = None) -> FacemetricError:
        i = self.i if index is None else index
        if i < len(self.net.layers):
            layer = self.net.layers[i]
            where = f"layer {i} ({layer.version or layer.kind}) at byte {layer.offset}"
        else:
            where = f"after layer {i - 1}"
        return FacemetricError(f"{self.net.source}: {where}: {problem}")

    def peek(self) -> str | None:
        return self.net.layers[self.i].kind if self.i < len(self.net.layers) else None

    def take(self, kind: str | tuple[str, ...], **expect: Any) -> Any:
        kinds = (kind,) if isinstance(kind, str) else kind
        if self.i >= len(self.net.layers):
            raise self.fail(f"expected a {'/'.join(kinds)} layer, but the network ends here")
        layer = self.net.layers[self.i]
        if layer.kind not in kinds:
            raise self.fail(f"expected a {'/'.join(kinds)} layer for a dlib ResNet, got {layer.kind!r}")
        for key, value in expect.items():
            if layer.options.get(key) != value:
                raise self.fail(
                    f"expected {key}={value!r} for a dlib ResNet, got {layer.options.get(key)!r}"
                )
        self.i += 1
        return layer


def _conv(cur: _Layers, in_channels: int, kernel: int, stride: int, padding: int,
          width: int | None = None) -> tuple[int, dict[str, np.ndarray]]:
    index = cur.i
    layer = cur.take("con", nr=kernel, nc=kernel, stride_y=stride, stride_x=stride,
                     padding_y=padding, padding_x=padding)
    weight = layer.weights["weight"]
    if weight.shape[1] != in_channels or (width is not None and weight.shape[0] != width):
        raise cur.fail(f"filters {list(weight.shape)} do not fit {in_channels} input channels"
                       + (f" and {width} outputs" if width is not None else ""), index)
    bias = layer.weights.get("bias")
    if bias is None:
        bias = np.zeros(weight.shape[0], dtype=np.float32)  # dlib: use_bias=false
    return weight.shape[0], {"weight": weight, "bias": bias}


def _affine(cur: _Layers, channels: int) -> dict[str, np.ndarray]:
    index = cur.i
    layer = cur.take(("affine", "bn"))
    if layer.options.get("mode") != "conv":
        raise cur.fail(f"expected a per-channel (conv mode) affine layer, got mode "
                       f"{layer.options.get('mode')!r}", index)
    if layer.kind == "affine" and layer.options.get("disabled"):
        # fused into the convolution before it by dlib's fuse_convolutions: the identity
        return {"gamma": np.ones(channels, np.float32), "beta": np.zeros(channels, np.float32)}
    gamma = layer.weights["gamma"].reshape(-1)
    beta = layer.weights["beta"].reshape(-1)
    if gamma.size != channels:
        raise cur.fail(f"gamma has {gamma.size} values for {channels} channels", index)
    if layer.kind == "bn":  # test-time batch norm, folded as dlib's affine_(bn_) does
        scale = gamma / np.sqrt(layer.weights["running_var"].reshape(-1) + layer.options["eps"])
        beta = beta - scale * layer.weights["running_mean"].reshape(-1)
        gamma = scale
    return {"gamma": gamma.astype(np.float32), "beta": beta.astype(np.float32)}


def _read_resnet(net: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Match ``net`` against dlib's ResNet definition: ``(DlibResNet options, state dict)``."""
    cur = _Layers(net)
    state: dict[str, np.ndarray] = {}

    def put(prefix: str, tensors: dict[str, np.ndarray]) -> None:
        state.update({f"{prefix}.{k}": v for k, v in tensors.items()})

    inp = net.input
    # stem: con 7x7/2 (no padding), affine, relu, max_pool 3x3/2 (no padding)
    stem_width, conv = _conv(cur, 3, 7, 2, 0)
    put("conv1", conv)
    put("affine1", _affine(cur, stem_width))
    cur.take("relu")
    cur.take("max_pool", nr=3, nc=3, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
    # residual blocks: tag1 con affine relu con affine [tag2 skip1 avg_pool] add_prev relu
    blocks: list[tuple[int, int, dict[str, dict[str, np.ndarray]]]] = []
    channels = stem_width
    while cur.peek() == "tag_or_skip":
        cur.take("tag_or_skip")
        index = cur.i
        layer = net.layers[index] if index < len(net.layers) else None
        stride = int(layer.options.get("stride_y", 0)) if layer is not None and layer.kind == "con" else 1
        if stride not in (1, 2):
            raise cur.fail(f"expected a residual block convolution of stride 1 or 2, got {stride}", index)
        parts: dict[str, dict[str, np.ndarray]] = {}
        width, parts["conv1"] = _conv(cur, channels, 3, stride, 1 if stride == 1 else 0)
        parts["affine1"] = _affine(cur, width)
        cur.take("relu")
        _, parts["conv2"] = _conv(cur, width, 3, 1, 1, width)
        parts["affine2"] = _affine(cur, width)
        if stride == 1:
            if width != channels:
                raise cur.fail(f"a stride-1 block must keep the width ({channels} -> {width})", index)
        else:
            if width < channels:
                raise cur.fail(f"a downsampling block must not narrow ({channels} -> {width})", index)
            cur.take("tag_or_skip")
            cur.take("tag_or_skip")
            cur.take("avg_pool", nr=2, nc=2, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
        cur.take("add_prev")
        cur.take("relu")
        blocks.append((width, stride, parts))
        channels = width
    if not blocks:
        raise cur.fail("expected residual blocks after the stem")
    # head: avg_pool_everything, fc_no_bias
    cur.take("avg_pool", nr=0, nc=0, stride_y=1, stride_x=1, padding_y=0, padding_x=0)
    index = cur.i
    fc = cur.take("fc")
    if fc.options["num_inputs"] != channels:
        raise cur.fail(f"fc expects {fc.options['num_inputs']} inputs, the network gives {channels}", index)
    if fc.options.get("use_bias"):
        raise cur.fail("expected an fc layer without bias (fc_no_bias)", index)
    state["fc.weight"] = np.ascontiguousarray(fc.weights["weight"].T)  # dlib: x @ W
    if cur.i != len(net.layers):
        raise cur.fail("unexpected layers after the fully connected layer")
    # group the blocks into stages: a stage starts at the first block and at each stride-2 one
    stages: list[list[int]] = []
    for s, (width, stride, parts) in enumerate(blocks):
        if s == 0 or stride != 1:
            stages.append([width, 0, stride])
        stage = stages[-1]
        for name, tensors in parts.items():
            put(f"stages.{len(stages) - 1}.{stage[1]}.{name}", tensors)
        stage[1] += 1
    options = {
        "embedding_dim": int(fc.options["num_outputs"]),
        "in_channels": 3,
        "input_size": (int(inp.options.get("nr", 150)), int(inp.options.get("nc", 150))),
        "stem_width": int(stem_width),
        "stages": tuple(tuple(s) for s in stages),
        "mean_rgb": tuple(float(m) for m in inp.options["mean_rgb"]),
    }
    return options, state


def load_dlib_resnet(path: str | os.PathLike) -> DlibResNet:
    """Build :class:`DlibResNet` from a dlib model file (e.g.
    ``dlib_face_recognition_resnet_model_v1.dat``), every parameter assigned from the file
    (shapes checked). The module is in eval mode; its ``options`` attribute holds the
    constructor arguments read from the file."""
    net = read_dlib_net(path)
    if net.input.kind not in ("input_rgb_image_sized", "input_rgb_image"):
        raise FacemetricError(f"{net.source}: expected an RGB image input layer, got {net.input.kind!r}")
    options, state = _read_resnet(net)
    model = DlibResNet(**options)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise FacemetricError(
            f"{net.source}: parameters do not match DlibResNet (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise FacemetricError(
                f"{net.source}: parameter {key}: shape {list(value.shape)} in the file, "
                f"{list(expected[key].shape)} in DlibResNet"
            )
    model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()},
        strict=True,
    )
    model.options = options
    model.source_net = {"loss": dict(net.loss.options, name=net.loss.version), "size": net.size}
    return model.eval()


__all__ = [
    "DlibResNet",
    "DlibResidual",
    "Affine",
    "add_zero_padded",
    "chips_to_tensor",
    "load_dlib_resnet",
    "DLIB_MEAN_RGB",
    "INPUT_SCALE",
    "V1_STAGES",
]
