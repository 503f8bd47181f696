"""Preprocessing: validation and round trip, decode/crop/resize, normalisations, augmentation."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from facemetric.data.transforms import (
    PRESETS,
    Preprocessing,
    center_crop,
    decode_and_resize,
    flip_tensor,
    preprocess,
    random_crop,
    random_flip,
    to_tensor,
)
from facemetric.errors import ConfigError, DataError


def _noise(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# ------------------------------------------------------------------- Preprocessing
@pytest.mark.parametrize(
    "prep",
    [
        Preprocessing(),
        Preprocessing(input_size=(112, 96), crop=(150, 128), color="BGR", normalize="prewhiten"),
        Preprocessing(input_size=64, color="L", normalize="mean_std", mean=[0.5], std=[0.25],
                      interpolation="bicubic", stored_size=(72, 72)),
        *PRESETS.values(),
    ],
)
def test_roundtrip_through_json(prep):
    d = json.loads(json.dumps(prep.to_dict()))
    assert Preprocessing.from_dict(d) == prep
    assert Preprocessing.from_dict(d).to_dict() == d


def test_defaults_are_explicit():
    d = Preprocessing().to_dict()
    assert d == {"input_size": [112, 112], "crop": None, "color": "RGB",
                 "normalize": "minus127.5_div128", "mean": None, "std": None,
                 "interpolation": "bilinear", "stored_size": None}
    assert Preprocessing.from_dict({"input_size": [32, 32]}).input_size == (32, 32)


@pytest.mark.parametrize(
    "data, field",
    [
        ({"input_size": [0, 112]}, "input_size"),
        ({"input_size": "112"}, "input_size"),
        ({"crop": [150]}, "crop"),
        ({"color": "rgb"}, "color"),
        ({"normalize": "zscore"}, "normalize"),
        ({"interpolation": "area"}, "interpolation"),
        ({"normalize": "mean_std", "std": [1, 1, 1]}, "mean"),
        ({"normalize": "mean_std", "mean": [0.5, 0.5], "std": [1, 1, 1]}, "mean"),
        ({"normalize": "mean_std", "mean": [0.5] * 3, "std": [1, 0, 1]}, "std"),
        ({"mean": [0.5] * 3}, "mean"),
        ({"stored_size": [100, 100]}, "stored_size"),
        ({"size": 112}, "size"),
    ],
)
def test_from_dict_names_the_bad_field(data, field):
    with pytest.raises(ConfigError, match=rf"^preprocessing\.{field}: "):
        Preprocessing.from_dict(data)


# ------------------------------------------------------------------------- decoding
def test_decode_crop_resize_matches_pillow(tmp_path):
    arr = _noise((60, 50, 3))
    Image.fromarray(arr).save(tmp_path / "x.png")
    prep = Preprocessing(input_size=(20, 16), crop=(40, 30))
    out = decode_and_resize(tmp_path / "x.png", prep)
    expected = np.asarray(
        Image.fromarray(arr).crop((10, 10, 40, 50)).resize((16, 20), Image.Resampling.BILINEAR)
    )
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(decode_and_resize(arr, prep), out)  # array input, same pixels
    grey = decode_and_resize(arr, prep.replace(color="L"))
    assert grey.shape == (20, 16, 1)
    stored = decode_and_resize(arr, prep.replace(stored_size=[24, 20]))
    assert stored.shape == (24, 20, 3)


def test_crop_larger_than_image():
    with pytest.raises(DataError, match="smaller than the crop 150x150"):
        decode_and_resize(_noise((112, 92, 3)), Preprocessing(crop=(150, 150)))


def test_real_lfw_preset(shared_data):
    path = shared_data / "lfw-deepfunneled" / "AJ_Cook" / "AJ_Cook_0001.jpg"
    prep = PRESETS["lfw-deepfunneled-112x96"]
    x = preprocess(path, prep)
    assert x.shape == (1, 3, 112, 96) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


# -------------------------------------------------------------------- normalisation
def test_minus127_5_div128():
    img = _noise((2, 8, 6, 3))
    x = to_tensor(img, Preprocessing(input_size=(8, 6)))
    expected = (img.astype(np.float64).transpose(0, 3, 1, 2) - 127.5) / 128.0
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-6)


def test_prewhiten_is_facenets_formula():
    img = _noise((3, 8, 6, 3))
    img[2] = 7  # constant image: std 0 -> divided by 1/sqrt(n)
    x = to_tensor(img, Preprocessing(input_size=(8, 6), normalize="prewhiten"))
    for i in range(3):
        a = img[i].astype(np.float64)
        std_adj = max(a.std(), 1.0 / math.sqrt(a.size))
        expected = ((a - a.mean()) / std_adj).transpose(2, 0, 1)
        np.testing.assert_allclose(x[i].numpy(), expected, atol=1e-4)


def test_mean_std_and_bgr():
    img = _noise((1, 4, 5, 3))
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    prep = Preprocessing(input_size=(4, 5), color="BGR", normalize="mean_std", mean=mean, std=std)
    x = to_tensor(img[0], prep)  # a single image gives a batch of 1
    assert x.shape == (1, 3, 4, 5)
    bgr = img[0, :, :, ::-1].astype(np.float64).transpose(2, 0, 1)
    expected = (bgr / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(x[0].numpy(), expected, atol=1e-5)


def test_to_tensor_centre_crops_stored_size():
    img = _noise((2, 10, 9, 1))
    prep = Preprocessing(input_size=(6, 5), color="L", stored_size=(10, 9))
    x = to_tensor(img, prep)
    expected = (img[:, 2:8, 2:7, 0].astype(np.float64) - 127.5) / 128
    np.testing.assert_allclose(x[:, 0].numpy(), expected, atol=1e-6)
    with pytest.raises(DataError, match="channel"):
        to_tensor(img, Preprocessing(input_size=(6, 5)))


# ---------------------------------------------------------------------- augmentation
def _batch(n=16, c=3, h=12, w=10):
    return torch.from_numpy(_noise((n, c, h, w)))


def test_random_flip_seeded():
    b = _batch()
    a1 = random_flip(b, torch.Generator().manual_seed(5))
    a2 = random_flip(b, torch.Generator().manual_seed(5))
    assert torch.equal(a1, a2)
    flipped = [torch.equal(a1[i], b[i].flip(-1)) for i in range(len(b))]
    kept = [torch.equal(a1[i], b[i]) for i in range(len(b))]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)
    assert torch.equal(random_flip(b, torch.Generator(), p=0.0), b)
    assert torch.equal(random_flip(b, torch.Generator(), p=1.0), flip_tensor(b))


@pytest.mark.parametrize("padding", [0, 2])
def test_random_crop_seeded_windows(padding):
    b = _batch()
    c1 = random_crop(b, (8, 7), padding, torch.Generator().manual_seed(1))
    c2 = random_crop(b, (8, 7), padding, torch.Generator().manual_seed(1))
    c3 = random_crop(b, (8, 7), padding, torch.Generator().manual_seed(2))
    assert c1.shape == (16, 3, 8, 7) and c1.dtype == b.dtype
    assert torch.equal(c1, c2) and not torch.equal(c1, c3)
    padded = torch.nn.functional.pad(b, (padding,) * 4)
    for i in range(len(b)):  # every crop is a window of its own (padded) image
        windows = [
            (y, x)
            for y in range(padded.shape[2] - 8 + 1)
            for x in range(padded.shape[3] - 7 + 1)
            if torch.equal(padded[i, :, y : y + 8, x : x + 7], c1[i])
        ]
        assert windows


def test_random_crop_too_large():
    with pytest.raises(DataError, match="larger than"):
        random_crop(_batch(), (13, 10), 0, torch.Generator())


def test_center_crop_and_flip_tensor():
    b = _batch(2, 1, 6, 6)
    assert torch.equal(center_crop(b, 4), b[:, :, 1:5, 1:5])
    assert torch.equal(flip_tensor(flip_tensor(b)), b)
    assert torch.equal(flip_tensor(b)[..., 0], b[..., -1])
