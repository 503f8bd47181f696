"""The command line: demo report, train + resume, one-line errors."""

import json
import subprocess
import sys

import pytest

from facemetric.cli.main import main


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "facemetric.cli.main", *args], capture_output=True, text=True, timeout=600
    )


def test_demo_writes_report(tmp_path):
    out = tmp_path / "demo"
    main(["demo", "--out", str(out), "--epochs", "1", "--quiet",
          "--loss", "softmax", "--loss", "center-lambda-0.1", "--loss", "triplet"])
    report = json.loads((out / "report.json").read_text())
    assert set(report["losses"]) == {"softmax", "center-lambda-0.1", "triplet"}
    for name, entry in report["losses"].items():
        for key in ("accuracy", "val_at_far_1e-3", "auc", "eer", "intra_inter_ratio", "feature_norm"):
            assert key in entry, (name, key)
        assert (out / entry["figure"]).stat().st_size > 1000
        assert 0.0 <= entry["accuracy"] <= 1.0
    html = (out / "report.html").read_text()
    assert "features-triplet.png" in html and "<table>" in html


def test_train_then_resume(tmp_path):
    run = tmp_path / "run"
    main(["train", "--config", "configs/digits-softmax.yaml", "--run-dir", str(run), "--quiet",
          "train.epochs=1", "data.input_size=8", "model.widths=[8,8,8]", "train.eval_every=1"])
    assert (run / "checkpoints" / "checkpoint-epoch0001.pt").is_file()
    main(["train", "--run-dir", str(run), "--resume", "--quiet", "train.epochs=2"])
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 1, 2, 2]  # train + val records per epoch


@pytest.mark.parametrize(
    "args,msg",
    [
        (["train", "--config", "no/such.yaml"], "no/such.yaml: config file not found"),
        (["train", "--config", "configs/digits-softmax.yaml", "loss.name=arcfacez"], "unknown loss 'arcfacez'"),
        (["train", "--config", "configs/digits-softmax.yaml", "optimizer.lr"], "key.sub=value"),
        (["train", "--resume"], "--resume needs --run-dir"),
        (["demo", "--loss", "nope"], "unknown variant"),
        (["evaluate", "--model", "no/model", "--data", ".", "--pairs", "p.txt"], "p.txt: pair file not found"),
        (["train", "--config", "configs/lfw-view1-center.yaml", "data.root=no/such/folder"],
         "no/such/folder does not exist"),  # "data.root: <cwd>/no/such/folder does not exist"
    ],
)
def test_errors_are_one_line(args, msg):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert msg in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
