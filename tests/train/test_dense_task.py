"""Task ``dense``: run directory, training improves, resume is exact, recipe errors are one line."""

import json

import numpy as np
import pytest
import torch

from facemetric.errors import ConfigError
from facemetric.inference import load_model
from facemetric.train.checkpoint import latest_checkpoint, load_checkpoint
from facemetric.train.dense_task import resolve_dense_config
from facemetric.train.tasks import task_of, train_from_config
from tests.dense.synthetic_parts import make_parts, tiny_config, trained_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory.mktemp("dense"))


def test_run_directory_and_measured_improvement(run):
    for name in ("config.yaml", "run.json", "metrics.jsonl", "report.md", "final.json",
                 "model/model_card.json", "model/model.safetensors"):
        assert (run / name).is_file(), name
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in recs if r["split"] == "train"]
    val = [r for r in recs if r["split"] == "val"]
    assert len(train) == 6 and train[-1] < 0.7 * train[0]
    assert val[-1]["mean_iou"] > val[0]["mean_iou"] and val[-1]["mean_iou"] > 0.45
    card = json.loads((run / "model" / "model_card.json").read_text())
    assert card["kind"] == "dense" and card["class_names"] == ["background", "skin", "hair"]
    final = json.loads((run / "final.json").read_text())
    assert set(final) == {"val", "test"} and "mean_iou" in final["test"]


def test_load_model_parses(run):
    m = load_model(run)
    photo = np.full((40, 52, 3), 30, np.uint8)
    (lab,) = m.parse(photo)
    assert lab.shape == (40, 52) and lab.dtype == np.uint8 and lab.max() <= 2
    r = m.predict(photo)[0]
    assert r["edges"].shape == (40, 52) and len(r["edge_sides"]) == 3
    assert np.allclose(r["probs"].sum(0), 1, atol=1e-5)


def test_resume_after_a_kill_continues_exactly(tmp_path):
    import shutil

    root = make_parts(tmp_path / "parts", per_split=(8, 2, 2))
    cfg = tiny_config(root, epochs=2, heads=("fcn", "hed"))
    straight = train_from_config(cfg, run_dir=tmp_path / "a", progress=False)
    # the state a kill during epoch 2 leaves: epoch 1's checkpoint and metrics, no artifact
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "checkpoints" / "checkpoint-epoch0002.pt").unlink()
    shutil.rmtree(tmp_path / "b" / "model")
    resumed = train_from_config(None, run_dir=tmp_path / "b", resume=True, progress=False)
    a = load_checkpoint(latest_checkpoint(straight.run_dir / "checkpoints"))["model"]
    b = load_checkpoint(latest_checkpoint(resumed.run_dir / "checkpoints"))["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.final["test"]["mean_iou"] == straight.final["test"]["mean_iou"]
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 1, 2, 2]


def test_recipe_errors_name_the_key(tmp_path):
    assert task_of({"task": "dense"}) == "dense"
    with pytest.raises(ConfigError, match=r"^model\.heads: expected a list"):
        resolve_dense_config({"model": {"heads": ["unet"]}})
    with pytest.raises(ConfigError, match=r"^train\.bogus: unknown key"):
        resolve_dense_config({"train": {"bogus": 1}})
    with pytest.raises(ConfigError, match=r"^data\.input_size"):
        resolve_dense_config({"data": {"input_size": 8}})
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: dense\ntrain:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match=r"train\.epochs: expected a positive integer, got 0 \(in .*r\.yaml\)"):
        resolve_dense_config(recipe)


def test_median_frequency_class_weights_by_hand():
    from facemetric.train.dense_task import class_weights

    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)  # shares .6 .3 .1, median .3
    w = class_weights("median_frequency", labels, 3)
    assert torch.allclose(w, torch.tensor([0.5, 1.0, 3.0]))
    assert class_weights(None, labels, 3) is None
    with pytest.raises(ConfigError, match=r"^loss\.class_weights"):
        resolve_dense_config({"loss": {"class_weights": [1, 2]}})


def test_shipped_dense_recipes_resolve():
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[2] / "configs").glob("dense-*.yaml"))
    assert len(recipes) >= 4
    for p in recipes:
        cfg = resolve_dense_config(p)
        assert cfg["name"] == p.stem and cfg["task"] == "dense"


def test_augmentation_warps_photo_and_labels_alike():
    from facemetric.train.dense_task import augment_batch

    rng = np.random.default_rng(0)
    blocks = torch.from_numpy(rng.integers(0, 3, (4, 4, 4))).long()
    labels = blocks.repeat_interleave(6, 1).repeat_interleave(6, 2)  # 6x6 blocks: mostly exact samples
    x = labels[:, None].float().repeat(1, 3, 1, 1)
    out = augment_batch({"x": x, "labels": labels}, {"scale": 0.2, "rotate": 15, "shift": 0.1, "color": 0.0}, rng)
    assert out["labels"].dtype == torch.long and set(out["labels"].unique().tolist()) <= {0, 1, 2}
    # where the bilinear photo sample is an exact label value, nearest gives the same value
    exact = (out["x"][:, 0] - out["x"][:, 0].round()).abs() < 1e-4
    assert exact.float().mean() > 0.3
    assert torch.equal(out["x"][:, 0].round().long()[exact], out["labels"][exact])
    with pytest.raises(ConfigError, match=r"^train\.augment\.scale"):
        resolve_dense_config({"train": {"augment": {"scale": 1.5}}})
