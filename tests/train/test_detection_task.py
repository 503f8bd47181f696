"""The `detection` task: a tiny SSD trains on lfw-5590 photos, writes its run directory, resumes."""

from __future__ import annotations

import json

import pytest
import torch

from facemetric.detect.ssd import load_ssd_artifact
from facemetric.errors import ConfigError
from facemetric.train.detection_task import load_detection_config, run_detection_task
from facemetric.train.tasks import TASKS, task_of
from tests.conftest import REPO, SHARED_DATA

TINY = {
    "task": "detection",
    "name": "ssd-test",
    "model": {"name": "tiny", "input_size": [48, 48], "widths": [8, 8, 16, 16], "extras": [16],
              "priors": [{"min_sizes": [8], "max_sizes": [16]}, {"min_sizes": [16], "max_sizes": [32]},
                         {"min_sizes": [32], "max_sizes": [48]}]},
    "augment": {"distort": True, "expand_prob": 0.5, "max_expand_ratio": 1.5},
    "optimizer": {"lr": 0.01},
    "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "threads": 1},
    "data": {"limit": 48, "test_limit": 8},
}


@pytest.fixture(scope="module")
def annotations():
    path = SHARED_DATA / "lfw-5590" / "annotations.csv"
    if not path.is_file():
        pytest.skip(f"lfw-5590 not found at {path}")
    return str(path)


def test_trains_resumes_and_writes_artifact(tmp_path, annotations):
    cfg = {**TINY, "data": {**TINY["data"], "annotations": annotations}}
    assert task_of(cfg) == "detection" and "detection" in TASKS
    run = tmp_path / "run"
    first = run_detection_task(cfg, run_dir=run, progress=False)
    resumed = run_detection_task(None, overrides=["train.epochs=3"], run_dir=run, resume=True, progress=False)
    train = [r for r in resumed.history if r["split"] == "train"]
    assert [r["epoch"] for r in train] == [1, 2, 3]
    assert train[0] == [r for r in first.history if r["split"] == "train"][0]
    assert train[-1]["loss"] < train[0]["loss"]  # it learns
    for name in ("config.yaml", "run.json", "metrics.jsonl", "report.md", "report.html", "test_examples.png",
                 "detector.pt", "test_detections.json"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-epoch0002.pt",
                                                                        "checkpoint-epoch0003.pt"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in lines] == ["train", "test", "train", "train", "test"]  # epoch 1's test stays
    test = resumed.final["test"]
    assert test["photos"] == 8 and 0 <= test["recall_iou50"] <= 1 and 0 <= test["ap_iou50"] <= 1
    art = load_ssd_artifact(run / "detector.pt")
    x = torch.randn(2, 3, 48, 48)
    resumed.model.eval()
    torch.testing.assert_close(art.model(x)[0], resumed.model(x)[0])
    assert art.preprocessing.input_size == (48, 48) and art.meta["test"] == test
    assert not list(run.rglob("*.tmp*"))


def test_config_errors(annotations):
    base = {**TINY, "data": {"annotations": annotations}}
    with pytest.raises(ConfigError, match="optimizer.name"):
        load_detection_config({**base, "optimizer": {"name": "rmsprop"}})
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'"):
        load_detection_config({**base, "train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="data.annotations"):
        load_detection_config({**base, "data": {"annotations": "/no/such.csv"}})
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_detection_config(base, ["train.batch_size=0"])


def test_shipped_recipes_load(annotations):
    recipes = sorted((REPO / "configs").glob("ssd-*.yaml"))
    assert len(recipes) >= 3
    for path in recipes:
        cfg = load_detection_config(path)
        assert cfg["name"] == path.stem and cfg["data"]["annotations"] == annotations
