"""The bounded inference pool: concurrent requests' photos are coalesced into batches for the
one embedding function.

A request preprocesses its photos (decode, align, crop, resize: :meth:`FaceEmbedder.preprocess`)
in its own thread and :meth:`InferencePool.submit`\\ s the network inputs ``[n, C, H, W]``. Each
of ``workers`` threads takes the oldest waiting job, then keeps taking jobs until the batch
holds ``max_batch`` rows or ``batch_wait_ms`` has passed since the first, concatenates them and
runs :meth:`FaceEmbedder.embed_batches <facemetric.inference.FaceEmbedder.embed_batches>` (the
one embedding path, the card's flip and normalisation rules) once; each job gets its own rows
back. At most ``max_queue`` rows wait: beyond that :meth:`submit` refuses at once with a 503
(back-pressure instead of an unbounded queue). A batch's failure fails each of its jobs.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np
import torch

from facemetric.serve.errors import busy


class InferencePool:
    """See the module docstring. ``on_batch(rows, seconds)`` is called after every batch
    (metrics)."""

    def __init__(self, embedder: Any, *, workers: int = 1, max_batch: int = 32, batch_wait_ms: float = 5.0,
                 max_queue: int = 512, flip: bool = False,
                 on_batch: Callable[[int, float], None] | None = None):
        self.embedder = embedder
        self.max_batch = int(max_batch)
        self.wait_s = float(batch_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.flip = bool(flip)
        self.on_batch = on_batch
        self._jobs: collections.deque[tuple[torch.Tensor, Future]] = collections.deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closing = False
        self._threads = [threading.Thread(target=self._run, name=f"facemetric-infer-{i}", daemon=True)
                         for i in range(int(workers))]
        for t in self._threads:
            t.start()

    @property
    def queued(self) -> int:
        """Rows waiting for a worker."""
        return self._queued_rows

    def submit(self, inputs: torch.Tensor) -> Future:
        """Queue network inputs ``[n, C, H, W]``; the future gives float32 embeddings ``[n, D]``."""
        fut: Future = Future()
        n = int(inputs.shape[0])
        with self._cond:
            if self._closing:
                raise busy("the service is shutting down", 5)
            if self._queued_rows + n > self.max_queue and self._queued_rows > 0:
                raise busy(f"inference queue full ({self._queued_rows} photos waiting); retry", 1)
            self._jobs.append((inputs, fut))
            self._queued_rows += n
            self._cond.notify()
        return fut

    def embed(self, inputs: torch.Tensor, timeout_s: float) -> np.ndarray:
        """:meth:`submit` and wait at most ``timeout_s`` (then a 503)."""
        fut = self.submit(inputs)
        try:
            return fut.result(timeout=timeout_s)
        except FutureTimeout:
            fut.cancel()
            raise busy(f"no inference result within {timeout_s:g} s; retry", 2) from None

    def _take(self) -> list[tuple[torch.Tensor, Future]] | None:
        with self._cond:
            while not self._jobs:
                if self._closing:
                    return None
                self._cond.wait(0.5)
            batch = [self._jobs.popleft()]
            rows = int(batch[0][0].shape[0])
            deadline = time.monotonic() + self.wait_s
            while rows < self.max_batch:
                if not self._jobs:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._closing:
                        break
                    self._cond.wait(left)
                    continue
                if rows + int(self._jobs[0][0].shape[0]) > self.max_batch:
                    break
                job = self._jobs.popleft()
                batch.append(job)
                rows += int(job[0].shape[0])
            self._queued_rows -= rows
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [(x, f) for x, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            t0 = time.perf_counter()
            try:
                x = torch.cat([x for x, _ in live])
                emb = self.embedder.embed_batches([x], self.flip).embeddings.numpy()
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                for _, f in live:
                    f.set_exception(exc)
                continue
            if self.on_batch is not None:
                self.on_batch(int(x.shape[0]), time.perf_counter() - t0)
            start = 0
            for xi, f in live:
                n = int(xi.shape[0])
                f.set_result(emb[start:start + n])
                start += n

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop taking new jobs, finish the queued ones (up to ``timeout_s``), stop the threads."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))


__all__ = ["InferencePool"]
