"""The README's examples run (docs that cannot rot).

Every ```python block is run here, as written, except for named substitutions that make it
fast and self-contained (a toy model and toy photos in place of a trained run and the photo
names, one epoch instead of five); a new block without a runner fails
:func:`test_every_python_block_has_a_runner`. The gallery block is run by
``tests/test_readme_gallery.py``. Every ``facemetric ...`` line of the ```bash blocks names a
registered command and only options that command has.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.toy_faces import make_toy_folder, make_toy_model

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)


def _run(code: str, namespace: dict | None = None) -> dict:
    ns = dict(namespace or {})
    exec(compile(code, "README.md", "exec"), ns)
    return ns


def run_losses_block(code, tmp_path, monkeypatch, capsys):
    """The first block: a loss on a LeNets++ forward pass, backward, the center update."""
    ns = _run(code)
    assert ns["value"].ndim == 0 and bool(ns["value"].isfinite())
    assert ns["model"].embedding_dim == 2 if hasattr(ns["model"], "embedding_dim") else True
    centers = ns["loss"].centers if hasattr(ns["loss"], "centers") else None
    assert centers is None or centers.shape == (10, 2)


def run_experiment_block(code, tmp_path, monkeypatch, capsys):
    """Training from a recipe; one epoch of a narrower net on 8x8 inputs instead of five
    epochs of the recipe's (the run lands in tmp/runs)."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    assert '"train.epochs=5"' in code
    fast = '"train.epochs=1", "data.input_size=8", "model.widths=[4,8,8]", "train.eval_every=0"'
    _run(code.replace('"train.epochs=5"', fast))
    out = capsys.readouterr().out
    run_dir = Path(out.split()[0])
    assert run_dir.is_dir() and (run_dir / "metrics.jsonl").is_file()


def run_verification_block(code, tmp_path, monkeypatch, capsys):
    """Verification metrics from two embedding arrays (the names the block assumes are given)."""
    rng = np.random.default_rng(0)
    emb1 = rng.normal(size=(60, 8))
    issame = np.arange(60) % 2 == 0
    emb2 = np.where(issame[:, None], emb1 + 0.1 * rng.normal(size=(60, 8)), rng.normal(size=(60, 8)))
    ns = _run(code, {"emb1": emb1, "emb2": emb2, "issame": issame, "folds": (np.arange(60) // 2) % 10})
    m = ns["metrics"]
    assert m["accuracy_mean"] > 0.9 and 0 <= m["eer"] <= 0.5


def run_load_model_block(code, tmp_path, monkeypatch, capsys):
    """Loading a model and embedding/verifying photos: a toy artifact and toy photos stand in
    for ``runs/lfw-center`` and ``a.jpg`` / ``b.jpg``."""
    model = make_toy_model(tmp_path / "model")
    faces = make_toy_folder(tmp_path / "faces", counts={"anna": 2})
    shutil.copy(faces / "anna" / "00.png", tmp_path / "a.jpg")
    shutil.copy(faces / "anna" / "01.png", tmp_path / "b.jpg")
    monkeypatch.chdir(tmp_path)
    assert '"runs/lfw-center"' in code
    ns = _run(code.replace('"runs/lfw-center"', repr(str(model))))
    assert ns["emb"].shape == (2, 8)
    out = capsys.readouterr().out
    assert "distance" in out and "same" in out


def run_miners_block(code, tmp_path, monkeypatch, capsys):
    """Miners, distances and pair/triplet losses composed (runs as written)."""
    ns = _run(code)
    a, p, n = ns["triplets"]
    assert len(a) == len(p) == len(n)


def run_parse_block(code, tmp_path, monkeypatch, capsys):
    """Face parsing with a dense run: a tiny trained run and a synthetic photo stand in for
    ``runs/dense-faces-cpu`` and ``photo1.jpg``."""
    from tests.dense.synthetic_parts import trained_root, trained_run

    run = trained_run(tmp_path / "dense")
    photo = sorted((trained_root() / "images").glob("*/*.jpg"))[0]
    shutil.copy(photo, tmp_path / "photo1.jpg")
    monkeypatch.chdir(tmp_path)
    assert '"runs/dense-faces-cpu"' in code
    ns = _run(code.replace('"runs/dense-faces-cpu"', repr(str(run))))
    assert ns["labels"].shape == (32, 32) and ns["labels"].max() <= 2
    assert "edges" in ns["maps"] and "skeleton" in ns["maps"]


def run_learned5_block(code, tmp_path, monkeypatch, capsys):
    """The learned landmark model: an untrained network's artifact stands in for
    ``runs/landmarks-5point``; a random photo and two boxes for the names the block assumes."""
    from facemetric.align.landmark_net import LandmarkNet, save_landmark_model

    save_landmark_model(tmp_path / "lm" / "landmark_model", LandmarkNet(width=4, size=32), margin=0.25)
    assert '"runs/landmarks-5point"' in code
    image = np.random.default_rng(0).integers(0, 256, size=(90, 80, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 12.0, 50.0, 55.0], [30.0, 30.0, 70.0, 75.0]])
    ns = _run(code.replace('"runs/landmarks-5point"', repr(str(tmp_path / "lm"))),
              {"rgb_uint8_image": image, "boxes": boxes})
    assert ns["points"].shape == (2, 5, 2)


RUNNERS = {
    "CenterLoss(": run_losses_block,
    "run_experiment(": run_experiment_block,
    "evaluate_verification(": run_verification_block,
    "SemiHardMiner(": run_miners_block,
    'load_model("runs/lfw-center")': run_load_model_block,
    ".parse([": run_parse_block,
    'build_landmarker("learned5"': run_learned5_block,
    "Gallery.create(": None,  # tests/test_readme_gallery.py
}


def _runner_of(block: str):
    keys = [k for k in RUNNERS if k in block]
    return keys


def test_every_python_block_has_a_runner():
    blocks = python_blocks()
    assert len(blocks) >= 5
    for b in blocks:
        assert len(_runner_of(b)) == 1, f"README python block without exactly one runner:\n{b}"


@pytest.mark.parametrize("key", [k for k, fn in RUNNERS.items() if fn is not None])
def test_readme_python_block_runs(key, tmp_path, monkeypatch, capsys):
    block = next(b for b in python_blocks() if key in b)
    RUNNERS[key](block, tmp_path, monkeypatch, capsys)


def _command_lines() -> list[str]:
    lines = []
    for block in bash_blocks():
        text = re.sub(r"\\\n\s*", " ", block)  # join continued lines
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in re.split(r"\|\s*(?=facemetric )", line):
                if part.strip().startswith("facemetric "):
                    lines.append(part.strip())
    return lines


def test_readme_commands_exist_with_their_options():
    """``facemetric CMD --opt ...`` in the README: CMD is registered and has ``--opt``."""
    from typer.main import get_command

    from facemetric.cli.main import app

    root = get_command(app)
    lines = _command_lines()
    assert len(lines) >= 20
    for line in lines:
        tokens = [t.strip("[]()") for t in line.split()[1:]]
        if tokens[0].startswith("--"):  # facemetric --help
            continue
        names = tokens[0].split("|")
        for name in names:
            command = root.commands.get(name)
            assert command is not None, f"README: unknown command {name!r} in {line!r}"
            rest = tokens[1:]
            if hasattr(command, "commands") and rest:  # a group: gallery list|remove|calibrate
                subs = rest[0].split("|")
                assert all(s in command.commands for s in subs), line
                commands = [command.commands[s] for s in subs]
                rest = rest[1:]
            else:
                commands = [command]
            for cmd in commands:
                opts = {o for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", []))} | {"--help"}
                for tok in rest:
                    for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", tok):
                        assert opt in opts, f"README: {line!r}: {cmd.name} has no option {opt}"
