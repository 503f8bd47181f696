"""Crash leftovers (issue 11): interrupted or killed writes leave no temporary file for good,
a resumed run logs each epoch once, and run files get the umask's mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facemetric.io import temp_path_for
from facemetric.train.checkpoint import list_checkpoints, load_checkpoint
from facemetric.train.config import DEFAULTS, _merge, validate
from facemetric.train.experiment import build_experiment, run_experiment
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    """A process id that belongs to no process (a reaped child's)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _stale_temp(target: Path) -> Path:
    """The temporary a writer with a dead pid would have left beside ``target``."""
    live = temp_path_for(target)  # .<name>.<our pid>.<hex>.tmp
    name = live.name.replace(f".{os.getpid()}.", f".{_dead_pid()}.")
    stale = target.parent / name
    stale.write_bytes(b"half a checkpoint")
    return stale


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_a_checkpoint_write_removes_a_dead_writers_temporary(tmp_path):
    cfg = validate(_merge(DEFAULTS, tiny_config(epochs=1), ""))
    exp = build_experiment(cfg, tmp_path / "run", progress=False)
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    stale = _stale_temp(ckpts / "checkpoint-epoch0001.pt")
    mine = ckpts / f".x.pt.{os.getpid()}.0123abcd.tmp"  # a live writer's (ours): kept
    mine.write_bytes(b"in flight")
    exp.trainer.fit()
    assert not stale.exists()
    assert mine.exists()
    assert [e for e, _ in list_checkpoints(ckpts)] == [1]


def test_an_image_cache_build_uses_the_shared_temp_naming_and_sweeps(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from facemetric.data import cache as cache_mod

    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), np.uint8)).save(p)
        paths.append(p)
    out = tmp_path / "cache" / "c.npy"
    out.parent.mkdir()
    stale = _stale_temp(out)
    seen = []
    real_fill = cache_mod._fill

    def spy(arr, *a, **k):
        seen.append(Path(arr.filename).name)
        raise KeyboardInterrupt  # Ctrl-C while decoding

    monkeypatch.setattr(cache_mod, "_fill", spy)
    with pytest.raises(KeyboardInterrupt):
        cache_mod.build_image_cache(paths, 8, out, num_workers=0, progress=False)
    assert not stale.exists()  # swept before the build
    assert seen and seen[0].startswith(".c.npy.") and seen[0].endswith(".tmp")
    assert sorted(os.listdir(out.parent)) == []  # no temporary, no cache, no sidecar
    monkeypatch.setattr(cache_mod, "_fill", real_fill)
    arr = cache_mod.build_image_cache(paths, 8, out, num_workers=0, progress=False)
    assert arr.shape == (3, 8, 8, 3)
    assert sorted(os.listdir(out.parent)) == ["c.npy", "c.npy.json"]


_WRITER = """
import sys, time
from facemetric.io import atomic_write
def write(fh):
    fh.write(b"x" * 4096); fh.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def test_a_sigkilled_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "model.pt"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    try:
        assert proc.stdout.readline().strip() == b"writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert len(_temps(tmp_path)) == 1 and not target.exists()  # what kill -9 leaves
    from facemetric.io import atomic_torch_save

    atomic_torch_save({"v": 1}, target)
    assert _temps(tmp_path) == []
    assert torch.load(target)["v"] == 1


def test_ctrl_c_during_training_keeps_the_last_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    cfg = validate(_merge(DEFAULTS, tiny_config(epochs=3), ""))
    exp = build_experiment(cfg, tmp_path / "run", progress=False)
    trainer = exp.trainer
    step = trainer.train_step
    steps_per_epoch = len(trainer.batch_sampler)

    def interrupted(*a, **k):
        if trainer.global_step == steps_per_epoch + 1:  # in the middle of epoch 2
            raise KeyboardInterrupt
        return step(*a, **k)

    monkeypatch.setattr(trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    ckpts = tmp_path / "run" / "checkpoints"
    assert [e for e, _ in list_checkpoints(ckpts)] == [1]
    assert load_checkpoint(ckpts / "checkpoint-epoch0001.pt")["epoch"] == 1
    assert _temps(tmp_path) == []

    # Ctrl-C inside torch.save of epoch 2's checkpoint: epoch 1's stays, no temporary
    exp = build_experiment(cfg, tmp_path / "run", progress=False)
    real_save = torch.save

    def save_then_interrupt(obj, fh, *a, **k):
        if obj.get("epoch") == 2:
            fh.write(b"partial")
            raise KeyboardInterrupt
        return real_save(obj, fh, *a, **k)

    monkeypatch.setattr(torch, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        exp.trainer.fit(resume=True)
    assert [e for e, _ in list_checkpoints(ckpts)] == [1]
    assert _temps(tmp_path) == []


def test_resume_of_a_run_killed_before_its_first_checkpoint_logs_each_epoch_once(tmp_path):
    cfg = tiny_config(epochs=2, eval_every=1)
    run = tmp_path / "run"
    exp = build_experiment(validate(_merge(DEFAULTS, cfg, "")), run, progress=False)
    exp.run_dir.write_config(exp.config)
    # killed after epoch 1's records were logged, before its checkpoint was written
    exp.trainer.save_checkpoint = lambda: None
    exp.trainer.fit(until_epoch=1)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 1, "split": "tr')  # and a line torn by the kill
    assert list_checkpoints(run / "checkpoints") == []
    run_experiment(None, run_dir=run, resume=True, progress=False)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in records] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]


def test_checkpoints_and_run_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run_experiment(tiny_config(epochs=1), run_dir=tmp_path / "run", progress=False)
    finally:
        os.umask(old)
    run = tmp_path / "run"
    files = [run / n for n in ("config.yaml", "run.json", "metrics.jsonl", "report.md")]
    files += [p for _, p in list_checkpoints(run / "checkpoints")]
    assert len(files) == 5
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o644, f
    assert (run / "checkpoints").stat().st_mode & 0o777 == 0o755


def test_truncating_metrics(tmp_path):
    from facemetric.train.run_dir import RunDir

    rd = RunDir(tmp_path / "r")
    rd.truncate_metrics_after(0)  # nothing logged yet: nothing created
    assert not rd.metrics_path.exists()
    rd.log_metrics({"epoch": 1, "split": "train"})
    rd.log_metrics({"epoch": 2, "split": "train"})
    rd.truncate_metrics_after(1)
    assert [r["epoch"] for r in rd.read_metrics()] == [1]
    rd.truncate_metrics_after(0)
    assert rd.read_metrics() == []
