"""torchrun-style data parallel training, checked on CPU with 2 gloo processes on loopback.

The same recipe (global batch) trained by 1 process and by 2 processes gives the same per-step
losses and the same parameters (to 1e-5) for softmax, center (centers included), triplet
(mined on the gathered batch), ArcFace (its classifier replicated) and Partial FC (its
classifier sharded, sample rate 1); a checkpoint written by 2 processes resumes in 1 and one
written by 1 resumes in 2, each equal to an uninterrupted run.
All 2-process runs share one spawn (each process start imports torch: seconds on a busy CPU).
"""

from __future__ import annotations

import copy

import pytest
import torch

from facemetric import distributed
from facemetric.train.config import resolve_config
from facemetric.train.experiment import build_experiment, run_experiment
from facemetric.train.trainer import Trainer
from tests.conftest import tiny_config

UNIFORM = {"name": "uniform", "batch_size": 64}
PK = {"name": "pk", "people_per_batch": 6, "images_per_person": 4, "batches_per_epoch": 8}
RECIPES = {
    "softmax": tiny_config({"name": "softmax"}, UNIFORM, epochs=1),
    "center": tiny_config({"name": "center", "lambda_": 0.1, "center_lr": 0.5}, UNIFORM, epochs=1),
    "triplet": tiny_config({"name": "triplet", "strategy": "semi-hard", "margin": 0.2}, PK, epochs=1),
    "arcface": tiny_config({"name": "arcface", "margin": 0.3, "scale": 16.0}, UNIFORM, epochs=1),
    # the classifier sharded by class over the ranks (the loss gathers the batch itself); its
    # random init is drawn per shard, so both sides start from the class means instead
    "partial-fc": tiny_config({"name": "partial-fc", "head": "arcface", "margin": 0.3, "scale": 16.0,
                               "sample_rate": 1.0}, UNIFORM, epochs=1, head_init="class_means"),
}
#: resumed with another number of processes: center (replicated state) and Partial FC (sharded
#: classifier: its momentum is gathered into the checkpoint and sliced again on resume)
RESUMES = {
    "center": tiny_config({"name": "center", "lambda_": 0.1}, UNIFORM, epochs=2),
    "partial-fc": tiny_config({"name": "partial-fc", "head": "arcface", "scale": 16.0}, UNIFORM, epochs=2,
                              head_init="class_means"),
}
TOL = {"rtol": 1e-5, "atol": 1e-5}
for _recipe in (*RECIPES.values(), *RESUMES.values()):  # ~360 training images: 6 steps per epoch
    _recipe["data"]["test_fraction"] = 0.8


def _record(run):
    """Run ``run()`` with every step's loss recorded; returns (losses, run's result)."""
    losses: list[float] = []
    original = Trainer.train_step

    def step(self, images, labels):
        values = original(self, images, labels)
        losses.append(values["loss"])
        return values

    Trainer.train_step = step
    try:
        return losses, run()
    finally:
        Trainer.train_step = original


def _state(losses, model, loss) -> dict:
    return {"losses": losses, "model": copy.deepcopy(model.state_dict()),
            "loss": copy.deepcopy(loss.state_dict())}


def _train(config: dict, run_dir, resume: bool = False) -> dict:
    losses, result = _record(lambda: run_experiment(copy.deepcopy(config), run_dir=run_dir,
                                                    resume=resume, progress=False))
    return _state(losses, result.model, result.loss)


def _first_epoch(config: dict, run_dir) -> dict:
    """Epoch 1 of a 2-epoch recipe (a run stopped after its first checkpoint)."""
    cfg = resolve_config(copy.deepcopy(config))
    exp = build_experiment(cfg, run_dir, progress=False)
    if distributed.is_main_process():
        exp.run_dir.write_config(cfg)
    losses, _ = _record(lambda: exp.trainer.fit(until_epoch=1))
    return _state(losses, exp.model, exp.loss)


def _worker(root: str) -> dict:
    """Everything the 2-process side runs, in one launch."""
    out = {name: _train(cfg, f"{root}/two-{name}") for name, cfg in RECIPES.items()}
    for name, cfg in RESUMES.items():
        out[f"first_half-{name}"] = _first_epoch(cfg, f"{root}/two-then-one-{name}")
        out[f"resumed-{name}"] = _train(cfg, f"{root}/one-then-two-{name}", resume=True)
    out["rank"] = distributed.rank()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the 2 processes: tiny convolutions, no thread spin
    try:
        return _both(root)
    finally:
        torch.set_num_threads(threads)


def _both(root):
    one = {}
    for name, cfg in RESUMES.items():  # epoch 1 here, resumed by the 2 processes
        one[f"first_half-{name}"] = _first_epoch(cfg, root / f"one-then-two-{name}")
    two = distributed.spawn_local(_worker, 2, args=(str(root),), timeout_s=300)
    one.update({name: _train(cfg, root / f"one-{name}") for name, cfg in RECIPES.items()})
    for name, cfg in RESUMES.items():
        one[f"full-{name}"] = _train(cfg, root / f"one-full-{name}")
        one[f"resumed-{name}"] = _train(cfg, root / f"two-then-one-{name}", resume=True)
    return one, two


def _assert_same(a: dict, b: dict) -> None:
    assert len(a["losses"]) == len(b["losses"]) > 0
    torch.testing.assert_close(torch.tensor(a["losses"]), torch.tensor(b["losses"]), **TOL)
    for part in ("model", "loss"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], **TOL, msg=f"{part}.{key}")


@pytest.mark.parametrize("loss", list(RECIPES))
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(runs, loss):
    one, two = runs
    assert [t["rank"] for t in two] == [0, 1]
    for rank in (0, 1):  # every rank holds the same replica
        _assert_same(one[loss], two[rank][loss])
    assert one[loss]["losses"][0] != one[loss]["losses"][-1]  # it trained


def test_the_center_loss_moved_its_centers_identically(runs):
    one, two = runs
    centers = one["center"]["loss"]["centers"]
    assert centers.abs().sum() > 0
    torch.testing.assert_close(two[1]["center"]["loss"]["centers"], centers, **TOL)


@pytest.mark.parametrize("loss", list(RESUMES))
def test_resume_with_a_different_number_of_processes(runs, loss):
    one, two = runs
    full = one[f"full-{loss}"]
    n = len(full["losses"]) // 2
    # 2 processes for epoch 1, then 1 process for epoch 2 == 1 process for both epochs
    first = two[0][f"first_half-{loss}"]["losses"]
    torch.testing.assert_close(torch.tensor(first), torch.tensor(full["losses"][:n]), **TOL)
    _assert_same({**one[f"resumed-{loss}"], "losses": first + one[f"resumed-{loss}"]["losses"]}, full)
    # 1 process for epoch 1, then 2 processes for epoch 2 == the same
    first = one[f"first_half-{loss}"]["losses"]
    for rank in (0, 1):
        resumed = two[rank][f"resumed-{loss}"]
        _assert_same({**resumed, "losses": first + resumed["losses"]}, full)


def test_only_rank_0_writes_the_run_directory(runs, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "ddp0"
    metrics = (root / "two-softmax" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1  # one record per epoch, not one per rank
    checkpoints = sorted(p.name for p in (root / "two-softmax" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-epoch0001.pt"]
    state = torch.load(root / "two-softmax" / "checkpoints" / checkpoints[0], weights_only=False)
    assert state["world_size"] == 2 and not any(k.startswith("module.") for k in state["model"])


def test_python_dash_m_facemetric_is_the_command_line_torchrun_launches():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "facemetric", "train", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout and "--resume" in out.stdout


def test_other_tasks_are_refused_under_torchrun(monkeypatch):
    from facemetric.errors import ConfigError
    from facemetric.train.tasks import TASKS, train_from_config

    other = next((t for t in TASKS.names() if t != "embedding"), None)
    if other is None:
        pytest.skip("no task other than embedding is registered")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=rf"^task: '{other}' trains in one process; under torchrun"):
        train_from_config({"task": other})
