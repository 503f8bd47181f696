"""Miners and distance objects: the same triplets as the selection functions, PML parity."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facemetric.distances import (
    CosineSimilarity,
    EuclideanDistance,
    LpDistance,
    SquaredL2Distance,
    build_distance,
    pairwise_squared_distances,
)
from facemetric.errors import ConfigError, FacemetricError
from facemetric.losses import (
    AllPairsMiner,
    AllTripletsMiner,
    BatchHardMiner,
    PairMarginMiner,
    RandomViolatingMiner,
    SemiHardMiner,
    TripletLoss,
    build_loss,
    build_miner,
)
from facemetric.losses.miners import check_indices
from facemetric.losses.triplet_selection import STRATEGIES

MARGIN = 0.2


def _batch(seed, people=6, images=5, dim=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(people).repeat_interleave(images)
    y = y[torch.randperm(len(y), generator=g)]
    centres = torch.randn(people, dim, generator=g, dtype=torch.float64)
    x = centres[y] + 0.7 * torch.randn(len(y), dim, generator=g, dtype=torch.float64)
    return x.to(dtype), y


MINER_OF = {
    "semi-hard": SemiHardMiner,
    "random-violating": RandomViolatingMiner,
    "hard": BatchHardMiner,
    "batch-hard": BatchHardMiner,
    "all": AllTripletsMiner,
}


# --------------------------------------------------------------------------- distances
def test_distance_objects_against_direct_formulas():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randn(4, 5, generator=g, dtype=torch.float64)
    xn, yn = F.normalize(x, dim=1), F.normalize(y, dim=1)
    diff = xn[:, None] - yn[None]
    torch.testing.assert_close(SquaredL2Distance().pairwise(x, y), diff.pow(2).sum(-1))
    torch.testing.assert_close(EuclideanDistance().pairwise(x, y), diff.pow(2).sum(-1).sqrt())
    raw = x[:, None] - y[None]
    torch.testing.assert_close(
        LpDistance(normalize_embeddings=False, p=1).pairwise(x, y), raw.abs().sum(-1)
    )
    torch.testing.assert_close(
        LpDistance(normalize_embeddings=False, p=3, power=2).pairwise(x, y),
        raw.abs().pow(3).sum(-1).pow(2 / 3),
    )
    torch.testing.assert_close(CosineSimilarity().pairwise(x, y), xn @ yn.T)
    # the same matrix the triplet selection always used; exact diagonals
    assert torch.equal(SquaredL2Distance().pairwise(x), pairwise_squared_distances(xn))
    assert (EuclideanDistance().pairwise(x).diagonal() == 0).all()
    assert (CosineSimilarity().pairwise(x).diagonal() == 1).all()
    # row-wise pairs agree with the matrix diagonal of (x, y) rows
    for dist in (SquaredL2Distance(), EuclideanDistance(), CosineSimilarity(), LpDistance(p=1)):
        torch.testing.assert_close(dist.pair(x[:4], y), dist.pairwise(x[:4], y).diagonal())


def test_margin_orientation_and_equality():
    a, b = torch.tensor([0.3]), torch.tensor([0.5])
    assert SquaredL2Distance().margin(a, b).item() == pytest.approx(-0.2)
    assert CosineSimilarity().margin(a, b).item() == pytest.approx(0.2)
    assert CosineSimilarity().is_inverted and not EuclideanDistance().is_inverted
    assert SquaredL2Distance() == SquaredL2Distance()
    assert SquaredL2Distance() != SquaredL2Distance(normalize_embeddings=False)
    assert SquaredL2Distance() != EuclideanDistance()
    assert build_distance("squared-l2") == SquaredL2Distance()
    assert build_distance({"name": "euclidean", "normalize_embeddings": False}) == EuclideanDistance(
        normalize_embeddings=False
    )
    with pytest.raises(FacemetricError, match="distance: expected one of"):
        build_distance("manhattan")


def test_euclidean_gradient_is_finite_at_coincident_points():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    EuclideanDistance().pairwise(x).sum().backward()
    assert torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------- miners == functions
@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_miner_returns_the_selection_function_triplets(name, seed, dtype):
    x, y = _batch(seed, dtype=dtype)
    d = pairwise_squared_distances(F.normalize(x, dim=1))
    fn = STRATEGIES[name]
    if name == "random-violating":
        want = fn(d, y, MARGIN, generator=torch.Generator().manual_seed(seed))
        miner = RandomViolatingMiner(MARGIN, generator=torch.Generator().manual_seed(seed))
    else:
        want = fn(d, y, MARGIN)
        miner = MINER_OF[name](MARGIN)
    got = miner(x, y)
    assert len(got) == 3 and len(want[0]) > 0
    for u, v in zip(got, want, strict=True):
        assert torch.equal(u, v)
    # and by name through the registry, seeded the same way
    built = build_miner({"name": name, "margin": MARGIN, "seed": seed} if name == "random-violating"
                        else {"name": name, "margin": MARGIN})
    again = built(x, y)
    for u, v in zip(again, want, strict=True):
        assert torch.equal(u, v)


@pytest.mark.parametrize("strategy", ["semi-hard", "random-violating", "hard", "all"])
def test_triplet_loss_with_strategy_equals_loss_with_miner(strategy):
    x, y = _batch(4)
    by_strategy = TripletLoss(strategy=strategy, seed=3)
    kind = "batch-hard" if strategy == "hard" else strategy
    opts = {"seed": 3} if strategy == "random-violating" else {}
    by_miner = TripletLoss(miner=build_miner({"name": kind, **opts}))
    value = by_strategy(x, y).item()
    assert value == by_miner(x, y).item() and value > 0
    for u, v in zip(by_strategy.last_triplets, by_miner.last_triplets, strict=True):
        assert torch.equal(u, v)
    # indices_tuple: the loss on the given triplets, whatever its own miner would pick
    given = TripletLoss(strategy="all")
    assert given(x, y, indices_tuple=by_miner.last_triplets).item() == pytest.approx(value)
    for u, v in zip(given.last_triplets, by_miner.last_triplets, strict=True):
        assert torch.equal(u, v)


def test_indices_tuple_overrides_mining_and_is_checked():
    x, y = _batch(1)
    loss = TripletLoss(strategy="semi-hard")
    a, p, n = loss.select(SquaredL2Distance().pairwise(x), y)
    keep = slice(0, 5)
    value = loss(x, y, indices_tuple=(a[keep], p[keep], n[keep]))
    xn = F.normalize(x.double(), dim=1)
    d = ((xn[:, None] - xn[None]) ** 2).sum(-1)
    trip = zip(a[keep], p[keep], n[keep], strict=True)
    want = np.mean([max(0.0, d[i, j] - d[i, k] + 0.2) for i, j, k in trip])
    assert value.item() == pytest.approx(float(want), rel=1e-5)
    assert loss.stats["num_triplets"] == 5
    with pytest.raises(FacemetricError, match="indices_tuple"):
        loss(x, y, indices_tuple=(a, p))
    with pytest.raises(FacemetricError, match="indices_tuple"):
        loss(x, y, indices_tuple=(a, p, n + len(y)))
    with pytest.raises(FacemetricError, match="indices_tuple"):
        loss(x, y, indices_tuple=(a, p[:-1], n))
    with pytest.raises(FacemetricError, match="indices_tuple"):
        check_indices((a.float(), p, n), len(y), "triplets")


def test_cosine_similarity_miner_and_loss():
    """Mining on -cos is mining on the squared distance 2 - 2 cos with a doubled margin."""
    x, y = _batch(2)
    cos_miner = SemiHardMiner(margin=0.1, distance=CosineSimilarity())
    l2_miner = SemiHardMiner(margin=0.2, distance=SquaredL2Distance())
    got, want = cos_miner(x.double(), y), l2_miner(x.double(), y)
    assert len(want[0]) > 0
    for u, v in zip(got, want, strict=True):
        assert torch.equal(u, v)
    loss = TripletLoss(margin=0.1, distance="cosine", strategy="semi-hard")
    s = CosineSimilarity().pairwise(x)
    a, p, n = loss.select(s, y)
    want_value = torch.relu(s[a, n] - s[a, p] + 0.1).mean()
    assert loss(x, y).item() == pytest.approx(want_value.item(), rel=1e-6)


def test_loss_uses_a_miner_with_another_distance_on_its_own_matrix():
    x, y = _batch(5)
    miner = BatchHardMiner(distance=CosineSimilarity())
    loss = TripletLoss(miner=miner)  # squared L2 loss, triplets mined by cosine
    loss(x, y)
    for u, v in zip(loss.last_triplets, miner(x, y), strict=True):
        assert torch.equal(u, v)


def test_pair_miners():
    x, y = _batch(3, people=3, images=3)
    a1, p, a2, n = AllPairsMiner()(x, y)
    b = len(y)
    pos = [(i, j) for i in range(b) for j in range(b) if i != j and y[i] == y[j]]
    neg = [(i, j) for i in range(b) for j in range(b) if y[i] != y[j]]
    assert list(zip(a1.tolist(), p.tolist(), strict=True)) == pos
    assert list(zip(a2.tolist(), n.tolist(), strict=True)) == neg
    d = EuclideanDistance().pairwise(x)
    a1, p, a2, n = PairMarginMiner(pos_margin=0.5, neg_margin=1.2, distance=EuclideanDistance())(x, y)
    assert list(zip(a1.tolist(), p.tolist(), strict=True)) == [(i, j) for i, j in pos if d[i, j] > 0.5]
    assert list(zip(a2.tolist(), n.tolist(), strict=True)) == [(i, j) for i, j in neg if d[i, j] < 1.2]
    assert 0 < len(a1) < len(pos) and 0 < len(a2) < len(neg)
    s = CosineSimilarity().pairwise(x)
    a1, p, a2, n = PairMarginMiner(pos_margin=0.9, neg_margin=0.2, distance=CosineSimilarity())(x, y)
    assert list(zip(a1.tolist(), p.tolist(), strict=True)) == [(i, j) for i, j in pos if s[i, j] < 0.9]
    assert list(zip(a2.tolist(), n.tolist(), strict=True)) == [(i, j) for i, j in neg if s[i, j] > 0.2]


def test_miner_config_errors():
    with pytest.raises(ConfigError, match="unknown miner"):
        build_miner("hardest")
    with pytest.raises(ConfigError, match="miner.pos_margin"):
        build_miner({"name": "semi-hard", "pos_margin": 0.1})
    with pytest.raises(ConfigError, match="not both"):
        TripletLoss(strategy="hard", miner="semi-hard")
    with pytest.raises(ConfigError, match="pairs"):
        TripletLoss(miner="all-pairs")
    loss = build_loss("triplet", embedding_dim=8, num_classes=3, miner={"name": "all", "margin": 0.5})
    assert isinstance(loss.miner, AllTripletsMiner) and loss.miner.margin == 0.5
    assert loss.strategy == "all"


def test_semi_hard_miner_matches_pml_semihard_choice():
    """PML's TripletMarginMiner(semihard) returns ALL semi-hard triplets; ours keeps, per
    anchor-positive pair, the closest of them."""
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import LpDistance as PmlLp
    from pytorch_metric_learning.miners import TripletMarginMiner

    del pml
    x, y = _batch(6, dtype=torch.float64)
    ours = SemiHardMiner(MARGIN)(x, y)
    theirs = TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard",
                                distance=PmlLp(power=2))(x, y)
    d = SquaredL2Distance().pairwise(x)
    best = {}
    for a, p, n in zip(*(t.tolist() for t in theirs), strict=True):
        key = (a, p)
        if key not in best or (d[a, n], n) < (d[a, best[key]], best[key]):
            best[key] = n
    assert sorted(best.items()) == sorted(
        ((a, p), n) for a, p, n in zip(*(t.tolist() for t in ours), strict=True)
    )
    assert len(best) > 0
