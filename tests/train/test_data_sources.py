"""Training data sources (train/data_sources.py) and the validation the experiment wires from
them: the recipe's ``eval`` section drives folder-data validation (issue 11, bug 1)."""

from __future__ import annotations

import json

import pytest

import facemetric
from facemetric.eval.pair_evaluator import PairSetEvaluator
from facemetric.train.config import DEFAULTS, _merge, validate
from facemetric.train.experiment import build_experiment, run_experiment
from tests.toy_faces import make_toy_folder


def toy_config(folder, tmp_path, **eval_section):
    return {
        "name": "toy-folder", "seed": 0,
        "data": {
            "name": "folder", "root": str(folder),
            "preprocessing": {"input_size": [24, 24], "color": "L"}, "random_crop": False,
            "val_people": sorted(p.name for p in folder.iterdir()), "val_pairs_per_fold": 6, "val_folds": 2,
            "cache_dir": str(tmp_path / "cache"), "num_workers": 0, "progress": False,
        },
        "model": {"name": "lenets++", "embedding_dim": 8, "widths": [8, 16, 16]},
        "loss": {"name": "softmax"},
        "sampler": {"name": "uniform", "batch_size": 8},
        "optimizer": {"name": "sgd", "lr": 0.01},
        "train": {"epochs": 1, "eval_every": 1, "device": "cpu"},
        "eval": eval_section,
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_toy_folder(tmp_path_factory.mktemp("toy") / "faces")


def test_folder_validation_follows_the_eval_section(folder, tmp_path):
    cfg = validate(_merge(DEFAULTS, toy_config(folder, tmp_path, distance="cosine", far_target=0.1,
                                               batch_size=4), ""))
    exp = build_experiment(cfg, None, progress=False)
    evaluator = exp.trainer.evaluator
    assert isinstance(evaluator, PairSetEvaluator)
    assert (evaluator.distance, evaluator.far_target, evaluator.batch_size) == ("cosine", 0.1, 4)
    metrics = exp.trainer.evaluate()
    assert metrics["distance"] == "cosine" and metrics["far_target"] == 0.1


def test_the_card_records_the_validation_distance(folder, tmp_path):
    result = run_experiment(toy_config(folder, tmp_path, distance="cosine"), run_dir=tmp_path / "run",
                            progress=False)
    card = json.loads((tmp_path / "run" / "model" / "model_card.json").read_text())
    assert result.final["val"]["distance"] == "cosine" and card["distance"] == "cosine"
    assert card["thresholds"]["best_accuracy"] == pytest.approx(
        sum(result.final["val"]["thresholds"]) / len(result.final["val"]["thresholds"]))
    embedder = facemetric.load_model(tmp_path / "run")
    assert embedder.distance_kind == "cosine"  # inference compares as validation did
    one = str(next(folder.rglob("*.png")))
    assert embedder.distance(one, one) == pytest.approx(0.0, abs=1e-6)


def test_the_default_eval_section_keeps_squared_l2(folder, tmp_path):
    cfg = validate(_merge(DEFAULTS, toy_config(folder, tmp_path), ""))
    evaluator = build_experiment(cfg, None, progress=False).trainer.evaluator
    assert (evaluator.distance, evaluator.far_target) == ("squared_l2", 1e-3)
