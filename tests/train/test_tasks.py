"""The recipe's ``task`` key chooses the training runner (facemetric.train.tasks)."""

import pytest

from facemetric.errors import ConfigError
from facemetric.train.tasks import TASKS, task_of, train_from_config


def test_task_defaults_to_embedding_and_reads_recipe_override_and_saved_run(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: embedding\nname: x\n")
    assert task_of(None) == "embedding"
    assert task_of({"name": "x"}) == "embedding"
    assert task_of(recipe) == "embedding"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: EMBEDDING\n")
    assert task_of(None, run_dir=run, resume=True) == "embedding"
    assert "embedding" in TASKS


def test_unknown_task_is_one_line_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: segmentation-of-cats\n")
    with pytest.raises(ConfigError, match=r"^task: expected one of .*embedding.*got 'segmentation-of-cats'$"):
        task_of(recipe)
    with pytest.raises(ConfigError, match="^task: expected one of"):
        task_of(None, overrides=["task=nope"])


def test_dispatch_calls_the_registered_runner(monkeypatch):
    seen = {}

    def fake(config, overrides=None, run_dir=None, resume=False, progress=True):
        seen.update(config=config, overrides=overrides, resume=resume)
        return "ran"

    monkeypatch.setitem(TASKS._items, "fake-task", fake)
    assert train_from_config({"task": "fake-task"}, overrides=["a=1"]) == "ran"
    assert seen == {"config": {"task": "fake-task"}, "overrides": ["a=1"], "resume": False}
