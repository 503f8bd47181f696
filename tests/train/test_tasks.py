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


def test_task_runners_share_the_run_helpers(tmp_path):
    import math

    from facemetric.train.run_dir import default_run_path, saved_config
    from facemetric.train.schedules import warmup_cosine_lr

    with pytest.raises(ConfigError, match=r"^resume: .* is not a run directory \(no config.yaml\)$"):
        saved_config(tmp_path)
    (tmp_path / "config.yaml").write_text("name: x\n")
    assert saved_config(tmp_path) == tmp_path / "config.yaml"
    assert default_run_path("ssd", tmp_path).parent == tmp_path
    assert default_run_path("ssd").name.startswith("ssd-")
    # warm-up: linear to base; then half a cosine to 0 at the end
    assert warmup_cosine_lr(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert warmup_cosine_lr(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_cosine_lr(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_cosine_lr(55, 100, 10, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine_lr(100, 100, 10, 1.0) == pytest.approx(0.0, abs=1e-12)
