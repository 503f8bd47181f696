"""FCN/HED/FSDS heads: any input size, skip fusion alignment, 1/K fusion, FSDS fusion rule,
receptive fields against the measured support of the gradient."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facemetric.dense.model import DenseNet
from facemetric.dense.trunk import VGGTrunk
from facemetric.errors import ConfigError

SMALL = dict(channels=[4, 6, 8, 8, 8], convs=1, fcn_width=8)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return DenseNet(heads=["fcn", "hed", "fsds", "skel_hed"], **SMALL).eval()


@pytest.mark.parametrize("size", [(150, 150), (37, 53), (64, 96), (33, 33)])
def test_every_output_has_the_input_size(net, size):
    out = net(torch.randn(1, 3, *size))
    assert out["parse"].shape == (1, 3, *size)
    assert out["edge_fuse"].shape == (1, 1, *size) and len(out["edge_sides"]) == 5
    assert [s.shape[1] for s in out["skel_sides"]] == [2, 3, 4, 5]
    assert out["skel_fuse"].shape == (1, 5, *size)


def test_fcn32s_is_bilinear_upsampling_of_the_coarse_score():
    torch.manual_seed(1)
    m = DenseNet(heads=["fcn"], fcn_variant="32s", **SMALL).eval()
    x = torch.randn(1, 3, 96, 128)
    _, pooled = m.trunk(x)
    coarse = m.fcn.score(m.fcn.fc(pooled[-1]))  # stride 32
    want = F.interpolate(coarse, scale_factor=32, mode="bilinear", align_corners=False)
    got = m(x)["parse"]
    assert torch.allclose(got[..., 32:-32, 32:-32], want[..., 32:-32, 32:-32], atol=1e-5)


def test_fcn8s_skips_start_at_zero_and_are_aligned():
    # the new skip score layers start at zero (FCN's init)
    torch.manual_seed(2)
    m8 = DenseNet(heads=["fcn"], fcn_variant="8s", **SMALL).eval()
    for mod in (m8.fcn.score_pool3, m8.fcn.score_pool4):
        assert mod.weight.abs().max() == 0 and mod.bias.abs().max() == 0
    x = torch.randn(1, 3, 64, 64)
    # with a skip switched on, a pool3 cell at stride 8 lands on the input pixels it pools
    with torch.no_grad():
        for mod in (m8.fcn.score, m8.fcn.score_pool4):
            mod.weight.zero_()
            mod.bias.zero_()
        m8.fcn.score_pool3.bias.zero_()
        m8.fcn.score_pool3.weight.fill_(1.0)
    _, pooled = m8.trunk(x)
    s3 = m8.fcn.score_pool3(pooled[2])
    want = F.interpolate(s3, scale_factor=8, mode="bilinear", align_corners=False)
    got = m8(x)["parse"]
    assert torch.allclose(got[..., 8:-8, 8:-8], want[..., 8:-8, 8:-8], atol=1e-4)


def test_hed_fusion_starts_as_the_mean_of_the_sides(net):
    out = net(torch.randn(2, 3, 40, 40))
    mean = torch.stack(out["edge_sides"]).mean(0)
    assert torch.allclose(net.hed.fuse.weight, torch.full_like(net.hed.fuse.weight, 1 / 5))
    assert torch.allclose(out["edge_fuse"], mean, atol=1e-6)


def test_fsds_fusion_is_scale_specific(net):
    head = net.fsds
    # class c (scale c) is fused only from sides i >= c; background from all four
    assert head.fuse_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]
    assert torch.allclose(head.fuse_weight[2], torch.tensor([0, 1 / 3, 1 / 3, 1 / 3]))
    with torch.no_grad():
        head.fuse_weight.copy_(torch.rand_like(head.fuse_weight))
    out = net(torch.randn(1, 3, 32, 32))
    sides, fuse = out["skel_sides"], out["skel_fuse"]
    w = head.fuse_weight
    want3 = w[3, 2] * sides[2][:, 3] + w[3, 3] * sides[3][:, 3]
    assert torch.allclose(fuse[:, 3], want3, atol=1e-6)
    # a masked weight has no gradient path into the output
    fuse[:, 4].sum().backward()
    assert head.fuse_weight.grad[4, :3].abs().max() == 0


def _measured_rf(trunk: VGGTrunk, stage: int, size: int = 201) -> int:
    # positive weights, average pooling (same geometry as max pooling), identity BN: the support
    # of d out[centre] / d input is exactly the receptive field
    trunk = trunk.eval()
    with torch.no_grad():
        for m in trunk.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(0.1)
    trunk.pool = nn.AvgPool2d(2, 2, ceil_mode=True)
    x = torch.ones(1, 3, size, size, requires_grad=True)
    feats, _ = trunk(x)
    f = feats[stage]
    c = f.shape[-1] // 2
    f[0, 0, c, c].backward()
    cols = (x.grad[0].abs().sum(0).sum(0) > 0).nonzero()
    return int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("convs", [2, [1, 1, 2, 2, 2]])
def test_receptive_fields_match_the_gradient_support(convs):
    trunk = VGGTrunk([2, 2, 2, 2, 2], convs)
    rf = trunk.receptive_fields()
    if convs == 2:
        assert rf == [5, 14, 32, 68, 140]
    for s in range(5):
        assert _measured_rf(VGGTrunk([2, 2, 2, 2, 2], convs), s) == rf[s]


def test_bad_options_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="model.heads"):
        DenseNet(heads=["segnet"])
    with pytest.raises(ConfigError, match="model.fcn_variant"):
        DenseNet(fcn_variant="4s")
    with pytest.raises(ConfigError, match="model.fsds_stages"):
        DenseNet(heads=["fsds"], fsds_stages=[3, 2])


def test_flip_tta_is_mirror_equivariant_and_the_mean_of_both_views():
    import numpy as np

    from facemetric.dense.predict import DenseModel, dense_card

    torch.manual_seed(3)
    net = DenseNet(heads=["fcn", "hed"], channels=[4, 6, 8], convs=1, fcn_width=8, hed_stages=[1, 2, 3])
    model = DenseModel(net, dense_card(net, input_size=(32, 32)))
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    a = model.predict_arrays([img], flip=True)[0]
    b = model.predict_arrays([img[:, ::-1].copy()], flip=True)[0]
    assert np.allclose(a["probs"], b["probs"][..., ::-1], atol=1e-5)
    assert np.allclose(a["edges"], b["edges"][:, ::-1], atol=1e-5)
    one = model.predict_arrays([img])[0]["probs"]
    mirror = model.predict_arrays([img[:, ::-1].copy()])[0]["probs"][..., ::-1]
    assert not np.allclose(one, mirror, atol=1e-3)  # the net itself is not mirror-symmetric
