"""Fixtures of the service tests (see serve_helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")

from facemetric.inference import load_model  # noqa: E402
from tests.serve.serve_helpers import toy_photos  # noqa: E402
from tests.toy_faces import make_toy_model  # noqa: E402


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory) -> Path:
    return make_toy_model(tmp_path_factory.mktemp("serve-model") / "toy")


@pytest.fixture(scope="session")
def toy_embedder(toy_model_dir):
    return load_model(toy_model_dir)


@pytest.fixture(scope="session")
def photos() -> dict[str, list[bytes]]:
    return toy_photos()
