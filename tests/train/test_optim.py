import pytest
import torch
from torch import nn

from facemetric.errors import ConfigError
from facemetric.train.optim import OPTIMIZERS, build_optimizer, param_groups_no_decay


def _quadratic_loss_after(name, steps=60, **opts):
    torch.manual_seed(0)
    target = torch.tensor([1.0, -2.0, 3.0])
    w = nn.Parameter(torch.zeros(3))
    lr = {"sgd": 0.05, "adagrad": 0.5, "rmsprop": 0.01}.get(name, 0.1)
    opt = build_optimizer(name, [w], lr=lr, **opts)
    start = float(((w.detach() - target) ** 2).sum())
    for _ in range(steps):
        opt.zero_grad()
        loss = ((w - target) ** 2).sum()
        loss.backward()
        opt.step()
    return start, float(((w.detach() - target) ** 2).sum())


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adagrad", "rmsprop"])
def test_each_optimizer_reduces_a_quadratic(name):
    start, end = _quadratic_loss_after(name)
    assert end < 0.25 * start


def test_registry_names():
    assert set(OPTIMIZERS.names()) == {"sgd", "adam", "adamw", "adagrad", "rmsprop"}


def test_sgd_defaults_and_options():
    w = nn.Parameter(torch.zeros(2))
    opt = build_optimizer("SGD", [w], lr=0.1, weight_decay=5e-4)
    assert isinstance(opt, torch.optim.SGD)
    g = opt.param_groups[0]
    assert g["momentum"] == 0.9 and g["nesterov"] is False and g["weight_decay"] == 5e-4
    opt = build_optimizer("sgd", [w], lr=0.1, nesterov=True)
    assert opt.param_groups[0]["nesterov"] is True


def test_rmsprop_facenet_args():
    w = nn.Parameter(torch.zeros(2))
    opt = build_optimizer("rmsprop", [w], lr=0.1, alpha=0.9, momentum=0.9, eps=1.0)
    g = opt.param_groups[0]
    assert (g["alpha"], g["momentum"], g["eps"]) == (0.9, 0.9, 1.0)


def test_adamw_decoupled_decay():
    w = nn.Parameter(torch.ones(1))
    opt = build_optimizer("adamw", [w], lr=0.1, weight_decay=0.5)
    w.grad = torch.zeros(1)
    opt.step()
    # zero gradient: only the decoupled decay acts: w <- w * (1 - lr * wd)
    assert w.item() == pytest.approx(1.0 - 0.1 * 0.5)


def test_errors_are_one_line_config_errors():
    w = nn.Parameter(torch.zeros(2))
    with pytest.raises(ConfigError, match=r"^optimizer\.name: unknown optimizer 'lbfgs'"):
        build_optimizer("lbfgs", [w], lr=0.1)
    with pytest.raises(ConfigError, match=r"^optimizer\.momentum: unknown option for 'adam'"):
        build_optimizer("adam", [w], lr=0.1, momentum=0.9)
    with pytest.raises(ConfigError, match=r"^optimizer\.lr: expected"):
        build_optimizer("sgd", [w], lr=-1)
    with pytest.raises(ConfigError, match=r"^optimizer\.weight_decay: expected"):
        build_optimizer("sgd", [w], lr=0.1, weight_decay="lots")
    with pytest.raises(ConfigError, match=r"^optimizer\.momentum: expected"):
        build_optimizer("sgd", [w], lr=0.1, momentum=1.5)
    with pytest.raises(ConfigError, match=r"^optimizer\.nesterov: requires momentum > 0"):
        build_optimizer("sgd", [w], lr=0.1, momentum=0.0, nesterov=True)
    with pytest.raises(ConfigError, match=r"^optimizer\.betas: expected two numbers"):
        build_optimizer("adam", [w], lr=0.1, betas=0.9)
    with pytest.raises(ConfigError, match=r"^optimizer: there are no trainable parameters"):
        build_optimizer("sgd", [], lr=0.1)
    for exc in (ConfigError,):
        try:
            build_optimizer("adam", [w], lr=0.1, foo=1)
        except exc as e:
            assert "\n" not in str(e)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        self.ln = nn.LayerNorm(2)
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_param_groups_no_decay_excludes_biases_and_norms():
    net = _Net()
    groups = param_groups_no_decay(net, 5e-4)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    decay_ids = {id(p) for p in groups[0]["params"]}
    no_decay_ids = {id(p) for p in groups[1]["params"]}
    assert decay_ids == {id(net.conv.weight), id(net.fc.weight)}
    assert no_decay_ids == {
        id(net.conv.bias), id(net.fc.bias), id(net.bn.weight), id(net.bn.bias),
        id(net.ln.weight), id(net.ln.bias), id(net.scale),
    }
    opt = build_optimizer("sgd", groups, lr=0.1, weight_decay=1.0)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    assert all(g["lr"] == 0.1 for g in opt.param_groups)


def test_no_decay_group_really_not_decayed():
    lin = nn.Linear(3, 3)
    opt = build_optimizer("sgd", param_groups_no_decay(lin, 0.5), lr=1.0, momentum=0.0)
    b0, w0 = lin.bias.detach().clone(), lin.weight.detach().clone()
    lin.weight.grad = torch.zeros_like(lin.weight)
    lin.bias.grad = torch.zeros_like(lin.bias)
    opt.step()
    assert torch.equal(lin.bias, b0)
    assert torch.allclose(lin.weight, w0 * 0.5)


def _zero_grad_step(opt, modules):
    for m in modules:
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
    opt.step()


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_training_optimizer_does_not_decay_scales_biases_or_norms(name):
    """Bug 2: build_experiment passed one flat group, so a zero-gradient step moved alpha."""
    from facemetric.train.config import load_config
    from facemetric.train.experiment import build_experiment

    cfg = load_config(None, [
        "loss.name=l2-softmax", "loss.scale=4.0", "loss.learn_scale=true",
        f"optimizer.name={name}", "optimizer.lr=0.5", "optimizer.weight_decay=0.5",
        "schedule.name=constant", "data.input_size=8",
    ])
    exp = build_experiment(cfg, None, progress=False)
    model, loss = exp.model, exp.loss
    before = {n: p.detach().clone() for n, p in [*model.named_parameters(), *loss.named_parameters()]}
    _zero_grad_step(exp.trainer.optimizer, [model, loss])
    after = dict([*model.named_parameters(), *loss.named_parameters()])
    unchanged = [n for n in before if n == "alpha" or n.endswith("bias") or before[n].ndim <= 1]
    assert "alpha" in unchanged and any(n.endswith("bias") for n in unchanged)
    for n in unchanged:
        assert torch.equal(after[n], before[n]), n
    moved = [n for n in before if before[n].ndim >= 2]
    assert moved and "classifier.weight" in moved  # the class-weight matrix is decayed
    for n in moved:
        assert not torch.equal(after[n], before[n]), n


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_modules_given_to_build_optimizer_are_split_by_the_decay_rule(name):
    from facemetric.losses import build_loss

    net = _Net()
    head = build_loss("arcface", embedding_dim=2, num_classes=3, learn_scale=True)
    opt = build_optimizer(name, [net, head], lr=0.5, weight_decay=0.5)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    kept = [net.bn.weight, net.bn.bias, net.ln.weight, net.conv.bias, net.fc.bias, net.scale, head.scale]
    moved = [net.conv.weight, net.fc.weight, head.weight]
    old_kept = [p.detach().clone() for p in kept]
    old_moved = [p.detach().clone() for p in moved]
    _zero_grad_step(opt, [net, head])
    assert all(torch.equal(p, q) for p, q in zip(kept, old_kept, strict=True))
    assert not any(torch.equal(p, q) for p, q in zip(moved, old_moved, strict=True))
    assert all(net.frozen.weight is not p for g in opt.param_groups for p in g["params"])
