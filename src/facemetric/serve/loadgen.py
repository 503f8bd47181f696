"""A load generator for the service (stdlib only): concurrent clients mixing identify and enrol
requests against a running service, bounded in requests and seconds. Used by the load test
(tests/serve/test_load.py) and the benchmark (benchmarks/bench_serve_load.py).

Each of ``clients`` threads keeps one HTTP/1.1 connection and sends up to ``requests`` requests,
stopping at ``duration_s``; a request is an enrolment (``enrol_fraction`` of them: a photo of a
new identity ``<prefix><client>-<i>``) or an identification of one photo. Every answer other
than 2xx is an error (status and body kept). Latencies are wall-clock per request.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field

import numpy as np


def multipart(fields: list[tuple[str, str, bytes]], values: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of files ``(field, filename, bytes)`` and text ``values``."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (values or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class LoadResult:
    """``latency[kind]``: seconds per successful request (``identify``/``enrol``); ``errors``:
    ``(kind, status, body)``; ``enrolled``: ``{identity: image ids}`` acknowledged; ``seconds``:
    wall time of the run."""

    latency: dict[str, list[float]] = field(default_factory=lambda: {"identify": [], "enrol": []})
    errors: list[tuple[str, int, str]] = field(default_factory=list)
    enrolled: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latency.values()) + len(self.errors)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per kind and ``all``: count, p50/p99 in ms, requests/s."""
        out = {}
        kinds = {**self.latency, "all": [x for v in self.latency.values() for x in v]}
        for kind, xs in kinds.items():
            a = np.asarray(xs, dtype=np.float64) * 1000
            out[kind] = {"n": int(a.size),
                         "p50_ms": float(np.percentile(a, 50)) if a.size else float("nan"),
                         "p99_ms": float(np.percentile(a, 99)) if a.size else float("nan"),
                         "rps": a.size / self.seconds if self.seconds else float("nan")}
        return out


def run_load(base_url: str, key: str, gallery: str, photos: list[bytes], *, clients: int = 4,
             requests: int = 20, duration_s: float = 30.0, enrol_fraction: float = 0.3, seed: int = 0,
             prefix: str = "load-", timeout_s: float = 60.0) -> LoadResult:
    """Run the load (see the module docstring) and return its :class:`LoadResult`."""
    url = urllib.parse.urlsplit(base_url)
    result = LoadResult()
    lock = threading.Lock()
    t0 = time.monotonic()
    deadline = t0 + duration_s

    def client(c: int) -> None:
        rng = random.Random(seed * 1000 + c)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout_s)
        try:
            for i in range(requests):
                if time.monotonic() > deadline:
                    break
                photo = photos[rng.randrange(len(photos))]
                if rng.random() < enrol_fraction:
                    kind, name = "enrol", f"{prefix}{c}-{i}"
                    path = f"/v1/galleries/{gallery}/identities/{name}"
                    body, ctype = multipart([("photos", "p.png", photo)], {"allow_duplicates": "true"})
                else:
                    kind, name = "identify", None
                    path = f"/v1/galleries/{gallery}/identify"
                    body, ctype = multipart([("photos", "p.png", photo)], {"k": "3"})
                start = time.perf_counter()
                try:
                    conn.request("POST", path, body, {"Authorization": f"Bearer {key}", "Content-Type": ctype})
                    resp = conn.getresponse()
                    data = resp.read()
                    status = resp.status
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout_s)
                    status, data = 0, repr(exc).encode()
                took = time.perf_counter() - start
                with lock:
                    if 200 <= status < 300:
                        result.latency[kind].append(took)
                        if name is not None:
                            result.enrolled[name] = json.loads(data)["image_ids"]
                    else:
                        result.errors.append((kind, status, data[:300].decode("utf-8", "replace")))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + timeout_s + 5)
    result.seconds = time.monotonic() - t0
    return result


__all__ = ["LoadResult", "multipart", "run_load"]
