"""A reader for dlib's serialised DNNs (``dlib::serialize(net, out)``), e.g. the face
recognition ResNet ``dlib_face_recognition_resnet_model_v1.dat``. Pure Python + NumPy: no dlib.

The format, as far as this reader needs it (facts from dlib's ``serialize.h``,
``float_details.h``, ``dnn/core.h``, ``dnn/layers.h``, ``dnn/input.h``, ``dnn/loss.h`` and
``cuda/tensor.h``; checked byte for byte against the file above, which it consumes exactly):

**Primitive values**

* *integer* (any width, signed or not): one control byte, then ``n = control & 0x0F`` (at
  most 8) little-endian magnitude bytes; bit ``0x80`` of the control byte is the sign. Zero is
  written as ``01 00``. Bits ``0x70`` are never set.
* *float / double*: two integers, a mantissa ``m`` and an exponent ``e``; the value is
  ``m * 2**e``, except ``e`` = 32000 / 32001 / 32002 for +inf / -inf / NaN.
* *bool*: one ASCII byte, ``'1'`` or ``'0'``.
* *string*: its length (an integer) then the bytes.
* *tensor* (``resizable_tensor``): the integer 2 (version), four integers ``num_samples, k,
  nr, nc`` and then the ``num_samples*k*nr*nc`` values as raw little-endian IEEE float32.
* *alias tensor* (a view of a layer's flat ``params`` tensor): the integer 1 (version) and four
  integers ``num_samples, k, nr, nc``. The offset of the view is not stored; every layer puts
  its weights first and its biases right after them.

**The network** ``add_loss_layer<LOSS, add_layer<..., add_layer<..., INPUT>>>`` is written
recursively, outermost layer first, each wrapper writing its version *before* its
sub-network and its own state *after* it:

* ``add_loss_layer``: integer 1, the loss (version string + fields), then the sub-network;
* ``add_layer`` over another layer: integer 2, the sub-network, then the layer's details
  (version string + fields), the bools ``this_layer_setup_called``,
  ``gradient_input_is_stale``, ``get_output_and_gradient_input_disabled`` and three tensors
  (``x_grad``, ``cached_output``, ``params_grad``; empty in a saved model);
* ``add_layer`` over the input layer: integer 3, the input layer, the layer's details, the
  same three bools and three tensors, then ``_sample_expansion_factor`` (an integer);
* ``add_tag_layer<ID>`` and ``add_skip_layer<TAG>``: integer 1, then the sub-network. The tag
  ids are template arguments and are **not** in the file: a tag and a skip look the same, and
  so does ``add_prev1`` and ``add_prev2`` (``"add_prev_"``). The graph wiring must come from
  the network definition (see :mod:`facemetric.models.dlib_resnet`).

So the file is: the loss, the stack of wrapper versions from the output to the input, the
input layer, then the layers' details from the input to the output.

**Layer details** (version string, then the fields in this order):

* ``con_4`` / ``con_5``: params (tensor), num_filters, nr, nc, stride_y, stride_x,
  padding_y, padding_x, filters (alias ``[num_filters, k, nr, nc]``), biases (alias
  ``[1, num_filters, 1, 1]``, empty without bias), four doubles (learning-rate and
  weight-decay multipliers), and for ``con_5`` the bool ``use_bias``. A convolution is a
  cross-correlation with zero padding: output size ``1 + (n + 2*pad - k) // stride``.
* ``affine_`` / ``affine_2``: params, gamma (alias), beta (alias), mode (integer; 0 = per
  channel "CONV_MODE", 1 = per element "FC_MODE"), and for ``affine_2`` the bool
  ``is_disabled``. Output ``x * gamma + beta``: a batch norm frozen into a scale and a shift.
* ``bn_con2`` / ``bn_fc2`` (batch norm): params, gamma, beta, means, invstds, running_means,
  running_variances (tensors), num_updates, running_stats_window_size (integers), four
  doubles, eps (double). At test time ``(x - running_mean) / sqrt(running_var + eps) * gamma
  + beta``.
* ``relu_``, ``add_prev_``: nothing else.
* ``max_pool_2`` / ``avg_pool_2``: nr, nc, stride_y, stride_x, padding_y, padding_x
  (``nr = nc = 0``: pool over the whole input).
* ``fc_2`` / ``fc_3``: num_outputs, num_inputs, params, weights (alias ``[num_inputs,
  num_outputs]``: ``output = input @ weights``), biases (alias), bias_mode (integer; 0 = with
  bias, 1 = without), four doubles, and for ``fc_3`` the bool ``use_bias``.
* input ``input_rgb_image_sized``: avg_red, avg_green, avg_blue (floats), NR, NC (integers);
  ``input_rgb_image``: the three means only. Input value ``(pixel - avg) / 256`` per channel.
* loss ``loss_metric_2``: margin, distance threshold (floats); ``loss_metric_``: nothing.

:func:`read_dlib_net` returns a :class:`DlibNet` whose ``layers`` are :class:`DlibLayer`
records from the input to the output (tags and skips as ``kind="tag_or_skip"``). Anything
unexpected raises :class:`~facemetric.errors.FacemetricError` with one line naming the file
and the byte offset.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemetric.errors import FacemetricError

#: float_details' special exponents.
EXP_INF, EXP_NINF, EXP_NAN = 32000, 32001, 32002
#: Longest version string / layer name accepted (dlib's are < 32 characters).
MAX_STRING = 256


@dataclass
class DlibLayer:
    """One layer of a dlib network.

    Attributes:
        kind: ``"con"``, ``"affine"``, ``"bn"``, ``"relu"``, ``"max_pool"``, ``"avg_pool"``,
            ``"add_prev"``, ``"fc"``, ``"tag_or_skip"`` or an input kind
            (``"input_rgb_image_sized"``, ``"input_rgb_image"``).
        version: the version string as written (``"con_4"``; ``""`` for a tag or skip).
        options: hyper-parameters (ints, floats, bools), named as in dlib.
        weights: float32 arrays in dlib's layout (see the module docstring), e.g. ``con``:
            ``weight [num_filters, k, nr, nc]`` and ``bias [num_filters]``; ``fc``: ``weight
            [num_inputs, num_outputs]``.
        offset: byte offset of the record in the file (for error messages).
    """

    kind: str
    version: str
    options: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    offset: int = 0


@dataclass
class DlibNet:
    """A parsed network: ``loss`` (kind, version, options), ``input`` and ``layers`` (from
    the input to the output), the ``source`` name and its ``size`` in bytes."""

    source: str
    size: int
    loss: DlibLayer
    input: DlibLayer
    layers: list[DlibLayer]

    def summary(self) -> list[str]:
        """One line per layer (kind and hyper-parameters), input first."""
        lines = [f"{self.input.kind} {self.input.options}"]
        for layer in self.layers:
            parts = [layer.kind]
            if layer.options:
                parts.append(str(layer.options))
            if layer.weights:
                parts.append(str({k: list(v.shape) for k, v in layer.weights.items()}))
            lines.append(" ".join(parts))
        return lines


class DlibReader:
    """Sequential decoder of dlib's primitive encodings over a byte buffer.

    Every method reads one value at :attr:`pos`, advances past it and raises a one-line
    :class:`FacemetricError` (``"<name>: <what> at byte <offset>: <problem>"``) when the bytes
    do not hold one.
    """

    def __init__(self, data: bytes | bytearray | memoryview, name: str = "<bytes>") -> None:
        self.data = memoryview(data).cast("B")
        self.name = name
        self.pos = 0

    # ------------------------------------------------------------------ helpers
    def error(self, what: str, problem: str, offset: int | None = None) -> FacemetricError:
        at = self.pos if offset is None else offset
        return FacemetricError(f"{self.name}: {what} at byte {at}: {problem}")

    def _take(self, n: int, what: str, start: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.error(
                what, f"unexpected end of file (needs {n} more bytes, {len(self.data) - self.pos} left)",
                start,
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    # --------------------------------------------------------------- primitives
    def int(self, what: str = "integer") -> int:
        start = self.pos
        control = self._take(1, what, start)[0]
        size = control & 0x0F
        if control & 0x70 or size > 8:
            raise self.error(what, f"bad integer control byte 0x{control:02x}", start)
        value = int.from_bytes(self._take(size, what, start), "little")
        return -value if control & 0x80 else value

    def uint(self, what: str = "integer") -> int:
        start = self.pos
        value = self.int(what)
        if value < 0:
            raise self.error(what, f"expected a non-negative integer, got {value}", start)
        return value

    def float(self, what: str = "float") -> float:
        start = self.pos
        mantissa = self.int(what)
        exponent = self.int(what)
        if exponent == EXP_INF:
            return math.inf
        if exponent == EXP_NINF:
            return -math.inf
        if exponent == EXP_NAN:
            return math.nan
        if not -32768 <= exponent < EXP_INF or abs(mantissa) >= 1 << 63:
            raise self.error(what, f"bad float (mantissa {mantissa}, exponent {exponent})", start)
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            return math.copysign(math.inf, mantissa)

    def bool(self, what: str = "bool") -> bool:
        start = self.pos
        byte = self._take(1, what, start)[0]
        if byte not in (0x30, 0x31):
            raise self.error(what, f"expected '0' or '1', got byte 0x{byte:02x}", start)
        return byte == 0x31

    def string(self, what: str = "string") -> str:
        start = self.pos
        n = self.uint(what)
        if n > MAX_STRING:
            raise self.error(what, f"string length {n} is implausible (> {MAX_STRING})", start)
        raw = bytes(self._take(n, what, start))
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(what, f"not an ASCII string: {raw[:32]!r}", start) from None
        if not text.isprintable():
            raise self.error(what, f"not a printable string: {raw[:32]!r}", start)
        return text

    def _dims(self, what: str) -> tuple[int, int, int, int]:
        return tuple(self.uint(f"{what} dimension") for _ in range(4))  # type: ignore[return-value]

    def tensor(self, what: str = "tensor") -> np.ndarray:
        """A ``resizable_tensor``: float32 array ``[num_samples, k, nr, nc]`` (a copy)."""
        start = self.pos
        version = self.int(f"{what} version")
        if version != 2:
            raise self.error(what, f"unsupported tensor version {version} (expected 2)", start)
        dims = self._dims(what)
        count = math.prod(dims)
        raw = self._take(4 * count, f"{what} values", start)
        return np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32).reshape(dims)

    def alias(self, what: str = "alias tensor") -> tuple[int, int, int, int]:
        """An ``alias_tensor``: its dims ``(num_samples, k, nr, nc)``."""
        start = self.pos
        version = self.int(f"{what} version")
        if version != 1:
            raise self.error(what, f"unsupported alias_tensor version {version} (expected 1)", start)
        return self._dims(what)

    def expect_string(self, expected: str, what: str) -> None:
        start = self.pos
        got = self.string(what)
        if got != expected:
            raise self.error(what, f"expected {expected!r}, got {got!r}", start)


# ------------------------------------------------------------------------------ layers
def _split_params(
    r: DlibReader, params: np.ndarray, parts: list[tuple[str, tuple[int, ...]]], what: str, start: int
) -> dict[str, np.ndarray]:
    """Cut the flat ``params`` into consecutive named views of the given alias dims."""
    flat = params.reshape(-1)
    sizes = [math.prod(dims) for _, dims in parts]
    if sum(sizes) != flat.size:
        desc = " + ".join(f"{name} {list(dims)}" for name, dims in parts)
        raise r.error(what, f"params hold {flat.size} values, expected {desc} = {sum(sizes)}", start)
    out, at = {}, 0
    for (name, dims), size in zip(parts, sizes, strict=True):
        if size:
            out[name] = flat[at : at + size].reshape(dims).copy()
        at += size
    return out


def _multipliers(r: DlibReader, what: str) -> dict[str, float]:
    names = ("learning_rate_multiplier", "weight_decay_multiplier",
             "bias_learning_rate_multiplier", "bias_weight_decay_multiplier")
    return {n: r.float(f"{what} {n}") for n in names}


def _con(r: DlibReader, version: str, start: int) -> tuple[str, dict, dict]:
    what = f"layer {version!r}"
    params = r.tensor(f"{what} params")
    names = ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    opts: dict[str, Any] = {n: r.int(f"{what} {n}") for n in names}
    filters = r.alias(f"{what} filters")
    biases = r.alias(f"{what} biases")
    opts.update(_multipliers(r, what))
    opts["use_bias"] = r.bool(f"{what} use_bias") if version == "con_5" else True
    nf = opts["num_filters"]
    if filters[0] != nf or (opts["nr"] and filters[2] != opts["nr"]) or (opts["nc"] and filters[3] != opts["nc"]):
        raise r.error(what, f"filters {list(filters)} do not match num_filters={nf}, "
                      f"nr={opts['nr']}, nc={opts['nc']}", start)
    if math.prod(biases) not in (0, nf):
        raise r.error(what, f"biases {list(biases)} do not match num_filters={nf}", start)
    w = _split_params(r, params, [("weight", filters), ("bias", biases)], what, start)
    if "bias" in w:
        w["bias"] = w["bias"].reshape(nf)
    opts["use_bias"] = opts["use_bias"] and "bias" in w
    return "con", opts, w


def _affine(r: DlibReader, version: str, start: int) -> tuple[str, dict, dict]:
    what = f"layer {version!r}"
    params = r.tensor(f"{what} params")
    gamma = r.alias(f"{what} gamma")
    beta = r.alias(f"{what} beta")
    mode = r.int(f"{what} mode")
    disabled = r.bool(f"{what} is_disabled") if version == "affine_2" else False
    if mode not in (0, 1):
        raise r.error(what, f"unknown mode {mode} (expected 0 = conv, 1 = fc)", start)
    opts = {"mode": "conv" if mode == 0 else "fc", "disabled": disabled}
    if disabled:
        return "affine", opts, {}
    if gamma != beta:
        raise r.error(what, f"gamma {list(gamma)} and beta {list(beta)} differ in shape", start)
    return "affine", opts, _split_params(r, params, [("gamma", gamma), ("beta", beta)], what, start)


def _bn(r: DlibReader, version: str, start: int) -> tuple[str, dict, dict]:
    what = f"layer {version!r}"
    params = r.tensor(f"{what} params")
    gamma = r.alias(f"{what} gamma")
    beta = r.alias(f"{what} beta")
    for name in ("means", "invstds"):
        r.tensor(f"{what} {name}")
    running_mean = r.tensor(f"{what} running_means")
    running_var = r.tensor(f"{what} running_variances")
    opts: dict[str, Any] = {"mode": "conv" if version == "bn_con2" else "fc"}
    opts["num_updates"] = r.uint(f"{what} num_updates")
    opts["running_stats_window_size"] = r.uint(f"{what} running_stats_window_size")
    opts.update(_multipliers(r, what))
    opts["eps"] = r.float(f"{what} eps")
    w = _split_params(r, params, [("gamma", gamma), ("beta", beta)], what, start)
    if running_mean.size != math.prod(gamma) or running_var.size != math.prod(gamma):
        raise r.error(what, "running statistics do not match gamma", start)
    w["running_mean"] = running_mean.reshape(gamma)
    w["running_var"] = running_var.reshape(gamma)
    return "bn", opts, w


def _pool(r: DlibReader, version: str, start: int) -> tuple[str, dict, dict]:
    what = f"layer {version!r}"
    names = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    return version[: -len("_2")], {n: r.int(f"{what} {n}") for n in names}, {}


def _fc(r: DlibReader, version: str, start: int) -> tuple[str, dict, dict]:
    what = f"layer {version!r}"
    opts: dict[str, Any] = {"num_outputs": r.uint(f"{what} num_outputs"),
                            "num_inputs": r.uint(f"{what} num_inputs")}
    params = r.tensor(f"{what} params")
    weights = r.alias(f"{what} weights")
    biases = r.alias(f"{what} biases")
    bias_mode = r.int(f"{what} bias_mode")
    opts.update(_multipliers(r, what))
    use_bias = r.bool(f"{what} use_bias") if version == "fc_3" else True
    if bias_mode not in (0, 1):
        raise r.error(what, f"unknown bias_mode {bias_mode} (expected 0 or 1)", start)
    n_in, n_out = opts["num_inputs"], opts["num_outputs"]
    if math.prod(weights) != n_in * n_out:
        raise r.error(what, f"weights {list(weights)} do not match {n_in} inputs x {n_out} outputs", start)
    w = _split_params(r, params, [("weight", (n_in, n_out)), ("bias", biases)], what, start)
    if "bias" in w:
        if w["bias"].size != n_out:
            raise r.error(what, f"biases {list(biases)} do not match {n_out} outputs", start)
        w["bias"] = w["bias"].reshape(n_out)
    opts["use_bias"] = bias_mode == 0 and use_bias and "bias" in w
    if not opts["use_bias"]:
        w.pop("bias", None)
    return "fc", opts, w


def _nothing(kind: str) -> Callable[[DlibReader, str, int], tuple[str, dict, dict]]:
    return lambda r, version, start: (kind, {}, {})


LAYER_READERS: dict[str, Callable[[DlibReader, str, int], tuple[str, dict, dict]]] = {
    "con_4": _con,
    "con_5": _con,
    "affine_": _affine,
    "affine_2": _affine,
    "bn_con2": _bn,
    "bn_fc2": _bn,
    "relu_": _nothing("relu"),
    "add_prev_": _nothing("add_prev"),
    "max_pool_2": _pool,
    "avg_pool_2": _pool,
    "fc_2": _fc,
    "fc_3": _fc,
}


def _read_input(r: DlibReader) -> DlibLayer:
    start = r.pos
    version = r.string("input layer")
    if version not in ("input_rgb_image_sized", "input_rgb_image"):
        raise r.error("input layer", f"unsupported input layer {version!r} "
                      "(expected 'input_rgb_image_sized' or 'input_rgb_image')", start)
    mean = [r.float(f"input layer avg_{c}") for c in ("red", "green", "blue")]
    opts: dict[str, Any] = {"mean_rgb": mean}
    if version == "input_rgb_image_sized":
        opts["nr"] = r.uint("input layer NR")
        opts["nc"] = r.uint("input layer NC")
    return DlibLayer(version, version, opts, {}, start)


def _read_loss(r: DlibReader) -> DlibLayer:
    start = r.pos
    version = r.int("loss layer version")
    if version != 1:
        raise r.error("loss layer", f"unsupported add_loss_layer version {version} (expected 1)", start)
    at = r.pos
    name = r.string("loss layer")
    if name == "loss_metric_2":
        opts = {"margin": r.float("loss margin"), "distance_threshold": r.float("loss dist_thresh")}
    elif name == "loss_metric_":
        opts = {}
    else:
        raise r.error("loss layer", f"unsupported loss {name!r} (expected 'loss_metric_2')", at)
    return DlibLayer("loss_metric", name, opts, {}, at)


def _read_layer_state(r: DlibReader, what: str) -> None:
    """The training state ``add_layer`` writes after a layer's details (ignored)."""
    for name in ("this_layer_setup_called", "gradient_input_is_stale",
                 "get_output_and_gradient_input_disabled"):
        r.bool(f"{what} {name}")
    for name in ("x_grad", "cached_output", "params_grad"):
        r.tensor(f"{what} {name}")


def parse_dlib_net(data: bytes | bytearray | memoryview, name: str = "<bytes>") -> DlibNet:
    """Parse a whole serialised network (see the module docstring)."""
    r = DlibReader(data, name)
    loss = _read_loss(r)
    # wrapper versions, outermost first: 2 = add_layer, 1 = tag/skip, 3 = add_layer on the input
    stack: list[tuple[int, int]] = []
    while True:
        at = r.pos
        version = r.int("layer version")
        if version == 3:
            break
        if version not in (1, 2):
            raise r.error("layer version", f"unsupported add_layer version {version} "
                          "(expected 1 = tag/skip, 2 = layer, 3 = layer on the input)", at)
        stack.append((version, at))
    inp = _read_input(r)
    layers: list[DlibLayer] = []
    first = True
    for version, at in [(3, -1), *reversed(stack)]:
        if version == 1:
            layers.append(DlibLayer("tag_or_skip", "", {}, {}, at))
            continue
        start = r.pos
        tag = r.string(f"layer {len(layers)}")
        reader = LAYER_READERS.get(tag)
        if reader is None:
            raise r.error(f"layer {len(layers)}", f"unsupported layer type {tag!r} (supported: "
                          f"{', '.join(sorted(LAYER_READERS))})", start)
        kind, opts, weights = reader(r, tag, start)
        _read_layer_state(r, f"layer {len(layers)} ({tag})")
        if first:
            r.uint("sample_expansion_factor")
            first = False
        layers.append(DlibLayer(kind, tag, opts, weights, start))
    if r.remaining:
        raise r.error("end of network", f"{r.remaining} unexpected trailing bytes")
    return DlibNet(name, len(r.data), loss, inp, layers)


def read_dlib_net(path: str | os.PathLike) -> DlibNet:
    """Read and parse the dlib network file ``path``."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise FacemetricError(f"{p}: cannot read ({exc.strerror or exc.__class__.__name__})") from None
    return parse_dlib_net(data, str(p))


__all__ = ["DlibLayer", "DlibNet", "DlibReader", "parse_dlib_net", "read_dlib_net", "LAYER_READERS"]
