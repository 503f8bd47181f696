"""A VGG-like fully convolutional trunk for pixel-level heads (any input size).

Stage ``s`` (``s = 1..S``) is ``convs[s]`` x (3x3 convolution, padding 1 -> batch norm -> ReLU)
with ``channels[s]`` filters, preceded (for ``s > 1``) by 2x2 max pooling of stride 2 in ceil
mode (Caffe's pooling), so stage ``s`` has stride ``2^(s-1)``. ``forward`` returns every
stage's output (HED/FSDS side outputs) and the final pooled map (stride ``2^S``; FCN's
``pool5``), with the pooled maps of each stage (``pool3``, ``pool4``) for FCN's skips.

Receptive fields (:meth:`VGGTrunk.receptive_fields`) follow ``r <- r + (k - 1) j`` and
``j <- j * stride`` layer by layer (``j``: the cumulative stride); with two convolutions per
stage: 5, 14, 32, 68, 140 pixels.

:class:`DlibTrunk` is the alternative: the first four stages of dlib's pretrained face
recognition ResNet (:mod:`facemetric.models.dlib_resnet`) with the same interface (five maps at
strides 2, 4, 8, 16, 32; see its docstring for the geometry and the receptive fields).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from facemetric.errors import ConfigError, FacemetricError
from facemetric.io import package_data_file
from facemetric.models.dlib_resnet import DLIB_MEAN_RGB, INPUT_SCALE, DlibResNet, load_dlib_resnet


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class VGGTrunk(nn.Module):
    """Stages of 3x3 conv-BN-ReLU blocks separated by 2x2 max pooling (see the module docstring)."""

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 96, 128),
        convs: Sequence[int] | int = 2,
        in_channels: int = 3,
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ConfigError(f"model.channels: expected a list of positive integers, got {channels}")
        convs = [int(convs)] * len(channels) if isinstance(convs, int) else [int(c) for c in convs]
        if len(convs) != len(channels) or min(convs) < 1:
            raise ConfigError(
                f"model.convs: expected one positive count per stage ({len(channels)}), got {convs}"
            )
        self.channels = channels
        self.convs = convs
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        stages = []
        cin = in_channels
        for cout, n in zip(channels, convs, strict=False):
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += _conv(cin, cout)
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def strides(self) -> list[int]:
        """Stride of each stage's output: ``1, 2, 4, ...``."""
        return [2**s for s in range(self.num_stages)]

    def receptive_fields(self) -> list[int]:
        """Receptive field (pixels) of each stage's output (module docstring's recursion)."""
        r, j, out = 1, 1, []
        for s, n in enumerate(self.convs):
            if s > 0:  # 2x2 pooling, stride 2
                r += (2 - 1) * j
                j *= 2
            r += n * (3 - 1) * j
            out.append(r)
        return out

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``(stage_outputs, pooled)``: ``stage_outputs[s]`` at stride ``2^s``; ``pooled[s]`` the
        max pooling of stage ``s`` (stride ``2^(s+1)``; ``pooled[-1]`` is FCN's ``pool5``)."""
        feats, pooled = [], []
        h = x
        for s, stage in enumerate(self.stages):
            if s > 0:
                h = pooled[-1]
            h = stage(h)
            feats.append(h)
            pooled.append(self.pool(h))
        return feats, pooled


#: dlib's face recognition network file (in ``face_recognition_models/models/``).
DLIB_RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: the environment variable that points at that file (as :mod:`facemetric.inference.pretrained`).
DLIB_MODEL_ENV = "FACEMETRIC_DLIB_MODEL"


def dlib_resnet_file() -> Path:
    """``$FACEMETRIC_DLIB_MODEL``, else the file shipped by ``face_recognition_models`` (found with
    ``importlib.util.find_spec``, not imported). :mod:`facemetric.inference.pretrained` has the
    same lookup one layer up, out of reach of this package."""
    explicit = os.environ.get(DLIB_MODEL_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FacemetricError(f"{DLIB_MODEL_ENV}={explicit}: not a file (the dlib ResNet trunk's weights)")
        return path
    return package_data_file(
        "face_recognition_models", "models", DLIB_RESNET_FILE,
        missing=f"model.trunk: dlib-resnet needs {DLIB_RESNET_FILE}; pip install 'facemetric[pretrained]' "
        f"or set {DLIB_MODEL_ENV}",
        what="dlib ResNet model file",
    )


class DlibTrunk(nn.Module):
    """dlib's face recognition ResNet as a fully convolutional trunk (FCN's "fine-tune a
    classification network"), with :class:`VGGTrunk`'s interface.

    Maps (``forward`` returns them as both ``stage_outputs`` and ``pooled``): the stem
    (7x7/2 convolution -> affine -> ReLU; stride 2, 32 channels), then dlib's stages 1-4 (after
    the 3x3/2 max pool: stride 4, 32 channels; 8, 64; 16, 128; 32, 256). dlib's fifth stage
    (stride 64, 1x1 at 150x150) and the descriptor layer are dropped, so ``pooled[-1]`` (FCN's
    ``pool5``) has stride 32 and ``pooled[-2]``, ``pooled[-3]`` strides 16 and 8, as the FCN-8s
    skips assume.

    Geometry. dlib's downsampling layers do not pad, so cell ``i`` of the stride-``j`` map
    (``j >= 2``) is centred on input pixel ``j i + j + 1`` (the 3x3/2 convolution path of a
    downsampling block; its 2x2 average-pool shortcut is centred 2 pixels earlier), not on
    ``j i + (j - 1) / 2`` as for :class:`VGGTrunk`. ``forward`` therefore pads the input with
    :attr:`PAD` = 6 zeros (the mean colour after normalisation) on the top and left, which puts
    the stride-8 map -- the one FCN-8s upsamples to the output -- within half a pixel of the
    centred convention (``8 i + 3`` vs ``8 i + 3.5``), and with enough zeros on the bottom and
    right (:meth:`padding`) that the upsampled scores cover the whole input, for any input size.
    The stride-16 and -32 maps stay 0.5 cells of the finer map off the centred convention (dlib's
    ``j i + j + 1`` is not a multiple of the scale); FCN-8s's learned x2 upsampling layers
    (4x4 kernels) absorb that.

    Receptive fields (:meth:`receptive_fields`, the same recursion as :class:`VGGTrunk`, along
    the convolution path): 7, 59, 179, 355, 707 pixels.

    Preprocessing (:attr:`mean`, :attr:`std` on 0..1 RGB): dlib's ``(pixel - mean_rgb) / 256``,
    i.e. ``mean = mean_rgb / 255`` and ``std = 256 / 255``.

    ``pretrained``: load the weights of ``dlib_face_recognition_resnet_model_v1.dat``
    (:func:`dlib_resnet_file`); ``freeze``: keep them fixed (``requires_grad`` off).
    """

    PAD = 6

    def __init__(self, pretrained: bool = True, freeze: bool = False):
        super().__init__()
        net = load_dlib_resnet(dlib_resnet_file()) if pretrained else DlibResNet()
        self.conv1, self.affine1 = net.conv1, net.affine1
        self.stages = nn.ModuleList(list(net.stages)[:4])
        self.channels = [net.conv1.out_channels] + [int(w) for w, _, _ in net.stages_spec[:4]]
        self.convs = [1] + [2 * int(n) for _, n, _ in net.stages_spec[:4]]
        mean_rgb = tuple(getattr(net, "mean_rgb", DLIB_MEAN_RGB))
        self.mean = tuple(m / 255.0 for m in mean_rgb)
        self.std = (INPUT_SCALE / 255.0,) * 3
        self.frozen = bool(freeze)
        if freeze:
            for p in self.parameters():
                p.requires_grad_(False)

    @property
    def num_stages(self) -> int:
        return 1 + len(self.stages)

    def strides(self) -> list[int]:
        """Stride of each map: ``2, 4, 8, 16, 32``."""
        return [2 ** (s + 1) for s in range(self.num_stages)]

    def receptive_fields(self) -> list[int]:
        """Receptive field (pixels) of each map (class docstring)."""
        r, j = 7, 2  # stem 7x7/2
        out = [r]
        r, j = r + 2 * j, j * 2  # max pool 3x3/2
        for s, stage in enumerate(self.stages):
            for b, _block in enumerate(stage):
                if s > 0 and b == 0:  # first convolution of a downsampling block: 3x3/2
                    r += 2 * j
                    j *= 2
                    r += 2 * j
                else:
                    r += 2 * (2 * j)
            out.append(r)
        return out

    @staticmethod
    def _sizes(n: int) -> list[int]:
        """Map sizes along one axis for a padded input of ``n`` pixels (0 = too small)."""
        n = 1 + (n - 7) // 2 if n >= 7 else 0
        sizes = [n]
        n = 1 + (n - 3) // 2 if n >= 3 else 0
        sizes.append(n)
        for _ in range(3):
            n = n // 2 if n >= 3 else 0  # max(conv 3x3/2, avg pool 2x2/2) sizes: floor(n / 2)
            sizes.append(n)
        return sizes

    def padding(self, n: int) -> int:
        """Zeros added after the last row (column) of an ``n``-pixel input: the fewest that give
        every map at least one cell and an FCN-8s output (``8 m + 8`` pixels from ``m`` stride-8
        cells, cropped at offset 4) covering the input."""
        extra = 0
        while True:
            sizes = self._sizes(n + self.PAD + extra)
            if min(sizes) >= 1 and 8 * sizes[2] + 8 >= n + 4:
                return extra
            extra += 1

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``(maps, maps)``: the five maps of the class docstring (both lists are the same)."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        x = F.pad(x, (self.PAD, self.padding(w), self.PAD, self.padding(h)))
        y = F.relu(self.affine1(self.conv1(x)))
        feats = [y]
        y = F.max_pool2d(y, 3, 2)
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        return feats, feats


__all__ = ["DLIB_MODEL_ENV", "DLIB_RESNET_FILE", "DlibTrunk", "VGGTrunk", "dlib_resnet_file"]
