"""facemetric.distributed: the one-process fallbacks, and 2 gloo processes on loopback
(collectives, and the gradient of all_gather_with_grad against the 1-process global batch)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from facemetric import distributed as fd

SIZES = (3, 2)  # rows per rank: unequal on purpose (a short last batch)


def _inputs():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, 4, generator=g, dtype=torch.float64) for n in SIZES]
    ws = [torch.randn(sum(SIZES), 4, generator=g, dtype=torch.float64) for _ in SIZES]
    return xs, ws


def _loss(rank_weight: torch.Tensor, gathered: torch.Tensor) -> torch.Tensor:
    # a non-linear loss of the whole global batch, different on every rank
    return (rank_weight * gathered.tanh() ** 2).sum() + gathered.pow(3).mean()


def _worker():
    r, n = fd.rank(), fd.world_size()
    xs, ws = _inputs()
    x = xs[r].clone().requires_grad_(True)
    gathered = fd.all_gather_with_grad(x)
    _loss(ws[r], gathered).backward()
    return {
        "rank": r, "world": n, "main": fd.is_main_process(), "dist": fd.is_distributed(),
        "gathered": gathered.detach(), "grad": x.grad,
        "sum": fd.all_reduce_sum(torch.tensor([float(r + 1), 10.0 * r])),
        "mean": fd.all_reduce_mean(torch.tensor([float(r + 1)])),
        "object": fd.broadcast_object({"from": r, "list": [r] * 3}),
        "labels": fd.all_gather_no_grad(torch.arange(SIZES[r]) + 100 * r),
        "backend": dist.get_backend(),
    }


@pytest.fixture(scope="module")
def two_ranks():
    return fd.spawn_local(_worker, 2, timeout_s=90)


def test_two_processes_gather_in_rank_order_with_the_1_process_gradient(two_ranks):
    xs, ws = _inputs()
    full = torch.cat(xs).clone().requires_grad_(True)
    # the objective DDP optimises: the sum of every rank's loss on the global batch
    sum(_loss(w, full) for w in ws).backward()
    expected = full.grad.split(list(SIZES))
    for r, out in enumerate(two_ranks):
        assert out["rank"] == r and out["world"] == 2 and out["dist"] and out["main"] == (r == 0)
        assert out["backend"] == "gloo"
        torch.testing.assert_close(out["gathered"], torch.cat(xs), rtol=0, atol=0)
        torch.testing.assert_close(out["grad"], expected[r], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out["labels"], torch.tensor([0, 1, 2, 100, 101]))


def test_two_processes_reduce_and_broadcast(two_ranks):
    for out in two_ranks:
        torch.testing.assert_close(out["sum"], torch.tensor([3.0, 10.0]))
        torch.testing.assert_close(out["mean"], torch.tensor([1.5]))
        assert out["object"] == {"from": 0, "list": [0, 0, 0]}


def test_one_process_needs_no_process_group(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert fd.init_from_env() is False and not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert fd.init_from_env() is False and not dist.is_initialized()
    assert (fd.rank(), fd.world_size(), fd.is_main_process(), fd.is_distributed()) == (0, 1, True, False)
    x = torch.randn(3, 2, requires_grad=True)
    assert fd.all_gather_with_grad(x) is x
    s = fd.all_reduce_sum(x)
    assert s is not x and not s.requires_grad and torch.equal(s, x.detach())
    torch.testing.assert_close(fd.all_reduce_mean(x), x.detach())
    obj = {"a": 1}
    assert fd.broadcast_object(obj) is obj
    fd.barrier()
    assert fd.device_for_rank("cpu") == torch.device("cpu")


def _boom():
    if fd.rank() == 1:
        raise ValueError("rank one failed on purpose")
    return fd.rank()


def test_a_failing_rank_is_reported_with_its_traceback():
    with pytest.raises(RuntimeError, match="rank one failed on purpose"):
        fd.spawn_local(_boom, 2, timeout_s=60)
