"""Fixtures of the service tests (see serve_helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The service's inference threads with one torch thread each (as ``--torch-threads 1``):
    on a shared 2-core machine two intra-op threads spin on each other (0.7 s a toy forward);
    restored after each module, so no other test area sees the change."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
