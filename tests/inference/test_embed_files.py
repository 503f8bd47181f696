"""embed_files: per-file failures are skipped with a reason; the embeddings equal
FaceEmbedder.embed (same preprocessing), with and without flip."""

from __future__ import annotations

import numpy as np
import pytest

import facemetric
from facemetric.errors import FacemetricError
from facemetric.inference.batch import embed_files
from tests.toy_faces import make_toy_folder, make_toy_model


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    model = make_toy_model(root / "model")
    folder = make_toy_folder(root / "faces")
    return facemetric.load_model(model), folder


def test_equals_embed_and_skips_bad_files(toy, tmp_path):
    embedder, folder = toy
    good = sorted(str(p) for p in folder.rglob("*.png"))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image at all")
    missing = tmp_path / "missing.png"
    paths = [good[0], str(corrupt), *good[1:5], str(missing), *good[5:]]
    for flip in (False, True):
        r = embed_files(embedder, paths, flip=flip, batch_size=3, progress=False)
        assert r.kept == good
        assert set(r.skipped) == {str(corrupt), str(missing)}
        assert r.skipped[str(missing)] == "file not found"
        assert "corrupt.jpg" in r.skipped[str(corrupt)] or "image" in r.skipped[str(corrupt)].lower()
        np.testing.assert_allclose(r.embeddings, embedder.embed(good, flip=flip), atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(r.embeddings, axis=1), 1.0, atol=1e-6)
        raw = embedder.embed(good, flip=flip, normalize=False)
        np.testing.assert_allclose(r.norms, np.linalg.norm(raw, axis=1), rtol=1e-5)
        assert r.alignment is None


def test_strict_mode_names_the_file(toy, tmp_path):
    embedder, folder = toy
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"\x89PNG broken")
    with pytest.raises(FacemetricError, match="bad.png"):
        embed_files(embedder, [str(next(folder.rglob("*.png"))), str(corrupt)], skip_failures=False, progress=False)
    with pytest.raises(FacemetricError, match="batch_size"):
        embed_files(embedder, [], batch_size=0, progress=False)


def test_nothing_to_embed_gives_an_empty_result(toy, tmp_path):
    embedder, _ = toy
    r = embed_files(embedder, [tmp_path / "nope.png"], progress=False)
    assert r.embeddings.shape == (0, 8) and r.kept == [] and list(r.skipped.values()) == ["file not found"]
