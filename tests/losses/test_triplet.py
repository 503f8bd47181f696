"""TripletLoss and the online selection strategies against brute-force loop references."""

import inspect
from collections import Counter

import numpy as np
import pytest
import torch

from facemetric.distances import pairwise_squared_distances
from facemetric.errors import ConfigError, FacemetricError
from facemetric.losses import TripletLoss, build_loss
from facemetric.losses.triplet_selection import (
    STRATEGIES,
    all_violating,
    batch_hard,
    count_valid_triplets,
    random_violating,
    semi_hard,
)

MARGIN = 0.2


# --------------------------------------------------------------------------- references
def ref_semi_hard(d, y, m):
    """For every ordered (a, p): the closest n with d(a,p) < d(a,n) < d(a,p) + m."""
    out = []
    for a in range(len(y)):
        for p in range(len(y)):
            if p == a or y[p] != y[a]:
                continue
            best = None
            for n in range(len(y)):
                if y[n] == y[a]:
                    continue
                if d[a, p] < d[a, n] < d[a, p] + m and (best is None or d[a, n] < d[a, best]):
                    best = n
            if best is not None:
                out.append((a, p, best))
    return out


def ref_hard(d, y, m):
    """Per anchor with a positive and a negative: (a, farthest positive, closest negative)."""
    out = []
    for a in range(len(y)):
        hp = hn = None
        for j in range(len(y)):
            if j != a and y[j] == y[a] and (hp is None or d[a, j] > d[a, hp]):
                hp = j
            if y[j] != y[a] and (hn is None or d[a, j] < d[a, hn]):
                hn = j
        if hp is not None and hn is not None:
            out.append((a, hp, hn))
    return out


def ref_all(d, y, m):
    out = []
    for a in range(len(y)):
        for p in range(len(y)):
            if p == a or y[p] != y[a]:
                continue
            for n in range(len(y)):
                if y[n] != y[a] and d[a, p] - d[a, n] + m > 0:
                    out.append((a, p, n))
    return out


def ref_random_eligible(d, y, m):
    """{(a, p): eligible negatives} for a < p of one identity (facenet's select_triplets)."""
    out = {}
    for a in range(len(y)):
        for p in range(a + 1, len(y)):
            if y[p] != y[a]:
                continue
            out[(a, p)] = [n for n in range(len(y)) if y[n] != y[a] and d[a, n] < d[a, p] + m]
    return out


REFERENCES = {"semi-hard": ref_semi_hard, "hard": ref_hard, "all": ref_all}


# --------------------------------------------------------------------------- batches
def _labels(layout, seed):
    g = np.random.default_rng(seed)
    if layout == "PxK":
        y = np.repeat(np.arange(6), 4)  # 6 people x 4 images
    elif layout == "irregular":
        y = np.repeat(np.arange(7), [1, 2, 3, 5, 1, 4, 2])  # includes singletons
    else:  # random ids, random counts
        y = g.integers(0, 5, size=15)
    return torch.as_tensor(g.permutation(y) if layout != "PxK" else y, dtype=torch.long)


def _clustered(y, seed, dim=8, spread=0.6):
    """Unnormalised embeddings around one random centre per identity (semi-hard ones exist)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(int(y.max()) + 1, dim, generator=g, dtype=torch.float64)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g, dtype=torch.float64)


def _dist(x):
    return pairwise_squared_distances(torch.nn.functional.normalize(x, dim=1))


CASES = [(layout, seed) for layout in ("PxK", "irregular", "random") for seed in range(3)]


def _sorted(a, p, n):
    return sorted(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))


# --------------------------------------------------------------------------- selection
def test_pairwise_squared_distances_match_direct_differences():
    x = torch.randn(10, 5, dtype=torch.float64)
    want = ((x[:, None] - x[None]) ** 2).sum(-1)
    torch.testing.assert_close(pairwise_squared_distances(x), want)
    xn = torch.nn.functional.normalize(x, dim=1)
    want = (2 - 2 * xn @ xn.T).fill_diagonal_(0)
    torch.testing.assert_close(pairwise_squared_distances(xn), want)
    assert (pairwise_squared_distances(xn).diagonal() == 0).all()


@pytest.mark.parametrize("layout,seed", CASES)
@pytest.mark.parametrize("name", ["semi-hard", "hard", "all"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deterministic_strategies_match_loop_reference(name, layout, seed, dtype):
    y = _labels(layout, seed)
    d = _dist(_clustered(y, seed).to(dtype))  # float32: the CPU fast-sort path
    got = _sorted(*STRATEGIES[name](d, y, MARGIN))
    want = sorted(REFERENCES[name](d.numpy(), y.tolist(), MARGIN))
    assert got == want
    if name in ("semi-hard", "all") and layout == "PxK":
        assert len(want) > 0  # the batches are clustered enough to exercise the rule


def test_batch_hard_alias_and_margin_unused():
    y = _labels("PxK", 0)
    d = _dist(_clustered(y, 0))
    assert STRATEGIES["batch-hard"] is batch_hard
    assert _sorted(*batch_hard(d, y, 0.0)) == _sorted(*batch_hard(d, y, 5.0))


def test_all_violating_chunking_gives_same_triplets(monkeypatch):
    import facemetric.losses.triplet_selection as sel

    y = _labels("irregular", 1)
    d = _dist(_clustered(y, 1))
    whole = _sorted(*all_violating(d, y, MARGIN))
    monkeypatch.setattr(sel, "_CHUNK_ELEMENTS", 7)  # chunks of a single pair
    assert _sorted(*sel.all_violating(d, y, MARGIN)) == whole


@pytest.mark.parametrize("layout,seed", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_random_violating_follows_facenet_rule(layout, seed, dtype):
    y = _labels(layout, seed)
    d = _dist(_clustered(y, seed).to(dtype))
    eligible = ref_random_eligible(d.numpy(), y.tolist(), MARGIN)
    a, p, n = random_violating(d, y, MARGIN, generator=torch.Generator().manual_seed(seed))
    assert a.dtype == p.dtype == n.dtype == torch.long
    pairs = list(zip(a.tolist(), p.tolist(), strict=True))
    assert len(pairs) == len(set(pairs))  # each pair at most once
    want_pairs = {k for k, v in eligible.items() if v}
    assert set(pairs) == want_pairs  # every eligible pair once, ineligible ones never
    for (ai, pi), ni in zip(pairs, n.tolist(), strict=True):
        assert ni in eligible[(ai, pi)]
    # reproducible with a fixed seed
    again = random_violating(d, y, MARGIN, generator=torch.Generator().manual_seed(seed))
    assert all(torch.equal(u, v) for u, v in zip((a, p, n), again, strict=True))


def test_random_violating_includes_negatives_closer_than_positive():
    # identity 0: points 0 and 1 far apart; point 2 (identity 1) is closer to 0 than 1 is
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.9, 0.1]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    d = pairwise_squared_distances(x)
    a, p, n = random_violating(d, y, MARGIN, generator=torch.Generator().manual_seed(0))
    assert _sorted(a, p, n) == [(0, 1, 2)]
    assert semi_hard(d, y, MARGIN)[0].numel() == 0  # not semi-hard


def test_random_violating_is_uniform_over_eligible_negatives():
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    d = _dist(x)
    margin = 4.0  # every negative is eligible (d <= 4 on the unit sphere)
    eligible = ref_random_eligible(d.numpy(), y.tolist(), margin)
    gen = torch.Generator().manual_seed(0)
    draws = 2000
    picks = []
    for _ in range(draws):
        a, p, n = random_violating(d, y, margin, generator=gen)
        assert _sorted(a, p, torch.zeros_like(a)) == [(*k, 0) for k in sorted(eligible)]
        picks.append(n)
    picks = torch.stack(picks)  # [draws, pairs], pairs in (a, p) order
    for col, pair in enumerate(sorted(eligible)):
        counts = Counter(picks[:, col].tolist())
        negs = eligible[pair]
        assert len(negs) == 5 and set(counts) == set(negs)  # every eligible negative is picked
        expected = draws / len(negs)
        for c in counts.values():
            assert abs(c - expected) < 0.2 * expected  # ~4.5 sigma


def test_strategies_on_empty_cases():
    d = _dist(torch.randn(4, 3, dtype=torch.float64))
    for name, fn in STRATEGIES.items():
        for y in (torch.zeros(4, dtype=torch.long), torch.arange(4)):  # no negatives / positives
            a, p, n = fn(d, y, MARGIN)
            assert a.numel() == p.numel() == n.numel() == 0, name
            assert a.dtype == torch.long


# --------------------------------------------------------------------------- loss value
def _np_loss(x, y, margin, strategy, seed=None):
    """The formula in float64 numpy, with the references' selection."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = ((xn[:, None, :] - xn[None, :, :]) ** 2).sum(-1)
    if strategy == "random-violating":
        gen = torch.Generator().manual_seed(seed)
        trip = _sorted(*random_violating(torch.as_tensor(d), torch.as_tensor(y), margin, gen))
    else:
        trip = REFERENCES[strategy](d, list(y), margin)
    if not trip:
        return 0.0, trip, d
    terms = [max(0.0, d[a, p] - d[a, n] + margin) for a, p, n in trip]
    return float(np.mean(terms)), trip, d


@pytest.mark.parametrize("strategy", ["semi-hard", "random-violating", "hard", "all"])
@pytest.mark.parametrize("layout,seed", [("PxK", 0), ("irregular", 1), ("random", 2)])
def test_loss_value_and_stats_match_formula(strategy, layout, seed):
    y = _labels(layout, seed)
    x = _clustered(y, seed)
    loss_fn = TripletLoss(margin=0.3, strategy=strategy, seed=seed)
    got = loss_fn(x, y)
    want, trip, d = _np_loss(x.numpy(), y.numpy(), 0.3, strategy, seed)
    assert got.item() == pytest.approx(want, rel=1e-9, abs=1e-12)
    s = loss_fn.stats
    assert s["num_triplets"] == len(trip)
    terms = [d[a, p] - d[a, n] + 0.3 for a, p, n in trip]
    active = sum(t > 0 for t in terms)
    assert s["active_triplets"] == active
    valid = sum(
        1
        for a in range(len(y))
        for p in range(len(y))
        for n in range(len(y))
        if a != p and y[a] == y[p] and y[n] != y[a]
    )
    assert count_valid_triplets(y) == valid
    assert s["fraction_active"] == pytest.approx(active / valid)
    if trip:
        assert s["mean_pos_dist"] == pytest.approx(np.mean([d[a, p] for a, p, _ in trip]))
        assert s["mean_neg_dist"] == pytest.approx(np.mean([d[a, n] for a, _, n in trip]))
    if strategy == "hard":
        assert s["num_triplets"] == len(y) - (y.bincount()[y] == 1).sum().item()


def test_reduction_hard_counts_zero_terms_and_all_only_violating():
    y = _labels("PxK", 0)
    x = _clustered(y, 0, spread=0.3)  # tight clusters: many anchors already satisfied
    hard = TripletLoss(strategy="hard", margin=0.2)
    value = hard(x, y).item()
    a, p, n = hard.last_triplets
    d = _dist(x)
    terms = torch.relu(d[a, p] - d[a, n] + 0.2)
    s = hard.stats
    assert s["num_triplets"] == 24 and 0 < s["active_triplets"] < 24
    assert value == pytest.approx(terms.sum().item() / 24)  # zeros included in the mean
    allv = TripletLoss(strategy="all", margin=0.2)
    value = allv(x, y).item()
    assert allv.stats["num_triplets"] == allv.stats["active_triplets"] > 0
    a, p, n = allv.last_triplets
    assert value == pytest.approx((d[a, p] - d[a, n] + 0.2).mean().item())
    valid = count_valid_triplets(y)
    assert allv.stats["fraction_active"] == pytest.approx(len(a) / valid)


# --------------------------------------------------------------------------- gradients
def _far_from_boundaries(d, y, margin, tol=1e-3):
    """No distance tie within a row and no triplet at a selection/margin boundary."""
    b = len(y)
    for a in range(b):
        row = sorted(d[a, j] for j in range(b) if j != a)
        if np.min(np.diff(row)) < tol:
            return False
        for p in range(b):
            for n in range(b):
                if p != a and y[p] == y[a] and y[n] != y[a]:
                    gap = d[a, n] - d[a, p]
                    if abs(gap) < tol or abs(gap - margin) < tol:
                        return False
    return True


def _gradcheck_batch(margin):
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    for seed in range(200):
        x = _clustered(y, seed, dim=4, spread=0.8)
        d = _dist(x).numpy()
        if not _far_from_boundaries(d, y.tolist(), margin):
            continue
        if all(
            TripletLoss(margin=margin, strategy=s, seed=0)(x, y).item() > 0
            for s in ("semi-hard", "random-violating", "hard", "all")
        ):
            return x, y
    raise AssertionError("no suitable batch found")


@pytest.mark.parametrize("strategy", ["semi-hard", "random-violating", "hard", "all"])
@pytest.mark.parametrize("normalize", [True, False])
def test_gradient_matches_finite_differences(strategy, normalize):
    margin = 0.5
    x, y = _gradcheck_batch(margin)
    if not normalize:
        x = torch.nn.functional.normalize(x, dim=1)  # keep the margin meaningful
    loss_fn = TripletLoss(margin=margin, strategy=strategy, normalize=normalize, seed=1)
    state = loss_fn.extra_state_for_checkpoint()

    def f(inp):
        loss_fn.load_extra_state_from_checkpoint(state)  # same random choice on every call
        return loss_fn(inp, y)

    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (xg,), eps=1e-6, atol=1e-7, rtol=1e-5)
    f(xg).backward()
    assert xg.grad.abs().sum() > 0


# --------------------------------------------------------------------------- behaviour
def test_margin_default_and_factory():
    assert inspect.signature(TripletLoss).parameters["margin"].default == 0.2
    assert TripletLoss().margin == 0.2
    assert TripletLoss().strategy == "semi-hard"
    loss = build_loss("triplet", embedding_dim=8, num_classes=5, strategy="hard")
    assert isinstance(loss, TripletLoss) and loss.strategy == "hard"
    y = _labels("PxK", 0)
    assert loss(_clustered(y, 0).float(), y).ndim == 0
    alias = build_loss("triplet", embedding_dim=8, num_classes=5, strategy="batch-hard")
    assert alias._select is batch_hard


@pytest.mark.parametrize("strategy", ["semi-hard", "random-violating", "hard", "all"])
def test_normalized_loss_is_scale_invariant(strategy):
    y = _labels("irregular", 2)
    x = _clustered(y, 2)
    loss_fn = TripletLoss(strategy=strategy, seed=5)
    state = loss_fn.extra_state_for_checkpoint()
    base = loss_fn(x, y).item()
    loss_fn.load_extra_state_from_checkpoint(state)
    assert loss_fn(3.7 * x, y).item() == pytest.approx(base, rel=1e-9)
    assert base > 0
    raw = TripletLoss(strategy=strategy, normalize=False, seed=5)
    assert raw(3.7 * x, y).item() != pytest.approx(base, rel=1e-3)


@pytest.mark.parametrize("strategy", ["semi-hard", "random-violating", "hard", "all"])
@pytest.mark.parametrize("labels", [[0, 0, 0, 0, 0], [0, 1, 2, 3, 4]])
def test_no_triplet_gives_zero_loss_with_zero_gradient(strategy, labels):
    x = torch.randn(5, 3, requires_grad=True)
    loss_fn = TripletLoss(strategy=strategy)
    loss = loss_fn(x, torch.tensor(labels))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert loss_fn.stats["num_triplets"] == 0 and loss_fn.stats["fraction_active"] == 0


def test_semi_hard_without_band_negatives_is_zero():
    # two tight, far-apart clusters: every negative is beyond d(a,p) + margin
    x = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.01]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    loss_fn = TripletLoss(strategy="semi-hard")
    loss = loss_fn(x, y)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_bad_input_and_config_errors():
    loss = TripletLoss(embedding_dim=3)
    y = torch.tensor([0, 0, 1, 1])
    with pytest.raises(FacemetricError):
        loss(torch.randn(4), y)  # 1-D embeddings
    with pytest.raises(FacemetricError):
        loss(torch.randn(4, 3, 1), y)
    with pytest.raises(FacemetricError):
        loss(torch.randn(4, 3), y.float())
    with pytest.raises(FacemetricError):
        loss(torch.randn(4, 5), y)  # wrong embedding_dim
    bad = torch.randn(4, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(FacemetricError):
        loss(bad, y)
    with pytest.raises(ConfigError, match="semi-hard.*random-violating.*hard.*all"):
        TripletLoss(strategy="hardest")
    with pytest.raises(ConfigError):
        build_loss("triplet", embedding_dim=3, num_classes=2, strategy="nope")
    with pytest.raises(ConfigError):
        TripletLoss(margin=-0.1)
    with pytest.raises(ConfigError):
        build_loss("triplet", embedding_dim=3, num_classes=2, alpha=0.2)


def test_resume_reproduces_random_violating_selection():
    y = _labels("PxK", 0)
    x1, x2 = _clustered(y, 1, spread=1.0), _clustered(y, 2, spread=1.0)
    first = TripletLoss(strategy="random-violating", margin=0.5, seed=11)
    first(x1, y)
    saved = {k: v.clone() for k, v in first.extra_state_for_checkpoint().items()}
    value = first(x2, y).item()
    selection = [t.clone() for t in first.last_triplets]
    assert selection[0].numel() > 0

    resumed = TripletLoss(strategy="random-violating", margin=0.5, seed=999)
    resumed.load_extra_state_from_checkpoint(saved)
    assert resumed(x2, y).item() == value
    assert all(torch.equal(u, v) for u, v in zip(resumed.last_triplets, selection, strict=True))
    # without the state the selection differs (same batch, other seed)
    other = TripletLoss(strategy="random-violating", margin=0.5, seed=999)
    other(x2, y)
    assert not all(torch.equal(u, v) for u, v in zip(other.last_triplets, selection, strict=True))


def test_fast_cpu_row_sort_equals_stable_torch_sort():
    from facemetric.losses.triplet_selection import _sort_rows

    g = torch.Generator().manual_seed(0)
    v = torch.rand(40, 50, generator=g)
    v[:, ::4] = 0.5  # ties: stable order by column
    v[0, 3], v[1, 7], v[2, 9] = -1.5, -0.0, float("-inf")
    v[3, :20] = float("inf")
    got_v, got_i = _sort_rows(v)
    want_v, want_i = torch.sort(v, dim=1, stable=True)
    assert torch.equal(got_v, want_v) and torch.equal(got_i, want_i)
    assert got_i.dtype == torch.long


@pytest.mark.parametrize("name", ["semi-hard", "random-violating"])
def test_float32_and_float64_paths_agree(name):
    y = _labels("random", 4)
    d64 = _dist(_clustered(y, 4))
    d32 = d64.float()
    kw = {"generator": torch.Generator().manual_seed(0)} if name == "random-violating" else {}
    got = _sorted(*STRATEGIES[name](d32, y, MARGIN, **kw))
    kw = {"generator": torch.Generator().manual_seed(0)} if name == "random-violating" else {}
    # the float64 path (torch.sort) on the same float32 values
    want = _sorted(*STRATEGIES[name](d32.double(), y, MARGIN, **kw))
    assert got == want and len(got) > 0


# --------------------------------------------------------------------------- packed-key path
def _sort_path(monkeypatch, fn, *args, **kw):
    import facemetric.losses.triplet_selection as sel

    with monkeypatch.context() as m:
        m.setattr(sel, "_use_key_path", lambda d: False)
        return fn(*args, **kw)


@pytest.mark.parametrize("name", ["semi-hard", "random-violating"])
@pytest.mark.parametrize("kind", ["ties", "signed", "plain"])
@pytest.mark.parametrize("seed", range(3))
def test_key_path_picks_the_sort_path_triplets(monkeypatch, name, kind, seed):
    """The band-key path (CPU float32) and the whole-row sort path select identical tuples,
    in the same order, with ties between negatives, negative values and -0.0 in the matrix."""
    from facemetric.losses.triplet_selection import _use_key_path

    y = _labels("random", seed + 10)
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(len(y), len(y), generator=g) * 0.8
    if kind == "ties":
        d = (d * 8).round() / 8  # many equal distances: ties go to the lowest column
    elif kind == "signed":
        d = d - 0.3
        d[0, :4] = -0.0
    d.fill_diagonal_(0.0)
    assert _use_key_path(d)
    fn = STRATEGIES[name]
    kw = (lambda: {"generator": torch.Generator().manual_seed(seed)}) if name != "semi-hard" else dict
    got = fn(d, y, 0.25, **kw())
    want = _sort_path(monkeypatch, fn, d, y, 0.25, **kw())
    assert len(want[0]) > 0
    for u, v in zip(got, want, strict=True):
        assert u.dtype == torch.long and torch.equal(u, v)


def test_key_path_and_sort_path_draw_the_same_random_stream(monkeypatch):
    y = _labels("PxK", 0)
    d = _dist(_clustered(y, 0)).float()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    random_violating(d, y, MARGIN, generator=g1)
    _sort_path(monkeypatch, random_violating, d, y, MARGIN, generator=g2)
    assert torch.equal(g1.get_state(), g2.get_state())
