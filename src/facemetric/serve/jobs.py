"""Background jobs (clustering uploaded photos): submitted, run one at a time in a worker
thread, polled by id.

A job is ``{"id", "kind", "status": queued|running|done|failed, "created", "started",
"finished", "result" | "error"}``. Ids are random (``secrets.token_hex(8)``); only the key that
submitted a job (or an admin key) can read it. At most ``keep`` finished jobs are remembered
(oldest forgotten first); at most ``max_pending`` wait (beyond: 503).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from facemetric.errors import FacemetricError
from facemetric.serve.errors import ApiError, busy


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Jobs:
    """See the module docstring."""

    def __init__(self, keep: int = 100, max_pending: int = 8):
        self.keep = int(keep)
        self.max_pending = int(max_pending)
        self._jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._owners: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facemetric-job")

    def submit(self, kind: str, fn: Callable[[], dict[str, Any]], owner: str | None) -> dict[str, Any]:
        with self._lock:
            pending = sum(1 for j in self._jobs.values() if j["status"] in ("queued", "running"))
            if pending >= self.max_pending:
                raise busy(f"{pending} jobs already waiting; retry later", 10)
            job_id = secrets.token_hex(8)
            job = {"id": job_id, "kind": kind, "status": "queued", "created": _now(), "started": None,
                   "finished": None, "result": None, "error": None}
            self._jobs[job_id] = job
            self._owners[job_id] = owner
            self._forget_old()
        self._pool.submit(self._run, job_id, fn)
        return dict(job)

    def _forget_old(self) -> None:
        done = [k for k, j in self._jobs.items() if j["status"] in ("done", "failed")]
        for k in done[: max(0, len(done) - self.keep)]:
            self._jobs.pop(k)
            self._owners.pop(k, None)

    def _run(self, job_id: str, fn: Callable[[], dict[str, Any]]) -> None:
        with self._lock:
            self._jobs[job_id].update(status="running", started=_now())
        try:
            result, error, status = fn(), None, "done"
        except (ApiError, FacemetricError) as exc:
            result, error, status = None, " ".join(str(exc).split()), "failed"
        except Exception as exc:  # noqa: BLE001 - a job's bug is reported in its status
            result, error, status = None, f"internal error {type(exc).__name__}", "failed"
        with self._lock:
            self._jobs[job_id].update(status=status, finished=_now(), result=result, error=error)

    def get(self, job_id: str, owner: str | None, admin: bool) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not (admin or self._owners.get(job_id) == owner):
                raise ApiError(404, f"job {job_id[:40]!r}: no such job", "job_id")
            return dict(job)

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


__all__ = ["Jobs"]
