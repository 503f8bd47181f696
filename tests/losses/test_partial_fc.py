"""Partial FC: the sharded, sampled margin head against plain float64 references.

* one process without a process group: the same loss and gradients as the head itself
  (``arcface``, ``cosface``, ``combined-margin``, ``normface``);
* sampling keeps every positive class, draws ``int(rate C)`` centres, and the loss is the
  reference head restricted to the drawn classes;
* 2 gloo processes (one spawn for every distributed check): at ``sample_rate = 1`` the loss
  equals the full classifier on the global batch and the shard gradients its rows (to 1e-5,
  in float64 far closer), the DDP-averaged backbone gradient equals the 1-process one; the
  state dict gathers the full weight; ``predict`` gives global ids; at ``sample_rate < 1`` each
  rank keeps its positives and the loss is the reference over the union of drawn classes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from facemetric import distributed as fd
from facemetric.errors import FacemetricError
from facemetric.losses import LOSSES, PartialFCLoss, build_loss
from facemetric.losses.partial_fc import shard_range
from tests.losses.margin_reference import reference_loss

C, D = 11, 6  # 11 classes over 2 ranks: shards of 6 and 5 (uneven on purpose)
SIZES = (5, 4)  # local batch per rank (uneven: a short last batch)
HEAD_OPTIONS = {
    "arcface": {"margin": 0.5, "scale": 16.0},
    "cosface": {"margin": 0.35, "scale": 12.0},
    "combined-margin": {"m1": 1.0, "m2": 0.3, "m3": 0.2, "scale": 10.0},
    "normface": {"scale": 8.0},
}


def _problem():
    """A tiny linear backbone, inputs, labels and a full classifier weight (float64)."""
    g = torch.Generator().manual_seed(7)
    inputs = torch.randn(sum(SIZES), 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 3, 10, 6, 5, 1, 9, 6])
    backbone = torch.randn(D, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(C, D, generator=g, dtype=torch.float64)
    return inputs, labels, backbone, weight


def _one_process(name, inputs, labels, backbone, weight, sampled=None):
    """Reference: the plain head of ``margin_reference`` on the global batch (optionally
    restricted to the classes ``sampled``); returns loss and gradients."""
    b = backbone.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    y = labels
    w_used = w
    if sampled is not None:
        w_used = w[sampled]
        y = torch.searchsorted(sampled, labels)
    loss = reference_loss(name, inputs @ b.t(), w_used, y, **HEAD_OPTIONS[name])
    loss.backward()
    return loss.detach(), b.grad, w.grad


def _rank_worker(name: str, sample_rate: float):
    r, n = fd.rank(), fd.world_size()
    torch.manual_seed(100 + r)
    inputs, labels, backbone, weight = _problem()
    start = sum(SIZES[:r])
    x_in, y = inputs[start : start + SIZES[r]], labels[start : start + SIZES[r]]
    loss_fn = build_loss("partial-fc", embedding_dim=D, num_classes=C, head=name,
                         sample_rate=sample_rate, **HEAD_OPTIONS[name]).double()
    loss_fn.load_state_dict({"weight": weight, "scale": torch.tensor(HEAD_OPTIONS[name]["scale"])})
    b = backbone.clone().requires_grad_(True)
    loss = loss_fn(x_in @ b.t(), y)
    loss.backward()
    sampled = loss_fn.last_sampled
    global_sampled = None if sampled is None else sampled + loss_fn.class_start
    return {
        "world": n, "start": loss_fn.class_start, "count": loss_fn.num_local,
        "loss": loss.detach(), "weight_grad": loss_fn.weight.grad,
        "backbone_grad": fd.all_reduce_mean(b.grad),  # what DDP does to replicated parameters
        "sampled": global_sampled, "stats": dict(loss_fn.stats),
        "state_weight": loss_fn.state_dict()["weight"],
        "predict": loss_fn.predict((x_in @ backbone.t()).float()),
    }


def _all_runs():
    runs = {name: _rank_worker(name, 1.0) for name in HEAD_OPTIONS}
    runs["sampled"] = _rank_worker("arcface", 0.5)
    return runs


@pytest.fixture(scope="module")
def two_ranks():
    per_rank = fd.spawn_local(_all_runs, 2, timeout_s=120)
    return {key: [out[key] for out in per_rank] for key in per_rank[0]}


@pytest.mark.parametrize("name", list(HEAD_OPTIONS))
def test_two_ranks_equal_the_full_classifier(two_ranks, name):
    inputs, labels, backbone, weight = _problem()
    loss, backbone_grad, weight_grad = _one_process(name, inputs, labels, backbone, weight)
    ranks = two_ranks[name]
    assert [(o["start"], o["count"]) for o in ranks] == [(0, 6), (6, 5)]
    for out in ranks:
        assert out["world"] == 2
        torch.testing.assert_close(out["loss"], loss, rtol=0, atol=1e-10)
        rows = weight_grad[out["start"] : out["start"] + out["count"]]
        torch.testing.assert_close(out["weight_grad"], rows, rtol=0, atol=1e-10)
        torch.testing.assert_close(out["backbone_grad"], backbone_grad, rtol=0, atol=1e-10)
        torch.testing.assert_close(out["state_weight"], weight, rtol=0, atol=0)  # gathered, full
        assert out["sampled"] is None and out["stats"]["sampled_classes"] == C
    logits = F.normalize(inputs @ backbone.t(), dim=1) @ F.normalize(weight, dim=1).t()
    expected = logits.float().argmax(1)
    torch.testing.assert_close(torch.cat([o["predict"] for o in ranks]), expected)
    accuracy = float((expected == labels).double().mean())
    assert ranks[0]["stats"]["accuracy"] == pytest.approx(accuracy)


def test_two_ranks_sample_their_shards_and_keep_positives(two_ranks):
    inputs, labels, backbone, weight = _problem()
    ranks = two_ranks["sampled"]
    sampled = torch.cat([o["sampled"] for o in ranks])
    for out in ranks:
        lo, hi = out["start"], out["start"] + out["count"]
        mine = out["sampled"]
        positives = labels[(labels >= lo) & (labels < hi)].unique()
        assert set(positives.tolist()) <= set(mine.tolist())
        assert len(mine) == max(len(positives), int(0.5 * out["count"]))
        assert ((mine >= lo) & (mine < hi)).all()
    loss, backbone_grad, weight_grad = _one_process("arcface", inputs, labels, backbone, weight, sampled)
    for out in ranks:
        torch.testing.assert_close(out["loss"], loss, rtol=0, atol=1e-10)
        torch.testing.assert_close(out["backbone_grad"], backbone_grad, rtol=0, atol=1e-10)
        rows = weight_grad[out["start"] : out["start"] + out["count"]]
        torch.testing.assert_close(out["weight_grad"], rows, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------- one process

@pytest.mark.parametrize("name", list(HEAD_OPTIONS))
def test_one_process_is_the_head(name):
    torch.manual_seed(0)
    x = torch.randn(12, D, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, C, (12,))
    head = build_loss(name, embedding_dim=D, num_classes=C, **HEAD_OPTIONS[name]).double()
    pfc = build_loss("partial-fc", embedding_dim=D, num_classes=C, head=name, **HEAD_OPTIONS[name]).double()
    pfc.load_state_dict(head.state_dict())  # same state keys as the head (weight, scale)
    grads = []
    for module in (head, pfc):
        loss = module(x, y)
        grads.append((loss.detach(), *torch.autograd.grad(loss, [x, module.weight])))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert pfc.stats["accuracy"] == head.stats["accuracy"]
    torch.testing.assert_close(pfc.predict(x), head.predict(x))


def test_automatic_scale_is_the_heads_for_all_classes():
    pfc = build_loss("partial-fc", embedding_dim=4, num_classes=1000, head="cosface", margin=0.35)
    head = build_loss("cosface", embedding_dim=4, num_classes=1000, margin=0.35)
    assert float(pfc.scale) == pytest.approx(float(head.scale))


def test_sampling_keeps_positives_and_restricts_the_softmax():
    torch.manual_seed(1)
    pfc = PartialFCLoss(D, 50, head="arcface", sample_rate=0.2, margin=0.5, scale=16.0).double()
    x = torch.randn(10, D, dtype=torch.float64)
    y = torch.tensor([3, 3, 17, 40, 41, 8, 17, 22, 3, 49])
    loss = pfc(x, y)
    kept = pfc.last_sampled
    assert len(kept) == 10 and set(y.tolist()) <= set(kept.tolist())
    assert torch.equal(kept, kept.sort().values)
    reference = reference_loss("arcface", x, pfc.weight.detach()[kept], torch.searchsorted(kept, y),
                               margin=0.5, scale=16.0)
    torch.testing.assert_close(loss.detach(), reference, rtol=0, atol=1e-12)
    assert pfc.stats["sampled_classes"] == 10
    loss.backward()  # unsampled centres get no gradient
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[kept] = False
    assert (pfc.weight.grad[untouched] == 0).all() and (pfc.weight.grad[kept] != 0).any()
    # more positives than the budget: all positives, nothing else
    pfc.sample_rate = 0.04
    pfc(x, y)
    assert pfc.last_sampled.tolist() == sorted(set(y.tolist()))
    # evaluation uses every class
    pfc.eval()
    pfc(x, y)
    assert pfc.last_sampled is None and pfc.stats["sampled_classes"] == 50


def test_shards_cover_the_classes():
    for classes, world in [(11, 2), (10, 4), (7, 7), (1_000_003, 8)]:
        ranges = [shard_range(classes, world, r) for r in range(world)]
        assert sum(c for _, c in ranges) == classes and ranges[0][0] == 0
        assert all(a + c == b for (a, c), (b, _) in zip(ranges, ranges[1:], strict=False))
        assert max(c for _, c in ranges) - min(c for _, c in ranges) <= 1


def test_registered_and_wrong_options_are_one_line_errors():
    assert "partial-fc" in LOSSES
    with pytest.raises(FacemetricError, match="head: partial-fc shards"):
        build_loss("partial-fc", embedding_dim=4, num_classes=10, head="sphereface")
    with pytest.raises(FacemetricError, match="sample_rate"):
        build_loss("partial-fc", embedding_dim=4, num_classes=10, sample_rate=0)
    with pytest.raises(FacemetricError, match="learn_scale"):
        build_loss("partial-fc", embedding_dim=4, num_classes=10, learn_scale=True)
    pfc = build_loss("partial-fc", embedding_dim=4, num_classes=10)
    with pytest.raises(FacemetricError, match=r"weight: expected the full classifier \[10, 4\]"):
        pfc.load_state_dict({"weight": torch.zeros(7, 4), "scale": pfc.scale})
    with pytest.raises(FacemetricError, match="labels"):
        pfc(torch.randn(3, 4), torch.tensor([0, 1, 10]))


def test_a_recipe_builds_partial_fc_like_any_loss(tmp_path):
    """``loss: {name: partial-fc, head: ..., sample_rate: ...}`` passes the recipe schema and
    the experiment gets the loss (what ``facemetric train`` builds)."""
    from facemetric.train.config import DEFAULTS, _merge, validate
    from facemetric.train.experiment import build_experiment
    from tests.conftest import tiny_config

    loss = {"name": "partial-fc", "head": "cosface", "sample_rate": 0.5, "margin": 0.2, "scale": 16.0}
    cfg = validate(_merge(DEFAULTS, tiny_config(loss, epochs=1), ""))
    exp = build_experiment(cfg, None, progress=False)
    assert isinstance(exp.loss, PartialFCLoss)
    assert (exp.loss.num_classes, exp.loss.sample_rate, exp.loss.head_name) == (10, 0.5, "cosface")


def test_training_with_sampling_separates_the_classes():
    """Gradient descent on the embeddings and the centres, 30% of the centres per step:
    the loss falls and every embedding ends nearest its own class's centre."""
    torch.manual_seed(0)
    classes, per_class = 40, 3
    pfc = PartialFCLoss(8, classes, head="arcface", sample_rate=0.3, margin=0.3, scale=16.0)
    x = torch.nn.Parameter(torch.randn(classes * per_class, 8))
    y = torch.arange(classes).repeat_interleave(per_class)
    optimizer = torch.optim.SGD([x, *pfc.parameters()], lr=0.5, momentum=0.9)
    losses = []
    for _ in range(60):
        batch = torch.randperm(len(y))[:16]  # 16 samples: at most 16 positives of 40 classes
        optimizer.zero_grad()
        loss = pfc(x[batch], y[batch])
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        assert pfc.stats["sampled_classes"] == max(12, len(y[batch].unique()))
    pfc.eval()
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert (pfc.predict(x.detach()) == y).float().mean() > 0.95
