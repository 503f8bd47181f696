"""End-to-end on real faces (ORL, an LFW subset): training improves verification, the saved
artifact reloads with identical embeddings, and evaluation and inference share preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import facemetric
from facemetric.cli.main import main
from facemetric.train.config import DEFAULTS, _merge, validate
from facemetric.train.experiment import build_experiment, run_experiment


def orl_config(shared, tmp_path, loss="softmax", epochs=4, **train):
    return {
        "name": "orl-test",
        "seed": 0,
        "data": {
            "name": "folder", "root": str(shared / "att-faces"),
            "people": [f"s{i}" for i in range(1, 31)],
            "preprocessing": {"input_size": [32, 32], "color": "L"},
            "random_crop": False, "flip": True,
            "val_people": [f"s{i}" for i in range(31, 41)], "val_pairs_per_fold": 20, "val_folds": 5,
            "cache_dir": str(tmp_path / "cache"), "progress": False,
        },
        "model": {"name": "lenets++", "embedding_dim": 64, "widths": [16, 32, 32]},
        "loss": {"name": loss},
        "sampler": {"name": "uniform", "batch_size": 32},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": epochs, "eval_every": 1, "device": "cpu", "grad_clip": 5.0, **train},
    }


def test_lfw_training_improves_verification_over_the_untrained_network(shared_data, tmp_path):
    """LFW View 1: train on DevTrain people with >= 10 images (111 people, 3,264 images) at
    32x32, evaluate on the first 100+100 DevTest pairs (people disjoint from training)."""
    lfw = shared_data / "lfw-deepfunneled"
    pairs = _lfw_subset_pairs(shared_data, tmp_path, n=100)
    cfg = {
        "name": "lfw-small", "seed": 0,
        "data": {
            "name": "folder", "root": str(lfw), "people": str(lfw / "peopleDevTrain.txt"),
            "min_images": 10, "preprocessing": {"input_size": [32, 32], "crop": [120, 120]},
            "random_crop": False, "flip": True, "val_pairs": str(pairs),
            "cache_dir": str(tmp_path / "cache"), "progress": False,
        },
        "model": {"name": "lenets++", "embedding_dim": 64, "widths": [16, 32, 64]},
        "loss": {"name": "softmax"},
        "sampler": {"name": "uniform", "batch_size": 64},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 4, "eval_every": 4, "device": "cpu", "grad_clip": 5.0},
    }
    untrained = build_experiment(validate(_merge(DEFAULTS, cfg, "")), None, progress=False)
    assert untrained.data.summary["identities"] == 111
    before = untrained.trainer.evaluate()
    after = run_experiment(cfg, run_dir=tmp_path / "run", progress=False).final["val"]
    assert after["auc"] >= before["auc"] + 0.07, (before["auc"], after["auc"])
    assert after["accuracy_mean"] >= before["accuracy_mean"] + 0.05


def test_orl_artifact_reloads_with_the_training_embeddings(shared_data, tmp_path):
    cfg = orl_config(shared_data, tmp_path, epochs=2)
    result = run_experiment(cfg, run_dir=tmp_path / "run", progress=False)

    card = json.loads((tmp_path / "run" / "model" / "model_card.json").read_text())
    assert card["preprocessing"]["color"] == "L" and card["backbone"]["options"]["in_channels"] == 1
    assert set(card["thresholds"]) == {"best_accuracy", "far_1e-03"}

    # the artifact reloads and gives exactly the trained model's embeddings
    embedder = facemetric.load_model(tmp_path / "run")
    evaluator = result.evaluator
    unique = result.data.val_paths
    from_training = evaluator.embeddings(result.model)  # cache-based evaluation path
    from_inference = embedder.embed(unique)  # file-based inference path
    np.testing.assert_allclose(from_training, from_inference, atol=1e-5)

    # the card's impostor tail is measured on the validation photos (size-aware gallery thresholds)
    from facemetric.eval.open_set import impostor_tail

    tail = card["impostor_tail"]
    expected = impostor_tail(from_training, evaluator.identities(), min_pairs=10)
    assert tail["levels"] == expected["levels"] and tail["pairs"] == expected["pairs"]
    assert [t for _, t in tail["levels"]] == sorted(t for _, t in tail["levels"])
    assert tail["measured_on"].startswith(f"validation photos: {len(unique)} images")
    again = facemetric.load_model(tmp_path / "run" / "model").embed(unique)
    assert np.array_equal(again, from_inference)  # a reload is bit-identical


def test_orl_resume_is_exact_with_augmentation(shared_data, tmp_path):
    cfg = validate(_merge(DEFAULTS, orl_config(shared_data, tmp_path, epochs=2, eval_every=0), ""))
    straight = build_experiment(cfg, tmp_path / "a", progress=False)
    straight.trainer.fit()
    first = build_experiment(cfg, tmp_path / "b", progress=False)
    first.trainer.fit(until_epoch=1)
    second = build_experiment(cfg, tmp_path / "b", progress=False)
    second.trainer.fit(resume=True)
    for (k, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def _lfw_subset_pairs(shared, tmp_path, n=15):
    """The first n matched and n mismatched pairs of View 1 DevTest, as a View 1 file."""
    lines = (shared / "lfw-deepfunneled" / "pairsDevTest.txt").read_text().splitlines()
    total = int(lines[0])
    body = lines[1 : 1 + n] + lines[1 + total : 1 + total + n]
    path = tmp_path / "pairs-subset.txt"
    path.write_text(f"{n}\n" + "\n".join(body) + "\n")
    return path


def test_evaluate_command_matches_inference_embeddings(shared_data, tmp_path):
    cfg = orl_config(shared_data, tmp_path, epochs=1, eval_every=0)
    run_experiment(cfg, run_dir=tmp_path / "run", progress=False)
    pairs = _lfw_subset_pairs(shared_data, tmp_path)
    out = tmp_path / "report.json"
    main(["evaluate", "--model", str(tmp_path / "run"), "--data", str(shared_data / "lfw-deepfunneled"),
          "--pairs", str(pairs), "--out", str(out), "--quiet"])
    report = json.loads(out.read_text())
    assert report["num_pairs"] == 30 and out.with_name("report-roc.png").is_file()

    # recompute the distances by hand through load_model(...).embed, one image at a time
    from facemetric.data.protocols import read_lfw_pairs
    from facemetric.eval.verification import kfold_accuracy

    ps = read_lfw_pairs(pairs, shared_data / "lfw-deepfunneled")
    embedder = facemetric.load_model(tmp_path / "run")
    d = np.array([float(((embedder.embed(a)[0] - embedder.embed(b)[0]) ** 2).sum())
                  for a, b in zip(ps.paths1, ps.paths2, strict=True)])
    acc = kfold_accuracy(d, ps.issame, ps.fold)
    assert report["accuracy_mean"] == pytest.approx(acc["accuracy_mean"], abs=1e-9)
