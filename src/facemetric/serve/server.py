"""Running the service: :func:`serve` starts uvicorn on the app of a :class:`ServeConfig`.

* Access logs are JSON lines on stderr (:mod:`facemetric.serve.observability`); uvicorn's own
  access log is off (it would log the query string).
* Graceful shutdown: on SIGTERM or Ctrl-C uvicorn stops accepting connections and lets the
  requests in flight finish (at most ``shutdown_timeout_s``); the app's lifespan then drains
  the inference queue and closes the galleries. A gallery write interrupted by SIGKILL is rolled
  back by the gallery's commit protocol (all or nothing).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch
import uvicorn

from facemetric.serve.app import create_app
from facemetric.serve.config import ServeConfig
from facemetric.serve.observability import ACCESS_LOGGER


def configure_logging(level: str = "info") -> None:
    """JSON access lines (already JSON) and service messages on stderr, one per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in (ACCESS_LOGGER, "facemetric.serve"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level.upper())
        lg.propagate = False


def build_server(config: ServeConfig, embedder: Any = None, **uvicorn_options: Any) -> uvicorn.Server:
    """A :class:`uvicorn.Server` for ``config`` (not started)."""
    app = create_app(config, embedder)
    uv = uvicorn.Config(app, host=config.host, port=config.port, access_log=False, log_level=config.log_level,
                        timeout_graceful_shutdown=int(config.shutdown_timeout_s) or None,
                        **uvicorn_options)
    return uvicorn.Server(uv)


def serve(config: ServeConfig) -> None:
    """Run the service until SIGTERM / Ctrl-C (see the module docstring)."""
    configure_logging(config.log_level)
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    build_server(config).run()


__all__ = ["build_server", "configure_logging", "serve"]
