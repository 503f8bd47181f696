"""``facemetric serve``: the HTTP service (FastAPI + uvicorn).

    from facemetric.serve import ServeConfig, create_app
    app = create_app(ServeConfig(model="runs/x/model", gallery_dir="galleries"))

Parts: :mod:`~facemetric.serve.app` (routes under ``/v1``, auth, errors),
:mod:`~facemetric.serve.keys` (hashed API keys with roles and gallery scopes),
:mod:`~facemetric.serve.uploads` (content sniffing, size limits, decoding),
:mod:`~facemetric.serve.pool` (the bounded inference pool that batches concurrent requests),
:mod:`~facemetric.serve.galleries` (galleries, bounded writer waits, thumbnails),
:mod:`~facemetric.serve.jobs` (background clustering), :mod:`~facemetric.serve.observability`
(metrics, JSON access logs, the body limit), :mod:`~facemetric.serve.config` (flags and
``FACEMETRIC_*`` variables), :mod:`~facemetric.serve.server` (uvicorn, graceful shutdown) and
the web page ``static/index.html``.
"""

from facemetric.serve.app import create_app
from facemetric.serve.config import ServeConfig
from facemetric.serve.keys import KeyRecord, KeyStore
from facemetric.serve.server import build_server, serve

__all__ = ["KeyRecord", "KeyStore", "ServeConfig", "build_server", "create_app", "serve"]
