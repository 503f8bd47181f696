"""Data-parallel helpers over ``torch.distributed``: one process per device, launched by torchrun.

One device needs no process group: every helper here works unchanged in a plain process
(``world_size() == 1``, collectives return their input). A torchrun launch sets ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` reads
them and joins the group (gloo on CPU, NCCL when CUDA is available), and only when
``WORLD_SIZE > 1``.

Gradient contract of :func:`all_gather_with_grad`: forward, every rank gets the global batch
``cat([x_0, ..., x_{N-1}])`` (rank order, dim 0; ranks may hold different numbers of rows).
Backward, the gradient of rank ``r``'s input is the *sum over ranks* of the gradients that each
rank's loss puts on rows of rank ``r``:
``dx_r = sum_q dL_q / dx_r``. With the same loss on every rank (``L_q = L`` computed on the global
batch) that is ``N * dL/dx_r``, and DDP's averaging of parameter gradients over the ``N`` ranks
turns it back into exactly ``dL/dtheta``, the 1-process gradient on the global batch.

:func:`spawn_local` runs a function in ``N`` local processes joined by gloo over loopback (tests
and small CPU checks: bounded timeouts, results returned in rank order).
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import socket
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_with_grad",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "all_gather_no_grad",
    "broadcast_object",
    "device_for_rank",
    "init_from_env",
    "is_distributed",
    "is_main_process",
    "local_rank",
    "rank",
    "shutdown",
    "spawn_local",
    "world_size",
]

#: default timeout of collectives (seconds); torchrun jobs may raise it by env var
DEFAULT_TIMEOUT_S = float(os.environ.get("FACEMETRIC_DIST_TIMEOUT", "1800"))


def is_distributed() -> bool:
    """Whether a process group is initialised (a torchrun launch with ``WORLD_SIZE > 1``)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the group (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's rank on its machine (torchrun's ``LOCAL_RANK``; 0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 (or a plain process): the one that logs, evaluates and writes checkpoints."""
    return rank() == 0


def device_for_rank(requested: str | torch.device = "cpu") -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` when ``requested`` is CUDA and a
    process group is up, else ``requested`` itself."""
    device = torch.device(requested)
    if device.type == "cuda" and is_distributed() and device.index is None:
        return torch.device("cuda", local_rank())
    return device


def init_from_env(backend: str | None = None, timeout_s: float | None = None) -> bool:
    """Join the process group described by torchrun's environment variables.

    Returns ``True`` when a group with more than one process is (now) initialised, ``False``
    on one process (``WORLD_SIZE`` unset or 1): no process group is created then. ``backend``
    defaults to ``"nccl"`` when CUDA is available, else ``"gloo"``. With NCCL the current CUDA
    device is set to ``LOCAL_RANK``.
    """
    if is_distributed():
        return dist.get_world_size() > 1
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=int(os.environ["RANK"]),
        world_size=size,
        timeout=timedelta(seconds=timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S),
    )
    return True


def shutdown() -> None:
    """Leave the process group (no-op without one)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed() and world_size() > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks, returned as a new tensor (the input is not modified;
    no gradient flows through). Without a process group: a detached copy of ``tensor``."""
    out = tensor.detach().clone()
    if is_distributed() and world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise mean over ranks (:func:`all_reduce_sum` divided by the world size)."""
    out = all_reduce_sum(tensor)
    size = world_size()
    if size > 1:
        out = out / size if not out.is_floating_point() else out.div_(size)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable) on every rank; ``obj`` itself without a group."""
    if not (is_distributed() and world_size() > 1):
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        sizes = _gather_sizes(tensor.shape[0], tensor.device)
        largest = max(sizes)
        padded = tensor.contiguous()
        if tensor.shape[0] < largest:
            pad = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
            padded = torch.cat([padded, pad])
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        ctx.sizes = sizes
        ctx.rank = rank()
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The global batch: every rank's ``tensor`` concatenated along dim 0 in rank order.

    Differentiable: see the module docstring for the gradient contract (each rank's slice gets
    the sum over ranks of the gradients put on it). Without a process group: ``tensor``.
    """
    if not (is_distributed() and world_size() > 1):
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather_with_grad` but detached (labels, indices, statistics)."""
    if not (is_distributed() and world_size() > 1):
        return tensor
    with torch.no_grad():
        return _AllGatherWithGrad.apply(tensor.detach())


# ---------------------------------------------------------------------------------------------
# local multi-process runs (tests, CPU checks)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child(fn: Callable[..., Any], index: int, size: int, port: int, args: tuple,
           queue: Any, timeout_s: float, threads: int) -> None:
    os.environ.update({
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(index),
        "LOCAL_RANK": str(index), "WORLD_SIZE": str(size), "LOCAL_WORLD_SIZE": str(size),
    })
    torch.set_num_threads(threads)
    try:
        init_from_env(backend="gloo", timeout_s=timeout_s)
        result = fn(*args)
        buffer = io.BytesIO()
        torch.save(result, buffer)
        queue.put((index, True, buffer.getvalue()))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        queue.put((index, False, traceback.format_exc()))
    finally:
        shutdown()


def spawn_local(fn: Callable[..., Any], nprocs: int, args: tuple = (), timeout_s: float = 120.0,
                threads: int = 1) -> list[Any]:
    """Run ``fn(*args)`` in ``nprocs`` fresh processes joined by a gloo group on 127.0.0.1.

    ``fn`` must be importable by name (a module-level function). Each process sees torchrun's
    environment variables and uses ``threads`` intra-op threads. Returns the results (anything
    ``torch.save`` can write) in rank order. A child's exception is raised here as
    ``RuntimeError`` with its traceback; a run longer than ``timeout_s`` is killed and raises.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    # not daemonic, so that ``fn`` may start DataLoader workers; killed below if still running
    procs = [ctx.Process(target=_child, args=(fn, i, nprocs, port, args, queue, timeout_s, threads))
             for i in range(nprocs)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors: list[str] = []
    try:
        for _ in range(nprocs):
            try:
                index, ok, payload = queue.get(timeout=timeout_s)
            except Exception as exc:  # queue.Empty
                raise RuntimeError(f"spawn_local: no result within {timeout_s:.0f} s") from exc
            if ok:
                results[index] = torch.load(io.BytesIO(payload), weights_only=False)
            else:
                errors.append(f"rank {index}:\n{payload}")
                break
    finally:
        for p in procs:
            p.join(timeout=5 if not errors else 0.5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    if errors:
        raise RuntimeError("spawn_local: a process failed\n" + "\n".join(errors))
    return [results[i] for i in range(nprocs)]
