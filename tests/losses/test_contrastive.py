"""ContrastiveLoss against a plain loop reference and finite differences; the vocabulary."""

import math
import warnings

import pytest
import torch

from facemetric.distances import CosineSimilarity, SquaredL2Distance
from facemetric.errors import ConfigError, FacemetricError
from facemetric.losses import (
    LOSSES,
    CenterLoss,
    ContrastiveLoss,
    L2SoftmaxLoss,
    PairMarginMiner,
    SemiHardMiner,
    build_loss,
)


def _batch(seed, people=4, images=3, dim=5):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(people).repeat_interleave(images)
    centres = torch.randn(people, dim, generator=g, dtype=torch.float64)
    return centres[y] + 0.8 * torch.randn(len(y), dim, generator=g, dtype=torch.float64), y


def _reference(x, y, margin=1.0, pos_margin=0.0, power=2, normalize=True):
    """Hadsell et al. eq. 4 over all ordered pairs, divided by the number of pairs."""
    if normalize:
        x = x / x.norm(dim=1, keepdim=True)
    x = x.tolist()
    total, count = 0.0, 0
    for i in range(len(y)):
        for j in range(len(y)):
            if i == j:
                continue
            dist = math.sqrt(sum((u - v) ** 2 for u, v in zip(x[i], x[j], strict=True)))
            h = max(0.0, dist - pos_margin) if y[i] == y[j] else max(0.0, margin - dist)
            total += 0.5 * h * h if power == 2 else h
            count += 1
    return total / count


@pytest.mark.parametrize("margin,pos_margin,power", [(1.0, 0.0, 2), (1.3, 0.2, 2), (0.9, 0.1, 1)])
@pytest.mark.parametrize("normalize", [True, False])
def test_value_matches_loop_reference(margin, pos_margin, power, normalize):
    x, y = _batch(0)
    if not normalize:
        x = x / 3
    loss = ContrastiveLoss(margin=margin, pos_margin=pos_margin, power=power, normalize=normalize)
    got = loss(x, y).item()
    want = _reference(x, y.tolist(), margin, pos_margin, power, normalize)
    assert got == pytest.approx(want, rel=1e-12)
    assert loss.stats["num_pos_pairs"] == 4 * 3 * 2 and loss.stats["num_neg_pairs"] == 12 * 9
    assert 0 < loss.stats["active_neg_pairs"] < loss.stats["num_neg_pairs"]


@pytest.mark.parametrize("power", [1, 2])
def test_gradient_matches_finite_differences(power):
    x, y = _batch(1)
    loss = ContrastiveLoss(margin=1.2, pos_margin=0.1, power=power)
    d = loss.distance.pairwise(x).detach()
    off = ~torch.eye(len(y), dtype=torch.bool)
    assert ((d - 1.2).abs()[off] > 1e-3).all() and ((d - 0.1).abs()[off] > 1e-3).all()  # no kinks
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (xg,), eps=1e-6, atol=1e-7)


def test_indices_tuple_pairs_and_triplets():
    x, y = _batch(2)
    loss = ContrastiveLoss()
    a1, p, a2, n = torch.tensor([0, 3]), torch.tensor([1, 4]), torch.tensor([0, 5]), torch.tensor([6, 9])
    d = loss.distance.pairwise(x).detach()
    want = (0.5 * d[a1, p].pow(2).sum() + 0.5 * torch.relu(1.0 - d[a2, n]).pow(2).sum()) / 4
    assert loss(x, y, indices_tuple=(a1, p, a2, n)).item() == pytest.approx(want.item(), rel=1e-12)
    # a triplet (a, p, n) is the pairs (a, p) and (a, n)
    trip = (torch.tensor([0, 3]), torch.tensor([1, 4]), torch.tensor([6, 9]))
    pairs = (trip[0], trip[1], trip[0], trip[2])
    assert loss(x, y, indices_tuple=trip).item() == loss(x, y, indices_tuple=pairs).item()
    with pytest.raises(FacemetricError, match="indices_tuple"):
        loss(x, y, indices_tuple=(a1, p))


def test_miners_distances_and_registry():
    x, y = _batch(3)
    # the pair-margin miner drops exactly the zero terms: same sum, fewer pairs
    every = ContrastiveLoss(margin=1.0)
    mined = ContrastiveLoss(margin=1.0, miner="pair-margin")
    assert isinstance(mined.miner, PairMarginMiner) and mined.miner.neg_margin == 1.0
    v_all, v_mined = every(x, y).item(), mined(x, y).item()
    n_all = every.stats["num_pos_pairs"] + every.stats["num_neg_pairs"]
    n_mined = mined.stats["num_pos_pairs"] + mined.stats["num_neg_pairs"]
    assert n_mined < n_all and v_mined * n_mined == pytest.approx(v_all * n_all, rel=1e-12)
    # a triplet miner feeds its triplets as pairs
    with_triplets = ContrastiveLoss(miner=SemiHardMiner(margin=0.2, distance=SquaredL2Distance()))
    with_triplets(x, y)
    assert with_triplets.stats["num_pos_pairs"] == with_triplets.stats["num_neg_pairs"] > 0
    # cosine similarity: positives pay for s < pos_margin, negatives for s > margin
    cos = ContrastiveLoss(distance="cosine", pos_margin=0.9, margin=0.3)
    s = CosineSimilarity().pairwise(x).detach()
    same = y[:, None] == y[None, :]
    off = ~torch.eye(len(y), dtype=torch.bool)
    terms = torch.where(same, 0.5 * torch.relu(0.9 - s) ** 2, 0.5 * torch.relu(s - 0.3) ** 2)
    assert cos(x, y).item() == pytest.approx(terms[off].mean().item(), rel=1e-12)
    # by name, as a recipe builds it
    assert "contrastive" in LOSSES
    built = build_loss("contrastive", embedding_dim=5, num_classes=4, margin=0.8,
                       miner={"name": "pair-margin", "neg_margin": 0.5})
    assert built.miner.neg_margin == 0.5 and built.margin == 0.8
    assert built(x.float(), y).ndim == 0
    with pytest.raises(ConfigError):
        build_loss("contrastive", embedding_dim=5, num_classes=4, power=3)
    with pytest.raises(ConfigError, match="miner"):
        build_loss("contrastive", embedding_dim=5, num_classes=4, miner="nope")


def test_no_pairs_gives_zero_with_zero_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    loss = ContrastiveLoss(miner="pair-margin", pos_margin=5.0, margin=0.0)
    value = loss(x, torch.tensor([0, 0, 1]))
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


# --------------------------------------------------------------------------- vocabulary
def test_deprecated_aliases_still_work_and_warn():
    with pytest.warns(DeprecationWarning, match="'alpha' is deprecated, use 'scale'"):
        old = L2SoftmaxLoss(6, 7, alpha=4.0, learn_alpha=True)
    new = L2SoftmaxLoss(6, 7, scale=4.0, learn_scale=True)
    assert float(old.scale) == float(new.scale) == 4.0
    assert old.learn_scale and new.learn_scale and "alpha" in dict(new.named_parameters())
    assert float(L2SoftmaxLoss(6, 7).scale) == float(L2SoftmaxLoss(6, 7, scale="auto").scale)
    with pytest.warns(DeprecationWarning, match="use 'center_lr'"):
        old_c = CenterLoss(3, 5, alpha=0.25)
    assert old_c.center_lr == CenterLoss(3, 5, center_lr=0.25).center_lr == 0.25
    assert old_c.alpha == 0.25 and CenterLoss(3, 5).center_lr == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names do not warn
        build_loss("l2-softmax", embedding_dim=3, num_classes=5, scale=2.0)
        build_loss("center", embedding_dim=3, num_classes=5, lambda_=0.1, center_lr=0.3)
    with pytest.raises(FacemetricError, match="give scale only"):
        L2SoftmaxLoss(6, 7, scale=2.0, alpha=3.0)
    with pytest.raises(FacemetricError, match="give center_lr only"):
        CenterLoss(3, 5, center_lr=0.2, alpha=0.3)
    with pytest.raises(FacemetricError, match="center_lr"):
        CenterLoss(3, 5, center_lr=2.0)


def test_center_update_uses_center_lr():
    x, y = _batch(4, dim=3)
    x, y = x.float(), y % 3
    a = CenterLoss(3, 5, lambda_=0.1, center_lr=0.3)
    with pytest.warns(DeprecationWarning):
        b = CenterLoss(3, 5, lambda_=0.1, alpha=0.3)
    b.load_state_dict(a.state_dict())
    for loss in (a, b):
        loss(x, y)
        loss.after_step()
    assert torch.equal(a.centers, b.centers) and a.centers.abs().sum() > 0


def test_normalize_flag_applies_to_a_distance_given_by_name():
    x, y = _batch(5)
    raw = ContrastiveLoss(distance="euclidean", normalize=False)
    assert not raw.distance.normalize_embeddings and not raw.normalizes_features
    assert raw(x / 3, y).item() == pytest.approx(_reference(x / 3, y.tolist(), normalize=False))
    assert ContrastiveLoss(distance={"name": "euclidean"}, normalize=False).distance.normalize_embeddings
    assert ContrastiveLoss(distance="cosine", normalize=False).distance.is_inverted
    from facemetric.losses import TripletLoss

    assert not TripletLoss(distance="squared_l2", normalize=False).distance.normalize_embeddings
    assert TripletLoss(distance=SquaredL2Distance(), normalize=False).distance.normalize_embeddings
