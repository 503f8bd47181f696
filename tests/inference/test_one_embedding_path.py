"""One embedding path: ``load_model(...).embed``, ``embed_with_norms``, ``embed_files``,
``embed_identity_folder`` and the training validation evaluator (folder data, cached images)
give the same embeddings, and flip-TTA is computed in one function that every path calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import facemetric
import facemetric.inference.embedding as embedding_module
from facemetric.eval.embedding import embed_dataset
from facemetric.eval.embedding_set import embed_identity_folder
from facemetric.inference.batch import embed_files
from facemetric.inference.embedding import embed_batches, flip_tta
from facemetric.train.config import DEFAULTS, _merge
from facemetric.train.data_sources import folder_source
from facemetric.train.experiment import build_evaluator
from tests.toy_faces import make_toy_folder, make_toy_model


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("one-path")
    model_dir = make_toy_model(root / "model")
    folder = make_toy_folder(root / "faces")
    embedder = facemetric.load_model(model_dir)
    return embedder, folder, root


def _validation(embedder, folder, root, flip):
    """The training validation of folder data, wired as ``facemetric train`` wires it."""
    data = folder_source(
        root=str(folder), preprocessing=embedder.card["preprocessing"], val_people=[p.name for p in folder.iterdir()],
        val_pairs_per_fold=6, val_folds=2, val_flip=flip, cache_dir=str(root / "cache"),
        num_workers=0, progress=False,
    )
    config = _merge(DEFAULTS, {}, "")
    return data, build_evaluator(config, data)


@pytest.mark.parametrize("flip", [False, True])
def test_every_path_gives_the_same_embeddings(toy, flip):
    embedder, folder, root = toy
    data, evaluator = _validation(embedder, folder, root, flip)
    paths = list(data.val_paths)
    assert len(paths) >= 10 and evaluator.flip is flip

    by_embed = embedder.embed(paths, flip=flip)
    with_norms, norms = embedder.embed_with_norms(paths, flip=flip)
    files = embed_files(embedder, paths, flip=flip, progress=False)
    folder_set = embed_identity_folder(embedder, folder, flip=flip, progress=False)
    by_folder = dict(zip(folder_set.paths.tolist(), folder_set.embeddings, strict=True))
    from_validation = evaluator.embeddings(embedder.model)  # cached images, training wiring

    assert files.kept == paths
    np.testing.assert_array_equal(with_norms, by_embed)
    np.testing.assert_array_equal(files.embeddings, by_embed)
    np.testing.assert_array_equal(files.norms, norms)
    np.testing.assert_array_equal(np.stack([by_folder[p] for p in paths]), by_embed)
    np.testing.assert_array_equal(from_validation, by_embed)
    np.testing.assert_allclose(np.linalg.norm(by_embed, axis=1), 1.0, atol=1e-6)


def test_flip_tta_is_one_function_that_every_path_calls(toy, monkeypatch):
    embedder, folder, root = toy
    data, evaluator = _validation(embedder, folder, root, flip=True)
    paths = list(data.val_paths)[:5]
    calls: list[tuple[bool, bool]] = []

    def counting(model, x, flip, flip_mean=False):
        calls.append((flip, flip_mean))
        return flip_tta(model, x, flip, flip_mean)

    monkeypatch.setattr(embedding_module, "flip_tta", counting)
    runs = {
        "embed": lambda: embedder.embed(paths, flip=True),
        "embed_with_norms": lambda: embedder.embed_with_norms(paths, flip=True),
        "embed_tensor": lambda: embedder.embed_tensor(embedder.preprocess(paths), flip=True),
        "embed_files": lambda: embed_files(embedder, paths, flip=True, progress=False),
        "embed_identity_folder": lambda: embed_identity_folder(embedder, folder, flip=True, progress=False),
        "validation evaluator": lambda: evaluator.embeddings(embedder.model),
        "embed_dataset": lambda: embed_dataset(embedder.model, data.val),
    }
    for name, run in runs.items():
        calls.clear()
        run()
        assert calls, f"{name} does not go through the one flip function"
        want = name != "embed_dataset"  # embed_dataset: raw single-view embeddings
        assert all(flip is want for flip, _ in calls), name


def test_flip_tta_formula():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    x = torch.randn(3, 1, 3, 4)
    plain, mirrored = model(x), model(torch.flip(x, dims=[3]))
    torch.testing.assert_close(flip_tta(model, x, flip=False), plain)
    torch.testing.assert_close(flip_tta(model, x, flip=True), plain + mirrored)
    torch.testing.assert_close(flip_tta(model, x, flip=True, flip_mean=True), (plain + mirrored) / 2)
    out = embed_batches(model, [x[:2], x[2:]], flip=True)
    torch.testing.assert_close(out.norms, (plain + mirrored).double().norm(dim=1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.embeddings, torch.nn.functional.normalize(plain + mirrored, dim=1))
    model.train()
    embed_batches(model, [x])
    assert model.training  # the caller's mode is restored
    empty = embed_batches(model, [], embedding_dim=4)
    assert empty.embeddings.shape == (0, 4) and empty.norms.shape == (0,)
