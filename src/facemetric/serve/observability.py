"""Operations: Prometheus metrics, structured JSON access logs and the request-size limit.

* :class:`Metrics` holds the service's own :class:`prometheus_client.CollectorRegistry`
  (served at ``/metrics`` in the Prometheus text format): ``facemetric_requests_total{method,
  route, status}``, ``facemetric_request_seconds{route}`` (histogram),
  ``facemetric_inference_batch_rows`` (histogram: the coalesced batch sizes),
  ``facemetric_inference_seconds`` (histogram), ``facemetric_photos_embedded_total``,
  ``facemetric_inference_queue_rows`` (gauge) and ``facemetric_gallery_busy_total`` (writer
  waits that ended in a 503).
* :class:`AccessLog` (ASGI middleware) writes one JSON object per request on the
  ``facemetric.serve.access`` logger: ``time, method, path, route, status, ms, bytes_in,
  bytes_out, key, client``. ``key`` is the key's public *id* (or ``anonymous``/``none``),
  never the key itself; headers and query strings are not logged.
* :class:`BodyLimit` (ASGI middleware) refuses a body above ``max_bytes`` with 413 JSON: at once
  from ``Content-Length``, else while it streams in (chunked uploads), before any parsing.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ACCESS_LOGGER = "facemetric.serve.access"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("facemetric_requests_total", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram("facemetric_request_seconds", "Request latency", ["route"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.batch_rows = Histogram("facemetric_inference_batch_rows", "Photos per coalesced inference batch",
                                    registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.batch_seconds = Histogram("facemetric_inference_seconds", "Seconds per inference batch", registry=r)
        self.photos = Counter("facemetric_photos_embedded_total", "Photos embedded", registry=r)
        self.queue = Gauge("facemetric_inference_queue_rows", "Photos waiting for inference", registry=r)
        self.gallery_busy = Counter("facemetric_gallery_busy_total", "Gallery writes refused after the writer wait",
                                    registry=r)

    def on_batch(self, rows: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_seconds.observe(seconds)
        self.photos.inc(rows)


def _send_json(status: int, body: dict[str, Any]):
    data = json.dumps(body).encode("utf-8")
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                         (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": data}


class BodyLimit:
    """ASGI middleware: request bodies above ``max_bytes`` get 413 (see the module docstring)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = {"error": f"request body: larger than the limit of {self.max_bytes} bytes "
                            "(FACEMETRIC_MAX_REQUEST_BYTES)", "field": "body", "status": 413}
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = -1
            if n < 0:
                for m in _send_json(400, {"error": "Content-Length: not a number", "field": "Content-Length",
                                          "status": 400}):
                    await send(m)
                return
            if n > self.max_bytes:
                for m in _send_json(413, too_big):
                    await send(m)
                return
        # read the whole body (bounded by the limit), then replay it to the app
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                for m in _send_json(413, too_big):
                    await send(m)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        scope.setdefault("state", {})["bytes_in"] = total
        await self.app(scope, replay, send)


class AccessLog:
    """ASGI middleware: one JSON log line and the metrics per request (module docstring)."""

    def __init__(self, app: Any, metrics: Metrics, logger: logging.Logger | None = None):
        self.app = app
        self.metrics = metrics
        self.log = logger or logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        bytes_out = 0

        async def send_wrapper(message: dict) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - t0
            state = scope.get("state") or {}
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope.get("method", ""), route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            client = scope.get("client")
            self.log.info(json.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "method": scope.get("method"),
                "path": scope.get("path"),
                "route": route,
                "status": status,
                "ms": round(seconds * 1000, 2),
                "bytes_in": state.get("bytes_in", 0),
                "bytes_out": bytes_out,
                "key": state.get("key_id", "none"),
                "client": f"{client[0]}:{client[1]}" if client else None,
            }, ensure_ascii=False))


__all__ = ["ACCESS_LOGGER", "AccessLog", "BodyLimit", "Metrics"]
