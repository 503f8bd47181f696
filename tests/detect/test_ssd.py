"""SSD assembly: head flattening order matches the priors; artifact round trip."""

from __future__ import annotations

import pytest
import torch

from facemetric.detect.priors import ssd_priors
from facemetric.detect.ssd import (
    SSD_ARCHS,
    SSDInput,
    build_ssd,
    flatten_predictions,
    load_ssd_artifact,
    save_ssd_artifact,
)
from facemetric.errors import ConfigError, FacemetricError


def test_flatten_order_is_caffe_permute_flatten_concat():
    # two maps: [B=1, P*k, H, W]; prior n of source s at cell (i, j), prior p is index ((i*W+j)*P + p)
    a = torch.arange(1 * 2 * 4 * 2 * 3, dtype=torch.float32).view(1, 2 * 4, 2, 3)  # P=2, k=4
    b = torch.arange(1 * 1 * 4 * 1 * 1, dtype=torch.float32).view(1, 4, 1, 1) + 1000  # P=1
    out = flatten_predictions([a, b], 4)
    assert out.shape == (1, 2 * 3 * 2 + 1, 4)
    i, j, p = 1, 2, 1
    torch.testing.assert_close(out[0, (i * 3 + j) * 2 + p], a[0, p * 4 : p * 4 + 4, i, j])
    torch.testing.assert_close(out[0, -1], b[0, :, 0, 0])


def test_tiny_ssd_shapes_and_priors():
    model, pre = build_ssd({"name": "tiny", "input_size": [96, 96], "widths": [8, 8, 16, 16], "extras": [16, 16]})
    assert [s.feature_size for s in model.prior_specs] == [(12, 12), (6, 6), (3, 3), (2, 2)]
    loc, conf = model(torch.zeros(2, 3, 96, 96))
    n = model.priors.shape[0]
    assert n == 4 * (144 + 36 + 9 + 4)
    assert loc.shape == (2, n, 4) and conf.shape == (2, n, 2)
    torch.testing.assert_close(model.priors, ssd_priors(model.prior_specs, (96, 96)))
    assert isinstance(pre, SSDInput) and pre.input_size == (96, 96)
    # the conv at source 0 cell (1, 2) predicts priors 4*(1*12+2) .. +3
    x = torch.randn(1, 3, 96, 96)
    model.eval()
    sources = model.trunk(x)
    raw = model.loc[0](model.norm(sources[0]))
    loc, _ = model(x)
    cell = 1 * 12 + 2
    torch.testing.assert_close(loc[0, cell * 4 + 3], raw[0, 12:16, 1, 2])


def test_artifact_round_trip(tmp_path):
    arch = {"name": "tiny", "input_size": [64, 64], "widths": [8, 8, 8, 8], "extras": [8]}
    model, pre = build_ssd(arch)
    torch.nn.init.normal_(model.conf[0].weight)
    path = save_ssd_artifact(tmp_path / "detector.pt", model, arch, pre, {"num_classes": 2}, {"epochs": 1})
    art = load_ssd_artifact(path)
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    torch.testing.assert_close(art.model(x)[1], model(x)[1])
    assert art.preprocessing == pre and art.meta == {"epochs": 1}
    assert not list(tmp_path.glob("*.tmp*"))
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(FacemetricError, match="bad.pt"):
        load_ssd_artifact(tmp_path / "bad.pt")


def test_preprocessing_and_errors():
    pre = SSDInput((2, 2), colour="bgr", mean=(104.0, 177.0, 123.0), scale=1.0)
    rgb = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(pre.to_tensor(rgb)[0, :, 0, 0], torch.tensor([30 - 104.0, 20 - 177.0, 10 - 123.0]))
    assert "res10" in SSD_ARCHS and "tiny" in SSD_ARCHS
    with pytest.raises(ConfigError, match="model.name"):
        build_ssd({"name": "nope"})
    with pytest.raises(ConfigError, match="bad arguments"):
        build_ssd({"name": "tiny", "depth": 3})
