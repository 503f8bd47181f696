"""The service's settings (:class:`ServeConfig`): every field is a ``facemetric serve`` flag
and an environment variable ``FACEMETRIC_<FIELD>`` (flags win), read by
:meth:`ServeConfig.from_env`.

Limits (hostile input): ``max_request_bytes`` (whole request body, checked while it streams
in), ``max_photos`` (photos in one request; ``max_cluster_photos`` for a clustering job),
``max_pixels`` (decoded pixels per photo, checked on the header before any decoding; default
the loaders' ``FACEMETRIC_MAX_IMAGE_PIXELS``). Concurrency: ``workers`` inference threads take
up to ``max_batch`` photos from concurrent requests per forward pass, waiting at most
``batch_wait_ms`` for more to arrive; at most ``max_queue`` photos wait (beyond: 503);
``write_wait_s`` bounds the wait for a gallery's writer lock (beyond: 503 + Retry-After);
``request_timeout_s`` bounds a request's wait for its embeddings. ``torch_threads`` sets
torch's intra-op threads for the process (``torch.set_num_threads``) when the service starts:
on a busy or small CPU, 1 per inference worker avoids threads spinning on each other (on a
loaded 2-core machine a 24x24 toy forward took 0.7 s with 2 threads, 5 ms with 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from facemetric.data.image_io import image_limits
from facemetric.errors import ConfigError

ROLES = ("read", "write", "admin")
ENV_PREFIX = "FACEMETRIC_"


@dataclass
class ServeConfig:
    """Settings of one service (see the module docstring)."""

    model: str = "dlib-resnet-v1"
    gallery_dir: Path = Path("galleries")
    host: str = "127.0.0.1"
    port: int = 8000
    keys_file: Path | None = None  # default: <gallery_dir>/keys.json
    allow_anonymous: bool = False
    anonymous_role: str = "read"
    max_request_bytes: int = 20 * 1024 * 1024
    max_photos: int = 16
    max_cluster_photos: int = 500
    max_pixels: int = field(default_factory=lambda: image_limits()[1])
    workers: int = 1
    torch_threads: int | None = None  # torch's intra-op threads (process-wide); None: torch's default
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    max_queue: int = 512
    write_wait_s: float = 5.0
    request_timeout_s: float = 60.0
    flip: bool = False
    thumbnail_px: int = 96
    shutdown_timeout_s: float = 10.0
    log_level: str = "info"

    def __post_init__(self) -> None:
        self.gallery_dir = Path(self.gallery_dir)
        if self.keys_file is not None:
            self.keys_file = Path(self.keys_file)
        if self.anonymous_role not in ROLES:
            raise ConfigError(f"anonymous_role: expected one of {', '.join(ROLES)}, got {self.anonymous_role!r}")
        for name in ("port", "max_request_bytes", "max_photos", "max_cluster_photos", "max_pixels",
                     "workers", "max_batch", "max_queue", "thumbnail_px"):
            v = getattr(self, name)
            low = 0 if name == "port" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name}: expected an integer >= {low}, got {v!r}")
        if self.torch_threads is not None and (isinstance(self.torch_threads, bool)
                                               or not isinstance(self.torch_threads, int) or self.torch_threads < 1):
            raise ConfigError(f"torch_threads: expected an integer >= 1, got {self.torch_threads!r}")
        for name in ("batch_wait_ms", "write_wait_s", "request_timeout_s", "shutdown_timeout_s"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"{name}: expected a number >= 0, got {getattr(self, name)!r}")

    @property
    def keys_path(self) -> Path:
        return self.keys_file if self.keys_file is not None else self.gallery_dir / "keys.json"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ServeConfig:
        """Defaults, then ``FACEMETRIC_<FIELD>`` variables, then ``overrides`` (None = unset).
        A variable that does not parse is a one-line :class:`ConfigError` naming it."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = str(f.type)
            try:
                if "bool" in kind:
                    if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError(raw)
                    values[f.name] = raw.lower() in ("1", "true", "yes")
                elif kind in ("int", "int | None"):
                    values[f.name] = int(raw)
                elif kind == "float":
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                raise ConfigError(f"{ENV_PREFIX}{f.name.upper()}: cannot parse {raw!r} as {kind}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


__all__ = ["ENV_PREFIX", "ROLES", "ServeConfig"]
