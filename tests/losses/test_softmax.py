"""SoftmaxLoss and L2SoftmaxLoss against their formulas computed independently (float64)."""

import math

import numpy as np
import pytest
import torch

from facemetric.errors import FacemetricError
from facemetric.losses import L2SoftmaxLoss, SoftmaxLoss, alpha_lower_bound, build_loss


def _np_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 6, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 7, (16,), generator=g)
    return x, y


def test_softmax_equals_formula(batch):
    x, y = batch
    loss = SoftmaxLoss(6, 7).double()
    W = loss.classifier.weight.detach().numpy()
    b = loss.classifier.bias.detach().numpy()
    expected = _np_cross_entropy(x.numpy() @ W.T + b, y.numpy())
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-12)


def test_l2_softmax_equals_formula(batch):
    x, y = batch
    loss = L2SoftmaxLoss(6, 7, alpha=12.5).double()
    W = loss.classifier.weight.detach().numpy()
    b = loss.classifier.bias.detach().numpy()
    xn = x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True)
    expected = _np_cross_entropy(12.5 * xn @ W.T + b, y.numpy())
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-12)
    assert loss.stats["feature_norm"] == pytest.approx(float(x.norm(dim=1).mean()), rel=1e-6)
    # invariant to the scale of the input feature (only its direction matters)
    assert loss(x * 7.0, y).item() == pytest.approx(expected, rel=1e-12)


def test_alpha_lower_bound_formula():
    assert alpha_lower_bound(10, 0.9) == pytest.approx(math.log(0.9 * 8 / 0.1))
    assert alpha_lower_bound(10000, 0.9) == pytest.approx(11.4074, abs=1e-4)
    with pytest.raises(FacemetricError, match="num_classes"):
        alpha_lower_bound(2)
    with pytest.raises(FacemetricError, match="p:"):
        alpha_lower_bound(10, 1.0)


def test_alpha_lower_bound_reaches_probability_p():
    """The bound solves the paper's condition p = e^a / (e^a + (C - 2)) for a."""
    C, p = 50, 0.9
    a = alpha_lower_bound(C, p)
    assert math.exp(a) / (math.exp(a) + (C - 2)) == pytest.approx(p)


def test_l2_softmax_auto_and_learned_alpha(batch):
    x, y = batch
    auto = L2SoftmaxLoss(6, 7, alpha="auto", p=0.9)
    assert float(auto.alpha) == pytest.approx(alpha_lower_bound(7, 0.9), rel=1e-6)
    assert "alpha" not in dict(auto.named_parameters())  # fixed: a buffer, not trained
    learned = L2SoftmaxLoss(6, 7, alpha=4.0, learn_alpha=True).double()
    assert "alpha" in dict(learned.named_parameters())
    learned(x, y).backward()
    assert learned.alpha.grad is not None and learned.alpha.grad.abs() > 0
    # gradient w.r.t. alpha equals a finite difference of the loss
    eps = 1e-6
    with torch.no_grad():
        learned.alpha += eps
        up = learned(x, y).item()
        learned.alpha -= 2 * eps
        down = learned(x, y).item()
        learned.alpha += eps
    assert learned.alpha.grad.item() == pytest.approx((up - down) / (2 * eps), rel=1e-5)
    assert "alpha" in learned.state_dict() and "alpha" in auto.state_dict()


@pytest.mark.parametrize("name", ["softmax", "l2-softmax"])
def test_gradcheck(name, batch):
    x, y = batch
    loss = build_loss(name, embedding_dim=6, num_classes=7).double()
    x = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,))


@pytest.mark.parametrize("name", ["softmax", "l2-softmax", "center"])
def test_bad_input_is_one_clear_line(name):
    loss = build_loss(name, embedding_dim=4, num_classes=3)
    x = torch.randn(5, 4)
    cases = [
        (torch.randn(5), torch.zeros(5, dtype=torch.long), "embeddings: expected a 2-D"),
        (torch.randn(5, 3), torch.zeros(5, dtype=torch.long), "expected dimension 4"),
        (x, torch.zeros(4, dtype=torch.long), "does not match"),
        (x, torch.zeros(5), "integer tensor"),
        (x, torch.tensor([0, 1, 2, 3, 0]), r"labels: values must lie in \[0, 3\)"),
        (x, torch.tensor([0, 1, -1, 0, 0]), "labels: values must lie"),
        (torch.full((5, 4), float("nan")), torch.zeros(5, dtype=torch.long), "NaN or inf"),
        (torch.empty(0, 4), torch.empty(0, dtype=torch.long), "empty"),
    ]
    for emb, lab, msg in cases:
        with pytest.raises(FacemetricError, match=msg) as info:
            loss(emb, lab)
        assert "\n" not in str(info.value)


def test_bad_constructor_arguments():
    with pytest.raises(FacemetricError, match="alpha"):
        L2SoftmaxLoss(4, 10, alpha=-1.0)
    with pytest.raises(FacemetricError, match="alpha"):
        L2SoftmaxLoss(4, 10, alpha="big")
    with pytest.raises(FacemetricError, match="num_classes"):
        SoftmaxLoss(4, 1)
