"""Normalised-softmax heads (NormFace, SphereFace, CosFace, ArcFace, combined, sub-center,
AdaFace, MagFace): logits, loss and gradients against independent float64 formulas (including
theta near 0 and pi), finite differences, low-precision autocast, pytorch-metric-learning
parity, and the heads' own state (annealing, running norm statistics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facemetric.errors import FacemetricError
from facemetric.losses import (
    AdaFaceLoss,
    ArcFaceLoss,
    CombinedMarginLoss,
    CosFaceLoss,
    SphereFaceLoss,
    alpha_lower_bound,
    build_loss,
)
from tests.losses.margin_reference import reference_logits, reference_loss

D, C = 6, 7

# (registry name, constructor options, extra reference parameters)
CASES = {
    "normface": ("normface", {"scale": 7.0}, {}),
    "cosface": ("cosface", {"scale": 30.0, "margin": 0.35}, {}),
    "arcface": ("arcface", {"scale": 30.0, "margin": 0.5}, {}),
    "subcenter-arcface": ("subcenter-arcface", {"scale": 30.0, "margin": 0.5, "sub_centers": 3}, {}),
    "combined": ("combined-margin", {"scale": 30.0, "m1": 1.0, "m2": 0.3, "m3": 0.2}, {}),
    "combined-m1=2": ("combined-margin", {"scale": 20.0, "m1": 2.0, "m2": 0.3, "m3": 0.2}, {}),
    "sphereface": ("sphereface", {"margin": 4, "base": 0.0, "lambda_min": 0.0}, {"lambda_": 0.0}),
    "sphereface-m3": ("sphereface", {"margin": 3, "base": 0.0, "lambda_min": 0.0}, {"lambda_": 0.0}),
    "sphereface-annealed": ("sphereface", {"margin": 4, "lambda_min": 5.0}, {"lambda_": 1000.0}),
    "magface": (
        "magface",
        {"scale": 30.0, "l_a": 10.0, "u_a": 110.0, "l_m": 0.45, "u_m": 0.8, "lambda_g": 35.0},
        {},
    ),
    "adaface": ("adaface", {"scale": 30.0, "margin": 0.4, "h": 0.333}, {"mu": 30.0, "sigma": 20.0}),
}


def _perpendicular(v: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    r = torch.randn(v.shape, generator=g, dtype=v.dtype)
    r = r - (r @ v) / (v @ v) * v
    return r / r.norm()


def _head_and_batch(case: str, dtype=torch.float64, seed: int = 0):
    """A head with random weights and a batch that visits every regime of the target function:
    random angles, theta ~ 1e-3 and 1e-4 (near 0), theta ~ pi - 1e-3 (near pi), theta just past
    pi - m (ArcFace's fallback), feature norms from 3 to 150 (MagFace's clamps, AdaFace's z)."""
    name, opts, extra = CASES[case]
    head = build_loss(name, embedding_dim=D, num_classes=C, **opts).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g, dtype=dtype))
    k = getattr(head, "sub_centers", 1)
    w = F.normalize(head.weight.detach(), dim=1)
    n = 14
    y = torch.randint(0, C, (n,), generator=g)
    dirs = F.normalize(torch.randn(n, D, generator=g, dtype=dtype), dim=1)
    special = {0: 1e-3, 1: 1e-4, 2: math.pi - 1e-3, 3: math.pi - 0.5 + 0.05, 4: math.pi - 0.5 - 0.05, 5: 0.7}
    for i, angle in special.items():
        wy = w[y[i] * k]  # sub-center 0 of the class: the closest one at these angles
        dirs[i] = math.cos(angle) * wy + math.sin(angle) * _perpendicular(wy, g)
    norms = torch.tensor([3, 8, 15, 25, 30, 45, 60, 80, 100, 120, 150, 12, 33, 5], dtype=dtype)
    x = dirs * norms[:, None]
    params = {**opts, **extra}
    if name == "adaface":
        head.eval()  # keep the running statistics fixed at mu, sigma for the formula check
        head.batch_mean.fill_(extra["mu"])
        head.batch_std.fill_(extra["sigma"])
    if case == "sphereface-annealed":
        assert head.lambda_ == pytest.approx(1000.0)
    return head, x, y, params


@pytest.mark.parametrize("case", list(CASES))
def test_logits_and_loss_equal_the_formula_in_float64(case):
    head, x, y, p = _head_and_batch(case)
    name = CASES[case][0]
    want = reference_logits(name, x, head.weight.detach(), y, **p)
    torch.testing.assert_close(head.logits(x, y), want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(head(x, y), reference_loss(name, x, head.weight.detach(), y, **p), rtol=1e-10, atol=1e-12)
    # margin-free logits for prediction
    plain = head.logits(x)
    cos = reference_logits("normface", x, head.weight.detach(), y, scale=1.0, sub_centers=p.get("sub_centers", 1))
    scale = x.norm(dim=1, keepdim=True) if name == "sphereface" else p["scale"]
    torch.testing.assert_close(plain, scale * cos, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_equal_the_formulas_gradients_in_float64(case):
    head, x, y, p = _head_and_batch(case)
    name = CASES[case][0]
    xa = x.clone().requires_grad_(True)
    head(xa, y).backward()
    xr = x.clone().requires_grad_(True)
    wr = head.weight.detach().clone().requires_grad_(True)
    reference_loss(name, xr, wr, y, **p).backward()
    torch.testing.assert_close(xa.grad, xr.grad, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(head.weight.grad, wr.grad, rtol=1e-7, atol=1e-10)


# AdaFace is left out on purpose: its margin depends on the DETACHED norm (the paper's
# stop-gradient), so finite differences see a dependence that autograd rightly ignores; its
# gradient is checked against the formula (with the same stop-gradient) above.
@pytest.mark.parametrize("case", ["normface", "cosface", "arcface", "subcenter-arcface", "combined-m1=2", "sphereface", "magface"])
def test_gradients_match_finite_differences(case):
    head, x, y, _ = _head_and_batch(case)
    # away from the piecewise switch points (rows 3, 4 lie 0.05 rad from ArcFace's) finite
    # differences are valid; keep the near-0 and near-pi rows
    keep = torch.tensor([0, 1, 2, 5, 6, 7, 8, 9])
    x, y = x[keep].clone().requires_grad_(True), y[keep]
    weight = head.weight.detach().clone().requires_grad_(True)

    def f(xx, ww):
        with torch.no_grad():
            head.weight.copy_(ww.detach())
        return torch.func.functional_call(head, {"weight": ww}, (xx, y))

    assert torch.autograd.gradcheck(f, (x, weight), eps=1e-7, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", ["arcface", "cosface", "combined", "sphereface", "magface", "adaface", "subcenter-arcface"])
def test_float32_gradients_stay_accurate_near_zero_and_pi(case):
    """float32 logits and gradients agree with the float64 formula at theta ~ 1e-4 and ~pi:
    the angle comes from the vectors, not from acos of a cosine that has rounded to +-1."""
    head64, x, y, p = _head_and_batch(case)
    name = CASES[case][0]
    head32 = build_loss(name, embedding_dim=D, num_classes=C, **CASES[case][1])
    head32.load_state_dict({k: v.float() for k, v in head64.state_dict().items()})
    head32.train(head64.training)
    rows = torch.tensor([0, 1, 2])
    x, y = x[rows], y[rows]
    x32 = x.float().requires_grad_(True)
    head32(x32, y).backward()
    xr = x.clone().requires_grad_(True)
    reference_loss(name, xr, head64.weight.detach(), y, **p).backward()
    err = (x32.grad.double() - xr.grad).norm(dim=1)
    assert torch.all(err <= 1e-3 * xr.grad.norm(dim=1) + 1e-6), (err, xr.grad.norm(dim=1))
    torch.testing.assert_close(head32.logits(x.float(), y).double(), reference_logits(name, x, head64.weight.detach(), y, **p), rtol=1e-4, atol=1e-3)


def _extreme_batch(head, g):
    """Features exactly on (+) and opposite (-) their class weights, with huge and tiny norms."""
    k = getattr(head, "sub_centers", 1)
    y = torch.arange(8) % C
    w = head.weight.detach()[y * k].float()
    sign = torch.tensor([1, -1, 1, -1, 1, -1, 1, -1], dtype=torch.float32)[:, None]
    norms = torch.tensor([1e-3, 1e-3, 1.0, 1.0, 50.0, 50.0, 3e4, 3e4])[:, None]
    x = sign * F.normalize(w, dim=1) * norms
    return torch.cat([x, torch.randn(8, D, generator=g) * 40]), torch.cat([y, y])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", list(CASES))
def test_no_nan_or_inf_under_low_precision_autocast(case, dtype):
    name, opts, _ = CASES[case]
    head = build_loss(name, embedding_dim=D, num_classes=C, **opts)
    g = torch.Generator().manual_seed(1)
    x, y = _extreme_batch(head, g)
    proj = torch.nn.Linear(D, D)
    with torch.no_grad():  # identity projection: the autocast output keeps the extreme geometry
        proj.weight.copy_(torch.eye(D))
        proj.bias.zero_()
    with torch.autocast("cpu", dtype=dtype):
        emb = proj(x)
        assert emb.dtype == dtype
        loss = head(emb, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    for p in [*proj.parameters(), *head.parameters()]:
        assert torch.isfinite(p.grad).all()
    # and with low-precision inputs outside autocast
    xl = x.to(dtype).requires_grad_(True)
    loss = head(xl, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(xl.grad).all()


def test_combined_margin_special_cases_are_arcface_and_cosface():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(20, D, generator=g, dtype=torch.float64) * 5, torch.randint(0, C, (20,), generator=g)
    arc = ArcFaceLoss(D, C, margin=0.5, scale=64.0).double()
    cos = CosFaceLoss(D, C, margin=0.35, scale=64.0).double()
    as_arc = CombinedMarginLoss(D, C, m1=1.0, m2=0.5, m3=0.0, scale=64.0).double()
    as_cos = CombinedMarginLoss(D, C, m1=1.0, m2=0.0, m3=0.35, scale=64.0).double()
    as_arc.load_state_dict(arc.state_dict())
    as_cos.load_state_dict(cos.state_dict())
    torch.testing.assert_close(as_arc.logits(x, y), arc.logits(x, y), rtol=0, atol=1e-12)
    torch.testing.assert_close(as_cos.logits(x, y), cos.logits(x, y), rtol=0, atol=1e-12)


def test_arcface_target_is_monotonic_and_easy_margin():
    from facemetric.losses import arcface_target

    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    f = arcface_target(theta, 0.5)
    assert torch.all(f[1:] <= f[:-1])  # decreasing over [0, pi], including past pi - m
    easy = arcface_target(theta, 0.5, easy_margin=True)
    torch.testing.assert_close(easy[theta >= math.pi / 2], torch.cos(theta[theta >= math.pi / 2]))
    torch.testing.assert_close(easy[theta < math.pi / 2], torch.cos(theta[theta < math.pi / 2] + 0.5))


def test_sphereface_psi_is_monotonic():
    from facemetric.losses import sphereface_psi

    theta = torch.linspace(0, math.pi, 4001, dtype=torch.float64)
    for m in (1, 2, 3, 4):
        psi = sphereface_psi(theta, m)
        assert torch.all(psi[1:] <= psi[:-1] + 1e-12), m
        assert psi[0] == pytest.approx(1.0) and psi[-1] == pytest.approx(1 - 2 * m)


def test_automatic_scale_is_the_l2_softmax_bound_over_f0():
    low = alpha_lower_bound(100, 0.9)
    assert build_loss("normface", embedding_dim=4, num_classes=100).scale.item() == pytest.approx(low, rel=1e-6)
    assert ArcFaceLoss(4, 100).scale.item() == pytest.approx(low / math.cos(0.5), rel=1e-6)
    assert CosFaceLoss(4, 100, margin=0.35).scale.item() == pytest.approx(low / 0.65, rel=1e-6)
    assert build_loss("magface", embedding_dim=4, num_classes=100).scale.item() == pytest.approx(low / math.cos(0.8), rel=1e-6)
    assert ArcFaceLoss(4, 100, scale=64).scale.item() == 64.0
    learned = ArcFaceLoss(4, 100, scale=30, learn_scale=True)
    assert isinstance(learned.scale, torch.nn.Parameter)
    x, y = torch.randn(8, 4), torch.randint(0, 100, (8,))
    learned(x, y).backward()
    assert learned.scale.grad is not None and learned.scale.grad != 0


def test_sphereface_lambda_annealing_follows_the_schedule_and_is_state():
    head = SphereFaceLoss(D, C, base=1000.0, gamma=0.12, power=1.0, lambda_min=5.0)
    x, y = torch.randn(8, D), torch.randint(0, C, (8,))
    assert head.lambda_ == 1000.0
    head.after_step()  # no training forward yet: nothing to count
    assert int(head.iteration) == 0
    for _ in range(3):
        head(x, y)
        head.after_step()
    assert head.lambda_ == pytest.approx(1000.0 / (1 + 0.12 * 3))
    assert head.stats["lambda"] == pytest.approx(1000.0 / (1 + 0.12 * 2))  # lambda used by the 3rd step
    head.eval()
    head(x, y)
    head.after_step()
    assert int(head.iteration) == 3  # evaluation does not advance the schedule
    head.iteration.fill_(10**6)
    assert head.lambda_ == 5.0  # floor
    clone = SphereFaceLoss(D, C)
    clone.load_state_dict(head.state_dict())
    assert int(clone.iteration) == 10**6


def test_adaface_running_norm_statistics():
    head = AdaFaceLoss(D, C, scale=30.0, t_alpha=0.01)
    x = torch.randn(16, D) * 10
    y = torch.randint(0, C, (16,))
    norms = x.norm(dim=1).clamp(0.001, 100)
    head(x, y)
    assert head.batch_mean.item() == pytest.approx(0.99 * 20 + 0.01 * norms.mean().item(), rel=1e-6)
    assert head.batch_std.item() == pytest.approx(0.99 * 100 + 0.01 * norms.std().item(), rel=1e-6)
    head.eval()
    before = head.batch_mean.clone()
    head(x, y)
    assert torch.equal(head.batch_mean, before)


def test_magface_margin_is_linear_in_the_clamped_magnitude():
    head = build_loss("magface", embedding_dim=D, num_classes=C, scale=64.0)
    a = torch.tensor([1.0, 10.0, 60.0, 110.0, 500.0])
    want = torch.tensor([0.45, 0.45, 0.45 + 0.35 * 0.5, 0.8, 0.8])
    torch.testing.assert_close(head.margin_of(a), want)


def test_subcenter_dominant_centers():
    head = build_loss("subcenter-arcface", embedding_dim=D, num_classes=C, scale=64.0, sub_centers=3)
    w = F.normalize(head.weight.detach(), dim=1).view(C, 3, D)
    y = torch.tensor([0, 0, 0, 1])
    x = torch.stack([w[0, 2], w[0, 2] + 0.01 * w[0, 1], w[0, 1], w[1, 0]])
    dominant, angle = head.dominant_centers(x, y)
    assert dominant[0] == 2 and dominant[1] == 0 and dominant[2] == -1
    assert angle[0] < 1e-2 and angle[2] > 1.0


@pytest.mark.parametrize("case", ["normface", "cosface", "arcface", "combined", "sphereface", "subcenter-arcface", "magface", "adaface"])
def test_a_few_steps_improve_classification(case):
    name, opts, _ = CASES[case]
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(C, 16, generator=g) * 2
    y = torch.randint(0, C, (256,), generator=g)
    data = centers[y] + torch.randn(256, 16, generator=g)
    net = torch.nn.Linear(16, D)
    head = build_loss(name, embedding_dim=D, num_classes=C, **opts)
    opt = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.05, momentum=0.9)
    with torch.no_grad():
        before = (head.predict(net(data)) == y).float().mean().item()
    for _ in range(60):
        opt.zero_grad()
        head(net(data), y).backward()
        torch.nn.utils.clip_grad_norm_([*net.parameters(), *head.parameters()], 5.0)
        opt.step()
        head.after_step()
    with torch.no_grad():
        after = (head.predict(net(data)) == y).float().mean().item()
    assert after > max(before + 0.2, 0.7), (before, after)


@pytest.mark.parametrize(
    "name,opts",
    [
        ("arcface", {"margin": 1.7}),
        ("cosface", {"margin": -0.1}),
        ("sphereface", {"margin": 2.5}),
        ("combined-margin", {"m1": 0.5}),
        ("subcenter-arcface", {"sub_centers": 1}),
        ("magface", {"l_a": 20.0, "u_a": 10.0}),
        ("adaface", {"h": 0.0}),
        ("arcface", {"scale": -1.0}),
        ("arcface", {"scale": "big"}),
    ],
)
def test_bad_options_are_clear_errors(name, opts):
    with pytest.raises(FacemetricError, match=r"^\w"):
        build_loss(name, embedding_dim=D, num_classes=C, **opts)


def test_bad_inputs_are_clear_errors():
    head = ArcFaceLoss(D, C, scale=64.0)
    with pytest.raises(FacemetricError, match="labels: values must lie"):
        head(torch.randn(4, D), torch.tensor([0, 1, 2, C]))
    with pytest.raises(FacemetricError, match="expected dimension"):
        head(torch.randn(4, D + 1), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(FacemetricError, match="NaN"):
        head(torch.full((4, D), float("nan")), torch.tensor([0, 1, 2, 3]))


# -- pytorch-metric-learning parity ------------------------------------------------------------

PML = {
    "arcface": ("ArcFaceLoss", {"margin": 0.5, "scale": 64.0}, {"margin": float(np.degrees(0.5)), "scale": 64.0}),
    "cosface": ("CosFaceLoss", {"margin": 0.35, "scale": 64.0}, {"margin": 0.35, "scale": 64.0}),
    "sphereface": ("SphereFaceLoss", {"margin": 4, "base": 0.0, "lambda_min": 0.0}, {"margin": 4}),
    "normface": ("NormalizedSoftmaxLoss", {"scale": 20.0}, {"temperature": 0.05}),
    "subcenter-arcface": (
        "SubCenterArcFaceLoss",
        {"margin": 0.5, "scale": 64.0, "sub_centers": 3},
        {"margin": float(np.degrees(0.5)), "scale": 64.0, "sub_centers": 3},
    ),
}


@pytest.mark.parametrize("name", list(PML))
def test_equal_to_pytorch_metric_learning_for_equal_weights(name):
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses", reason="pytorch-metric-learning not installed")
    cls, ours_opts, pml_opts = PML[name]
    d, c = 16, 40
    ours = build_loss(name, embedding_dim=d, num_classes=c, **ours_opts).double()
    theirs = getattr(pml_losses, cls)(num_classes=c, embedding_size=d, **pml_opts).double()
    with torch.no_grad():
        theirs.W.copy_(ours.weight.t())
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, d, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, c, (64,), generator=g)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    la, lb = ours(xa, y), theirs(xb, y)
    assert la.item() == pytest.approx(lb.item(), rel=1e-9)
    la.backward()
    lb.backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(ours.weight.grad, theirs.W.grad.t(), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", ["softmax", "l2-softmax", "center", "arcface", "subcenter-arcface", "cosface"])
def test_class_mean_initialisation_classifies_by_nearest_mean(name):
    """Weight imprinting: after ``init_from_class_means`` the margin-free prediction is the
    class whose mean is nearest (Euclidean for softmax/center's softmax head, cosine else)."""
    g = torch.Generator().manual_seed(0)
    means = torch.randn(C, D, generator=g, dtype=torch.float64) * 3
    loss = build_loss(name, embedding_dim=D, num_classes=C).double()
    loss.init_from_class_means(means)
    x = torch.randn(200, D, generator=g, dtype=torch.float64) * 3
    if name in ("softmax", "center"):
        want = torch.cdist(x, means).argmin(1)
    else:
        want = (F.normalize(x, dim=1) @ F.normalize(means, dim=1).t()).argmax(1)
    head = loss.head if name == "center" else loss
    assert torch.equal(head.predict(x), want)
    if name == "center":
        assert torch.equal(loss.centers, means)
