"""CenterLoss: the loss against the paper's formula, its gradient, and the center update rule."""

import numpy as np
import pytest
import torch

from facemetric.errors import FacemetricError
from facemetric.losses import CenterLoss, L2SoftmaxLoss, build_loss, center_update


def _paper_update(centers: np.ndarray, x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """The paper's eq. 4, written as a loop over classes."""
    out = centers.copy()
    for j in range(len(centers)):
        members = [i for i in range(len(y)) if y[i] == j]
        delta = sum((centers[j] - x[i] for i in members), np.zeros_like(centers[j]))
        out[j] = centers[j] - alpha * delta / (1 + len(members))
    return out


def _batch(seed=0, n=12, d=3, c=5):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randint(0, c - 1, (n,), generator=g),  # class c-1 never appears
    )


def test_center_update_matches_paper_rule():
    x, y = _batch()
    centers = torch.randn(5, 3, dtype=torch.float64)
    got = center_update(centers, x, y, alpha=0.5)
    want = _paper_update(centers.numpy(), x.numpy(), y.numpy(), 0.5)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    # an absent class does not move
    assert torch.equal(got[4], centers[4])


def test_loss_value_is_head_plus_lambda_half_squared_distance():
    x, y = _batch()
    loss = CenterLoss(3, 5, lambda_=0.1, alpha=0.5).double()
    loss.centers.copy_(torch.randn(5, 3, dtype=torch.float64))
    c = loss.centers.numpy()
    head = loss.head(x, y).item()
    center_mean = 0.5 * np.mean(np.sum((x.numpy() - c[y.numpy()]) ** 2, axis=1))
    assert loss(x, y).item() == pytest.approx(head + 0.1 * center_mean, rel=1e-12)
    summed = CenterLoss(3, 5, lambda_=0.1, reduction="sum").double()
    summed.head.load_state_dict(loss.head.state_dict())
    summed.centers.copy_(loss.centers)
    assert summed(x, y).item() == pytest.approx(head + 0.1 * center_mean * len(y), rel=1e-12)


def test_gradient_wrt_features_is_lambda_times_x_minus_c():
    x, y = _batch()
    loss = CenterLoss(3, 5, lambda_=0.3, reduction="sum").double()
    loss.centers.copy_(torch.randn(5, 3, dtype=torch.float64))
    xg = x.clone().requires_grad_(True)
    loss.center_term(xg, y).backward()
    expected = x - loss.centers[y]  # dL_C/dx_i = x_i - c_{y_i}
    torch.testing.assert_close(xg.grad, expected)
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (xg.detach().requires_grad_(True),))


def test_centers_are_not_optimizer_parameters_and_move_only_after_step():
    x, y = _batch()
    loss = CenterLoss(3, 5, alpha=0.5).double()
    names = [n for n, _ in loss.named_parameters()]
    assert all(not n.startswith("centers") for n in names)
    assert "centers" in loss.state_dict()
    before = loss.centers.clone()
    loss(x, y).backward()
    assert torch.equal(loss.centers, before)  # no change during forward/backward
    loss.after_step()
    want = _paper_update(before.numpy(), x.numpy(), y.numpy(), 0.5)
    np.testing.assert_allclose(loss.centers.numpy(), want, atol=1e-12)
    loss.after_step()  # a second call without a new forward is a no-op
    np.testing.assert_allclose(loss.centers.numpy(), want, atol=1e-12)


def test_eval_mode_forward_does_not_update_centers():
    x, y = _batch()
    loss = CenterLoss(3, 5).double().eval()
    loss(x, y)
    loss.after_step()
    assert torch.count_nonzero(loss.centers) == 0


def test_centers_converge_to_class_means_on_fixed_features():
    """Repeating the update on a fixed batch drives each center to its class mean."""
    x, y = _batch(n=40)
    c = torch.zeros(5, 3, dtype=torch.float64)
    for _ in range(200):
        c = center_update(c, x, y, alpha=0.5)
    for j in range(4):
        torch.testing.assert_close(c[j], x[y == j].mean(0))


def test_other_heads_can_be_joined():
    x, y = _batch()
    loss = CenterLoss(3, 5, head="l2-softmax", head_options={"alpha": 8.0}).double()
    assert isinstance(loss.head, L2SoftmaxLoss)
    loss(x, y)
    assert "accuracy" in loss.stats and "center_loss" in loss.stats
    assert isinstance(build_loss("center", embedding_dim=3, num_classes=5), CenterLoss)


def test_bad_arguments():
    with pytest.raises(FacemetricError, match="lambda_"):
        CenterLoss(3, 5, lambda_=-1)
    with pytest.raises(FacemetricError, match="alpha"):
        CenterLoss(3, 5, alpha=2)
    with pytest.raises(FacemetricError, match="reduction"):
        CenterLoss(3, 5, reduction="avg")
