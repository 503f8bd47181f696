"""Face backbones: published layer structure, exact parameter counts, shapes, gradients, FLOPs.

Parameter counts are derived by hand below from the published layer tables (not from the
modules), then compared with the modules:

* Face-ResNet / SphereFace-20/36: wy1iu/sphereface train/code/sphereface_model.prototxt and
  train/code/make_spherenet.py (learned parameters; the residual convolutions' frozen, all-zero
  Caffe bias blobs are not parameters here).
* IResNet: deepinsight/insightface recognition/arcface_torch/backbones/iresnet.py (all
  parameters, including the output BatchNorm1d's fixed weight; IResNet-50 = 43.59M,
  IResNet-100 = 65.16M as insightface reports).
* MobileFaceNet: insightface recognition/arcface_torch/backbones/mobilefacenet.py ("mbf").
* Inception-ResNet-v1: davidsandberg/facenet src/models/inception_resnet_v1.py (TF-slim batch
  norm without scale: each BN has only its shift beta).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facemetric.errors import ConfigError
from facemetric.models import (
    MODELS,
    FaceResNet,
    InceptionResNetV1,
    IResNet,
    MobileFaceNet,
    build_model,
    count_flops,
    model_summary,
)
from facemetric.models.inception_resnet_v1 import Block8, Block17, Block35
from facemetric.models.iresnet import IBasicBlock
from facemetric.models.mobilefacenet import Bottleneck

torch.set_num_threads(min(2, torch.get_num_threads()))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# hand-derived parameter counts of the published structures
# ----------------------------------------------------------------------------------------------


def sphere_params(units: tuple[int, ...], dim: int = 512, h: int = 112, w: int = 96) -> int:
    """Stride-2 conv3x3 with bias + PReLU, then units of two bias-free conv3x3 + PReLU; fc5."""
    total, prev = 0, 3
    for c, n in zip((64, 128, 256, 512), units, strict=True):
        total += prev * c * 9 + c + c  # stride-2 conv (weight + bias) + PReLU
        total += n * 2 * (c * c * 9 + c)  # residual convs (no bias) + PReLUs
        prev = c
        h, w = (h + 1) // 2, (w + 1) // 2
    return total + 512 * h * w * dim + dim


def iresnet_params(layers: tuple[int, ...], dim: int = 512) -> int:
    bn = 2  # weight + bias per channel
    total = 3 * 64 * 9 + bn * 64 + 64  # stem conv, BN, PReLU
    prev = 64
    for c, n in zip((64, 128, 256, 512), layers, strict=True):
        for i in range(n):
            cin = prev if i == 0 else c
            total += bn * cin + cin * c * 9 + bn * c + c + c * c * 9 + bn * c
            if i == 0:
                total += cin * c + bn * c  # 1x1 downsample + BN
        prev = c
    return total + bn * 512 + 512 * 7 * 7 * dim + dim + bn * dim  # bn2, fc, features


def mobilefacenet_params(dim: int = 512) -> int:
    def cb(cin: int, cout: int, k: int = 1, groups: int = 1, act: bool = True) -> int:
        return cin // groups * cout * k * k + 2 * cout + (cout if act else 0)

    def bneck(cin: int, cout: int, inner: int) -> int:
        return cb(cin, inner) + cb(inner, inner, 3, inner) + cb(inner, cout, act=False)

    total = cb(3, 128, 3) + cb(128, 128, 3, 64)
    total += bneck(128, 128, 128) + 4 * bneck(128, 128, 128)
    total += bneck(128, 256, 256) + 6 * bneck(256, 256, 256)
    total += bneck(256, 256, 512) + 2 * bneck(256, 256, 256)
    total += cb(256, 512) + cb(512, 512, 7, 512, act=False)  # conv_sep, GDC
    return total + 512 * dim + 2 * dim


def inception_resnet_v1_params(dim: int = 512) -> int:
    def c(cin: int, cout: int, kh: int, kw: int | None = None) -> int:  # conv + BN beta
        return cin * cout * kh * (kh if kw is None else kw) + cout

    stem = c(3, 32, 3) + c(32, 32, 3) + c(32, 64, 3) + c(64, 80, 1) + c(80, 192, 3) + c(192, 256, 3)
    b35 = c(256, 32, 1) + c(256, 32, 1) + c(32, 32, 3) + c(256, 32, 1) + 2 * c(32, 32, 3)
    b35 += 96 * 256 + 256  # up conv with bias
    red_a = c(256, 384, 3) + c(256, 192, 1) + c(192, 192, 3) + c(192, 256, 3)
    b17 = 2 * c(896, 128, 1) + c(128, 128, 1, 7) + c(128, 128, 7, 1) + 256 * 896 + 896
    red_b = 3 * c(896, 256, 1) + c(256, 384, 3) + 3 * c(256, 256, 3)
    b8 = 2 * c(1792, 192, 1) + c(192, 192, 1, 3) + c(192, 192, 3, 1) + 384 * 1792 + 1792
    return stem + 5 * b35 + red_a + 10 * b17 + red_b + 6 * b8 + 1792 * dim + dim


# The exact numbers (512-D) the derivations give; also quoted in the module docs / summaries.
EXPECTED = {
    "face-resnet-20": 22_666_944,
    "face-resnet-36": 32_771_392,
    "iresnet18": 24_025_600,
    "iresnet34": 34_139_328,
    "iresnet50": 43_590_848,
    "iresnet100": 65_156_160,
    "mobilefacenet": 2_059_520,
    "inception-resnet-v1": 23_467_824,
}


def test_hand_derivations_give_the_published_numbers():
    assert sphere_params((1, 2, 4, 1)) == EXPECTED["face-resnet-20"]
    assert sphere_params((2, 4, 8, 2)) == EXPECTED["face-resnet-36"]
    assert iresnet_params((2, 2, 2, 2)) == EXPECTED["iresnet18"]
    assert iresnet_params((3, 4, 6, 3)) == EXPECTED["iresnet34"]
    assert iresnet_params((3, 4, 14, 3)) == EXPECTED["iresnet50"]
    assert iresnet_params((3, 13, 30, 3)) == EXPECTED["iresnet100"]
    assert mobilefacenet_params() == EXPECTED["mobilefacenet"]
    assert inception_resnet_v1_params() == EXPECTED["inception-resnet-v1"]


# ----------------------------------------------------------------------------------------------
# the trainable-size backbones: shapes, counts, gradients, determinism
# ----------------------------------------------------------------------------------------------

SMALL = {  # name -> (input H, W, parameter count for embedding_dim=128)
    "face-resnet-20": ((112, 96), sphere_params((1, 2, 4, 1), 128)),
    "face-resnet-36": ((112, 96), sphere_params((2, 4, 8, 2), 128)),
    "iresnet18": ((112, 112), iresnet_params((2, 2, 2, 2), 128)),
    "iresnet34": ((112, 112), iresnet_params((3, 4, 6, 3), 128)),
    "iresnet50": ((112, 112), iresnet_params((3, 4, 14, 3), 128)),
    "mobilefacenet": ((112, 112), mobilefacenet_params(128)),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_shapes_counts_gradients_and_eval_determinism(name):
    (h, w), params_128 = SMALL[name]
    torch.manual_seed(0)
    model = build_model(name)  # 512-D default
    assert model.embedding_dim == 512 and model.input_size == (h, w)
    assert n_params(model) == EXPECTED[name]
    x = torch.randn(2, 3, h, w)

    # gradients reach every trainable parameter (train mode, batch 2)
    model.train()
    out = model(x)
    assert out.shape == (2, 512)
    out.square().mean().backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == (["features.weight"] if name.startswith("iresnet") else [])
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, pname
            assert torch.isfinite(p.grad).all(), pname

    # eval mode is deterministic
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b) and torch.isfinite(a).all()

    # another embedding size
    small = build_model(name, embedding_dim=128)
    assert n_params(small) == params_128
    with torch.no_grad():
        assert small.eval()(x).shape == (2, 128)


@pytest.mark.parametrize("name", ["iresnet100", "inception-resnet-v1"])
def test_large_backbones_count_and_one_forward(name):
    model = build_model(name).eval()
    assert n_params(model) == EXPECTED[name]
    h, w = model.input_size
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w))
    assert out.shape == (2, 512)
    if name == "inception-resnet-v1":
        assert torch.isfinite(out).all()
    # (An untrained IResNet-100 overflows in eval mode: with insightface's N(0, 0.1) conv init
    # and BN running statistics still at mean 0 / var 1, each of the 49 residual units
    # multiplies the activations' scale, so no finiteness check there.)


# ----------------------------------------------------------------------------------------------
# layer structure
# ----------------------------------------------------------------------------------------------


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize(
    "name,depth,units", [("sphere20", 20, (1, 2, 4, 1)), ("sphere36", 36, (2, 4, 8, 2))]
)
def test_face_resnet_structure(name, depth, units):
    m = build_model(name)
    assert isinstance(m, FaceResNet) and m.depth == depth
    convs = _convs(m)
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert len(convs) == depth and len(linears) == 1  # depth convolutions + fc5
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    heads = [c for c in convs if c.stride == (2, 2)]
    assert [c.out_channels for c in heads] == [64, 128, 256, 512]
    assert all(c.bias is not None for c in heads)  # learned bias on the stride-2 convs only
    assert all(c.bias is None for c in convs if c.stride == (1, 1))
    widths = [c.out_channels for c in convs if c.stride == (1, 1)]
    assert widths == [
        c for c, n in zip((64, 128, 256, 512), units, strict=True) for _ in range(2 * n)
    ]
    assert sum(isinstance(x, nn.PReLU) for x in m.modules()) == depth
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert m.feature_size == (7, 6) and m.fc.in_features == 512 * 7 * 6
    # Caffe init: residual convs Gaussian(0, 0.01); PReLU slopes 0.25
    assert abs(float(convs[1].weight.detach().std()) - 0.01) < 1e-3
    assert all(
        float(p.weight.detach().mean()) == 0.25 for p in m.modules() if isinstance(p, nn.PReLU)
    )

    bn = build_model(name, batch_norm=True, input_size=112, embedding_dim=64)
    assert sum(isinstance(x, nn.BatchNorm2d) for x in bn.modules()) == depth
    assert all(c.bias is None for c in _convs(bn))
    assert bn.input_size == (112, 112) and bn.fc.in_features == 512 * 7 * 7
    with torch.no_grad():
        assert bn.eval()(torch.randn(2, 3, 112, 112)).shape == (2, 64)


def test_iresnet_structure():
    m = build_model("iresnet50")
    assert isinstance(m, IResNet)
    stages = [m.layer1, m.layer2, m.layer3, m.layer4]
    assert [len(s) for s in stages] == [3, 4, 14, 3]
    assert sum(isinstance(x, IBasicBlock) for x in m.modules()) == 24
    # stem + 2 per unit + one 1x1 downsample per stage
    assert len(_convs(m)) == 1 + 2 * 24 + 4
    assert m.conv1.stride == (1, 1) and m.conv1.out_channels == 64 and m.conv1.bias is None
    for stage, width in zip(stages, (64, 128, 256, 512), strict=True):
        first = stage[0]
        assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)  # stride on conv2
        assert first.conv2.out_channels == width and first.downsample is not None
        assert all(b.downsample is None for b in stage[1:])
    block = m.layer1[1]
    assert [type(c).__name__ for c in block.children()] == [
        "BatchNorm2d",
        "Conv2d",
        "BatchNorm2d",
        "PReLU",
        "Conv2d",
        "BatchNorm2d",
    ]
    assert m.fc.in_features == 512 * 7 * 7 and isinstance(m.features, nn.BatchNorm1d)
    assert all(b.eps == 1e-5 for b in m.modules() if isinstance(b, nn.BatchNorm2d))


def test_mobilefacenet_structure():
    m = build_model("mobilefacenet")
    assert isinstance(m, MobileFaceNet) and m.blocks == (1, 4, 6, 2) and m.scale == 2
    bottlenecks = [b for b in m.modules() if isinstance(b, Bottleneck)]
    assert len(bottlenecks) == 3 + 4 + 6 + 2
    assert sum(b.residual for b in bottlenecks) == 12
    depthwise = [
        c for c in _convs(m) if c.groups == c.in_channels == c.out_channels and c.groups > 1
    ]
    assert [c.stride for c in depthwise].count((2, 2)) == 3
    gdc = m.gdc[0]
    assert gdc.kernel_size == (7, 7) and gdc.groups == 512 and gdc.bias is None
    assert m.linear.in_features == 512 and m.linear.bias is None
    assert isinstance(m.features, nn.BatchNorm1d)
    assert m.layers[1][0].groups == 64  # insightface's grouped (not depthwise) second conv
    assert n_params(build_model("mbf", blocks=(2, 8, 12, 4), scale=4)) > n_params(m)


def test_inception_resnet_v1_structure():
    m = build_model("facenet")
    assert isinstance(m, InceptionResNetV1) and m.input_size == (160, 160)
    b35 = [b for b in m.modules() if isinstance(b, Block35)]
    b17 = [b for b in m.modules() if isinstance(b, Block17)]
    b8 = [b for b in m.modules() if isinstance(b, Block8)]
    assert len(b35) == 5 and all(b.scale == 0.17 and b.activation for b in b35)
    assert len(b17) == 10 and all(b.scale == 0.10 and b.activation for b in b17)
    assert len(b8) == 6 and all(b.scale == 0.20 and b.activation for b in b8[:5])
    assert b8[5] is m.block8 and b8[5].scale == 1.0 and not b8[5].activation
    assert m.feature_size == (3, 3)
    assert m.dropout.p == pytest.approx(0.2)
    assert m.bottleneck.in_features == 1792 and m.bottleneck.bias is None
    bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    assert all(b.eps == 1e-3 and b.momentum == pytest.approx(0.005) for b in bns)
    assert all(b.weight is None and b.bias is not None for b in bns)  # slim: beta, no gamma
    ups = {id(b.up) for b in b35 + b17 + b8}  # 1x1 "up" convs: bias, no BN, no activation
    assert all((c.bias is not None) == (id(c) in ups) for c in _convs(m))
    assert len(_convs(m)) == 6 + 5 * 7 + 4 + 10 * 5 + 7 + 6 * 5
    scaled = build_model("inception-resnet-v1", bn_scale=True, embedding_dim=128)
    assert all(
        b.weight is not None
        for b in scaled.modules()
        if isinstance(b, nn.modules.batchnorm._BatchNorm)
    )


# ----------------------------------------------------------------------------------------------
# registry, options, errors
# ----------------------------------------------------------------------------------------------


def test_registered_names_and_aliases():
    names = MODELS.names()
    for name in EXPECTED:
        assert name in names
    assert isinstance(build_model("sphere20", embedding_dim=8), FaceResNet)
    assert build_model("sphere36", embedding_dim=8).depth == 36


@pytest.mark.parametrize(
    "name,options,match",
    [
        ("face-resnet-20", {"embedding_dim": 0}, "embedding_dim"),
        ("face-resnet-20", {"input_size": (112, 96, 3)}, "input_size"),
        ("face-resnet-36", {"input_size": 8}, "input_size"),
        ("iresnet18", {"dropout": 1.0}, "dropout"),
        ("iresnet50", {"in_channels": 0}, "in_channels"),
        ("mobilefacenet", {"blocks": (1, 4, 6)}, "blocks"),
        ("mobilefacenet", {"scale": 0}, "scale"),
        ("inception-resnet-v1", {"input_size": 64}, "input_size"),
        ("inception-resnet-v1", {"dropout": -0.1}, "dropout"),
        ("iresnet34", {"embeding_dim": 3}, "unexpected keyword"),
    ],
)
def test_bad_options(name, options, match):
    with pytest.raises(ConfigError, match=match):
        build_model(name, **options)


def test_bad_depth():
    with pytest.raises(ConfigError, match="depth"):
        IResNet(depth=42)
    with pytest.raises(ConfigError, match="depth"):
        FaceResNet(depth=21)


def test_other_input_sizes_and_channels():
    m = build_model("iresnet18", input_size=(96, 80), in_channels=1, embedding_dim=16).eval()
    assert m.fc.in_features == 512 * 6 * 5
    with torch.no_grad():
        assert m(torch.randn(2, 1, 96, 80)).shape == (2, 16)
    mbf = build_model("mobilefacenet", input_size=96, embedding_dim=16).eval()
    assert mbf.gdc[0].kernel_size == (6, 6)
    with torch.no_grad():
        assert mbf(torch.randn(2, 3, 96, 96)).shape == (2, 16)


# ----------------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------------


def test_count_flops_matches_a_hand_count():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 8x8x4 outputs, 3*3*3 MACs each
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2),  # 4x4x4 outputs, (4/2)*3*3 MACs each
        nn.Flatten(),
        nn.Linear(64, 5),  # 64*5 MACs
    ).train()
    macs = 8 * 8 * 4 * 27 + 4 * 4 * 4 * 18 + 64 * 5
    assert count_flops(model, 8) == 2 * macs == 16768
    assert count_flops(model, (8, 8), in_channels=3) == 16768
    assert model.training  # mode restored


def test_model_summary():
    s = model_summary("mobilefacenet")
    assert s["name"] == "mobilefacenet"
    assert s["parameters"] == EXPECTED["mobilefacenet"]
    assert s["input_size"] == (112, 112) and s["embedding_dim"] == 512
    # 0.875 GFLOPs here = 0.44 GMACs (the unit insightface's flops.py labels "GFLOPs")
    assert 0.8e9 < s["flops"] < 1.0e9
