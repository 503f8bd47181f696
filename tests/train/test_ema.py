import copy

import pytest
import torch
from torch import nn

from facemetric.errors import ConfigError
from facemetric.train.ema import ModelEMA


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _train_steps(model, opt, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(8, 3, generator=g)
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
        yield


@pytest.mark.parametrize("use_num_updates", [True, False])
def test_ema_matches_hand_rolled_formula(use_num_updates):
    model = _net()
    decay = 0.8
    ema = ModelEMA(model, decay=decay, use_num_updates=use_num_updates)
    ref = {
        k: v.detach().clone().double() if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for n, _ in enumerate(_train_steps(model, opt, 6), start=1):
        ema.update(model)
        d = min(decay, (1 + n) / (10 + n)) if use_num_updates else decay
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                ref[k] = d * ref[k] + (1 - d) * v.double()
            else:
                ref[k] = v.clone()
    assert ema.num_updates == 6
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v.double(), ref[k], atol=1e-6), k
        else:
            assert torch.equal(v, ref[k]), k
    bn_count = ema.module.state_dict()["1.num_batches_tracked"]
    assert bn_count.item() == 6 and bn_count.dtype == torch.long


def test_num_updates_warmup_dominates_early():
    ema = ModelEMA(nn.Linear(2, 2), decay=0.9999)
    assert ema.current_decay(1) == pytest.approx(2 / 11)
    assert ema.current_decay(10**7) == pytest.approx(0.9999)
    assert ModelEMA(nn.Linear(2, 2), decay=0.9, use_num_updates=False).current_decay(1) == 0.9


def test_decay_zero_tracks_model_and_one_freezes():
    model = _net()
    frozen = ModelEMA(model, decay=1.0, use_num_updates=False)
    follow = ModelEMA(model, decay=0.0)
    w0 = model[0].weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in _train_steps(model, opt, 2):
        frozen.update(model)
        follow.update(model)
    assert torch.equal(frozen.module[0].weight, w0)
    assert torch.equal(follow.module[0].weight, model[0].weight)


def test_swapped_restores_originals_and_copy_to():
    model = _net()
    ema = ModelEMA(model, decay=0.5, use_num_updates=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in _train_steps(model, opt, 3):
        ema.update(model)
    original = copy.deepcopy(model.state_dict())
    param_ids = [id(p) for p in model.parameters()]
    assert not torch.equal(original["0.weight"], ema.module.state_dict()["0.weight"])
    with ema.swapped(model) as m:
        assert m is model
        for k, v in model.state_dict().items():
            assert torch.equal(v, ema.module.state_dict()[k])
    for k, v in model.state_dict().items():
        assert torch.equal(v, original[k])
    assert [id(p) for p in model.parameters()] == param_ids
    with pytest.raises(RuntimeError), ema.swapped(model):
        raise RuntimeError("boom")
    assert torch.equal(model.state_dict()["0.weight"], original["0.weight"])
    other = _net()
    ema.copy_to(other)
    assert torch.equal(other[2].weight, ema.module[2].weight)


def test_state_dict_round_trip(tmp_path):
    model = _net()
    ema = ModelEMA(model, decay=0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in _train_steps(model, opt, 4):
        ema.update(model)
    path = tmp_path / "ema.pt"
    torch.save(ema.state_dict(), path)
    restored = ModelEMA(_net(), decay=0.9)
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert restored.num_updates == 4
    for k, v in ema.module.state_dict().items():
        assert torch.equal(restored.module.state_dict()[k], v)
    # both continue identically
    for _ in _train_steps(model, opt, 2, seed=7):
        ema.update(model)
        restored.update(model)
    for k, v in ema.module.state_dict().items():
        assert torch.equal(restored.module.state_dict()[k], v)


def test_module_is_independent_and_frozen():
    model = _net()
    ema = ModelEMA(model)
    assert ema.module is not model
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(ema.module[0].weight, model[0].weight)
    assert ema.module(torch.randn(2, 3)).shape == (2, 2)


def test_bad_decay():
    with pytest.raises(ConfigError, match="ema_decay"):
        ModelEMA(nn.Linear(1, 1), decay=1.5)
