"""The service's one error shape: every refusal is JSON ``{"error": <one line>, "field":
<what it is about or null>, "status": <code>}`` -- never a traceback, never an HTML page."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the service refuses: HTTP ``status``, the request ``field`` it is about
    (``photos[1]``, ``identity``, ``Authorization``, ...; None for the request as a whole), a
    one-line ``message`` and extra response ``headers`` (``Retry-After``, ``WWW-Authenticate``)."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = " ".join(str(message).split())
        self.field = field
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "field": self.field, "status": self.status}


def busy(message: str, retry_after_s: float = 1.0, field: str | None = None) -> ApiError:
    """503 with ``Retry-After`` (whole seconds, at least 1)."""
    return ApiError(503, message, field, {"Retry-After": str(max(1, round(retry_after_s)))})


__all__ = ["ApiError", "busy"]
