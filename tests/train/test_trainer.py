"""Trainer: resume equivalence, run directory contents, atomic checkpoints, real improvement."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from facemetric.errors import FacemetricError
from facemetric.train.checkpoint import atomic_torch_save, list_checkpoints
from facemetric.train.config import DEFAULTS, _merge, validate
from facemetric.train.experiment import build_experiment, run_experiment
from tests.conftest import tiny_config


def _resolved(cfg):
    return validate(_merge(DEFAULTS, cfg, ""))


def _state(exp):
    return {
        **{f"model.{k}": v.clone() for k, v in exp.model.state_dict().items()},
        **{f"loss.{k}": v.clone() for k, v in exp.loss.state_dict().items()},
    }


@pytest.mark.parametrize(
    "loss,sampler,ema",
    [
        ({"name": "center", "lambda_": 0.1}, None, 0.0),
        ({"name": "l2-softmax", "learn_scale": True}, None, 0.99),
        ({"name": "sphereface", "base": 100.0}, None, 0.0),  # annealing step is state
        ({"name": "adaface", "learn_scale": True}, None, 0.0),  # running norm statistics
        ({"name": "center", "head": "arcface", "head_options": {"scale": 16.0}}, None, 0.0),
        ({"name": "triplet", "strategy": "random-violating"},
         {"name": "pk", "people_per_batch": 5, "images_per_person": 6, "batches_per_epoch": 6}, 0.0),
    ],
)
def test_two_epochs_equal_one_epoch_resume_one_epoch(tmp_path, loss, sampler, ema):
    cfg = _resolved(tiny_config(loss, sampler, epochs=2, ema_decay=ema))
    straight = build_experiment(cfg, tmp_path / "a", progress=False)
    straight.trainer.fit()
    if loss["name"] == "sphereface":  # one annealing step per optimizer step
        assert int(straight.loss.iteration) == straight.trainer.global_step > 0

    first = build_experiment(cfg, tmp_path / "b", progress=False)
    first.trainer.fit(until_epoch=1)  # "killed" after epoch 1's checkpoint
    torch.manual_seed(12345)  # a new process has other RNG state: resume must restore it
    second = build_experiment(cfg, tmp_path / "b", progress=False)
    second.trainer.fit(resume=True)

    a, b = _state(straight), _state(second)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    if ema:
        ema_a = straight.trainer.ema.module.state_dict()
        ema_b = second.trainer.ema.module.state_dict()
        assert ema_a.keys() == ema_b.keys()
        for k in ema_a:
            assert torch.equal(ema_a[k], ema_b[k]), k
        assert straight.trainer.ema.num_updates == second.trainer.ema.num_updates
    la = [r["loss"] for r in straight.trainer.history if r["split"] == "train"]
    lb = [r["loss"] for r in second.trainer.history if r["split"] == "train"]
    assert la == lb
    # the resumed run's metrics.jsonl has each epoch once
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_center_loss_centers_move_during_training(tmp_path):
    cfg = _resolved(tiny_config({"name": "center", "lambda_": 0.1}, epochs=1))
    exp = build_experiment(cfg, tmp_path, progress=False)
    assert torch.count_nonzero(exp.loss.centers) == 0
    exp.trainer.fit()
    assert torch.count_nonzero(exp.loss.centers) > 0


def test_run_directory_contents_and_improvement(tmp_path):
    cfg = tiny_config({"name": "softmax"}, epochs=4, eval_every=2)
    untrained = build_experiment(_resolved(cfg), None, progress=False)
    before = untrained.trainer.evaluate()["accuracy_mean"]
    result = run_experiment(cfg, run_dir=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "run.json", "metrics.jsonl", "report.md"):
        assert (run / name).is_file(), name
    assert yaml.safe_load((run / "config.yaml").read_text())["loss"]["name"] == "softmax"
    info = json.loads((run / "run.json").read_text())
    assert "revision" in info["git"]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
    assert [r["epoch"] for r in records if r["split"] == "val"] == [2, 4]
    assert all(r["images_per_s"] > 0 for r in records if r["split"] == "train")
    assert [e for e, _ in list_checkpoints(run / "checkpoints")] == [3, 4]  # keep_checkpoints=2
    after = result.final["val"]["accuracy_mean"]
    assert after > before + 0.1, (before, after)
    assert result.final["train"]["loss"] < records[0]["loss"]


def test_atomic_checkpoint_survives_a_crash_while_saving(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    atomic_torch_save({"v": 1}, path)

    def broken_save(obj, fh, *a, **k):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_torch_save({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["v"] == 1
    assert os.listdir(tmp_path) == ["ck.pt"]  # no temporary file left behind


def test_resume_without_checkpoint_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FacemetricError, match="not a run directory"):
        run_experiment(tiny_config(), run_dir=tmp_path / "nothing", resume=True, progress=False)


def test_pk_sampler_that_cannot_fill_a_batch_is_a_clear_error(tmp_path):
    cfg = tiny_config({"name": "triplet"}, {"name": "pk", "people_per_batch": 11, "images_per_person": 4})
    with pytest.raises(FacemetricError, match="identities"):
        build_experiment(_resolved(cfg), None, progress=False)
