"""The command line: demo report, train + resume, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facemetric.cli.main import main
from tests.cli.cli_helpers import cli


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "facemetric.cli.main", *args], capture_output=True, text=True, timeout=600
    )


def test_demo_writes_report(tmp_path, capsys):
    out = tmp_path / "demo"
    main(["demo", "--out", str(out), "--epochs", "1", "--quiet", "--seed", "0",
          "--loss", "softmax", "--loss", "center-lambda-0.1", "--loss", "triplet"])
    printed = capsys.readouterr().out
    assert "mean ± std over 1 seed (0)" in printed
    assert "±0.000" in printed  # one seed: the printed spread is zero, and it is printed
    report = json.loads((out / "report.json").read_text())
    assert set(report["losses"]) == {"softmax", "center-lambda-0.1", "triplet"}
    for name, entry in report["losses"].items():
        for key in ("accuracy", "val_at_far_1e-3", "auc", "eer", "intra_inter_ratio", "feature_norm"):
            assert key in entry, (name, key)
        assert (out / entry["figure"]).stat().st_size > 1000
        assert 0.0 <= entry["accuracy"] <= 1.0
    html = (out / "report.html").read_text()
    assert "features-triplet.png" in html and "<table>" in html
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "center-lambda-0.1-seed0", "softmax-seed0", "triplet-seed0"]  # --seed 0: one run per variant


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


# --------------------------------------------------------------------------- one-line errors (issue 11)
FACEMETRIC = Path(sys.executable).with_name("facemetric")


@pytest.mark.skipif(not FACEMETRIC.is_file(), reason="console script not installed beside this python")
@pytest.mark.parametrize(
    "args,line",
    [
        (["verify"], "error: Missing argument"),
        (["frobnicate"], "error: No such command 'frobnicate'."),
    ],
)
def test_console_script_usage_errors_are_one_line(args, line):
    """The installed ``facemetric`` (the newest typer vendors click as ``typer._click``; there is
    no ``click`` module) answers a usage error with one line and exit 2, not a traceback."""
    proc = subprocess.run([str(FACEMETRIC), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), proc.stderr
    assert lines[0].endswith("--help)")


@pytest.mark.parametrize(
    "args,line",
    [
        (["verify"], "error: Missing argument 'image_a'. (facemetric verify --help)"),
        (["verify", "a.jpg"], "error: Missing argument 'image_b'. (facemetric verify --help)"),
        (["verify", "--bogus", "a.jpg", "b.jpg"], "error: No such option: --bogus (facemetric verify --help)"),
        (["gallery", "lst"], "error: No such command 'lst'. Did you mean 'list'? (facemetric gallery --help)"),
    ],
)
def test_usage_errors_in_process(capsys, args, line):
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == ""
    assert err.strip().lower() == line.lower()  # typer versions differ in the case of IMAGE_A


def test_bad_option_value_is_one_line(capsys):
    code, out, err = cli(capsys, "identify", "x.jpg", "--gallery", "g", "--k", "abc")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: Invalid value for '--k'") and err.strip().endswith("(facemetric identify --help)")


@pytest.mark.parametrize("args", [[], ["gallery"]])
def test_no_arguments_print_help_and_exit_0(capsys, args):
    code, out, err = cli(capsys, *args)
    assert code == 0 and err == ""
    assert "Usage:" in out and "Commands" in out


def test_commands_are_registered_explicitly():
    """Every command is registered in cli/main.py; no command module imports cli.main."""
    import ast

    from facemetric.cli import main as cli_main

    names = {c.name or c.callback.__name__ for c in cli_main.app.registered_commands}
    assert {"demo", "train", "evaluate", "verify", "embed", "identification", "enroll", "identify",
            "cluster", "models", "losses", "detect", "parse", "eval-dense", "serve", "export"} <= names
    sub = {g.name for g in cli_main.app.registered_groups}
    assert sub == {"gallery", "keys"}
    assert {c.name for c in cli_main.gallery_app.registered_commands} == {"list", "remove", "calibrate"}
    cli_dir = Path(cli_main.__file__).parent
    for module in cli_dir.glob("*.py"):
        if module.name == "main.py":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "facemetric.cli.main", module.name
                assert not (node.module == "facemetric.cli" and any(a.name == "main" for a in node.names)), module.name
            assert not (isinstance(node, ast.Attribute) and node.attr == "modules"
                        and isinstance(node.value, ast.Name) and node.value.id == "sys"), module.name


def _raise(exc):
    def f(*a, **k):
        raise exc
    return f


def test_internal_error_is_one_line_and_debug_reraises(capsys, monkeypatch):
    import facemetric.inference

    monkeypatch.setattr(facemetric.inference, "load_model", _raise(ValueError("boom\nsecond line")))
    monkeypatch.delenv("FACEMETRIC_DEBUG", raising=False)
    code, out, err = cli(capsys, "verify", __file__, __file__, "--model", "x")
    assert code == 1
    assert err == "error: internal error ValueError: boom second line (set FACEMETRIC_DEBUG=1 for the traceback)\n"
    monkeypatch.setenv("FACEMETRIC_DEBUG", "1")
    with pytest.raises(ValueError, match="boom"):
        main(["verify", __file__, __file__, "--model", "x"])


@pytest.mark.parametrize(
    "exc,code,line",
    [
        (PermissionError(13, "Permission denied", "/data/photo.jpg"), 2, "error: /data/photo.jpg: permission denied"),
        (IsADirectoryError(21, "Is a directory", "/data/x.jpg"), 2, "error: /data/x.jpg: is a directory"),
        (OSError(40, "Too many levels of symbolic links", "/data/loop"), 2, "error: /data/loop: symlink loop"),
        (FileNotFoundError(2, "No such file", "/data/a.jpg"), 2, "error: /data/a.jpg: file not found"),
        (OSError(13, "Permission denied", b"/data/caf\xe9.jpg".decode("utf-8", "surrogateescape")), 2,
         "error: /data/caf\\xe9.jpg: permission denied"),
        (MemoryError(), 1, "error: out of memory (the input is too large for this machine; set FACEMETRIC_DEBUG=1 for the traceback)"),
    ],
)
def test_os_and_memory_errors_are_one_line(capsys, monkeypatch, exc, code, line):
    import facemetric.inference

    monkeypatch.setattr(facemetric.inference, "load_model", _raise(exc))
    monkeypatch.delenv("FACEMETRIC_DEBUG", raising=False)
    got, out, err = cli(capsys, "verify", __file__, __file__, "--model", "x")
    assert (got, err) == (code, line + "\n")


def test_undecodable_text_file_is_named(capsys, monkeypatch, tmp_path):
    import facemetric.train.tasks

    bad = tmp_path / "recipe.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    monkeypatch.setattr(facemetric.train.tasks, "train_from_config", lambda *a, **k: Path(bad).read_text(encoding="utf-8"))
    code, out, err = cli(capsys, "train", "--config", bad)
    assert code == 2
    assert err == f"error: {bad}: not valid UTF-8 text (byte 0xe9 at position 9)\n"


def test_ctrl_c_exits_130_and_only_train_mentions_resume(capsys, monkeypatch):
    import facemetric.inference
    import facemetric.train.tasks

    monkeypatch.setattr(facemetric.inference, "load_model", _raise(KeyboardInterrupt()))
    code, out, err = cli(capsys, "verify", __file__, __file__, "--model", "x")
    assert (code, err) == (130, "interrupted\n")
    monkeypatch.setattr(facemetric.train.tasks, "train_from_config", _raise(KeyboardInterrupt()))
    code, out, err = cli(capsys, "train", "--run-dir", "runs/x", "--resume")
    assert code == 130
    assert err.splitlines() == ["interrupted; the newest checkpoint is kept (resume with --run-dir RUN --resume)", "interrupted"]


def test_eof_error_is_not_an_interrupt(capsys, monkeypatch):
    """typer turns an EOFError into Abort; a truncated file is not a Ctrl-C."""
    import facemetric.inference

    monkeypatch.setattr(facemetric.inference, "load_model", _raise(EOFError("No data left in file")))
    monkeypatch.delenv("FACEMETRIC_DEBUG", raising=False)
    code, out, err = cli(capsys, "verify", __file__, __file__, "--model", "x")
    assert code == 1
    assert err == "error: internal error EOFError: No data left in file (set FACEMETRIC_DEBUG=1 for the traceback)\n"


# --------------------------------------------------------------------------- verify's path checks
@pytest.fixture
def toy_model(tmp_path):
    from tests.toy_faces import make_toy_model

    return make_toy_model(tmp_path / "toy")


def test_verify_names_what_is_wrong_with_a_path(capsys, tmp_path, toy_model):
    """A directory named x.jpg, a symlink loop and a dangling link are not "file not found"."""
    from tests.toy_faces import make_toy_folder

    photo = make_toy_folder(tmp_path / "faces", counts={"anna": 1}) / "anna" / "00.png"
    (tmp_path / "x.jpg").mkdir()
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    os.symlink("gone.jpg", tmp_path / "dangling.jpg")
    for name, why in [("x.jpg", "is a directory"), ("loop.jpg", "symlink loop"),
                      ("dangling.jpg", "broken symlink (-> gone.jpg)"), ("nope.jpg", "file not found")]:
        code, out, err = cli(capsys, "verify", tmp_path / name, photo, "--model", toy_model)
        assert (code, err) == (2, f"error: {tmp_path / name}: {why}\n"), name
    code, out, err = cli(capsys, "verify", photo, photo, "--model", toy_model)
    assert code == 0 and out.startswith("same person:") and "fallback" not in out


def test_cli_starts_without_torch():
    """``facemetric --help`` and usage errors answer without importing torch (seconds): the
    command modules import the API inside each command."""
    code = "import sys, facemetric.cli.main; print(sorted(m for m in ('torch', 'facemetric.data') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
