"""Pair protocols: LFW pair files (read/write), generated folder pairs, insightface .bin sets."""

import io
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from facemetric.data.folder import IdentityFolder
from facemetric.data.protocols import (
    PairSet,
    consecutive_folds,
    generate_folder_pairs,
    read_bin_pairs,
    read_lfw_pairs,
    write_lfw_pairs,
)
from facemetric.errors import ConfigError, DataError


def make_lfw_like(root, counts):
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for k in range(1, n + 1):
            arr = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"{name}_{k:04d}.jpg")
    return root


def write(tmp_path, text, name="pairs.txt"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _assert_same(a: PairSet, b: PairSet):
    assert a.paths1 == b.paths1 and a.paths2 == b.paths2
    np.testing.assert_array_equal(a.issame, b.issame)
    np.testing.assert_array_equal(a.fold, b.fold)


# ----------------------------------------------------------------------------- real data
def test_lfw_view2(shared_data, tmp_path):
    root = shared_data / "lfw-deepfunneled"
    pairs = read_lfw_pairs(root / "pairs.txt", root)
    assert len(pairs) == 6000 and pairs.num_folds == 10 and pairs.skipped == 0
    for f in range(10):
        in_fold = pairs.fold == f
        assert in_fold.sum() == 600 and pairs.issame[in_fold].sum() == 300
        # within a fold: 300 matched lines, then 300 mismatched
        assert pairs.issame[in_fold][:300].all() and not pairs.issame[in_fold][300:].any()
    assert pairs.paths1[0] == os.fspath(root / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg")
    assert pairs.paths2[0] == os.fspath(root / "Abel_Pacheco" / "Abel_Pacheco_0004.jpg")
    assert pairs.names[300] == ("Abdel_Madi_Shabneh", "Dean_Barker")
    # write -> read gives the same pairs, and the very same bytes as the official file
    out = tmp_path / "pairs_copy.txt"
    write_lfw_pairs(out, pairs, root)
    _assert_same(read_lfw_pairs(out, root), pairs)
    assert out.read_bytes() == (root / "pairs.txt").read_bytes()
    paths, first, second = pairs.unique_paths()
    assert len(paths) == len(set(paths)) and [paths[i] for i in first] == pairs.paths1
    assert [paths[i] for i in second] == pairs.paths2


def test_lfw_view1(shared_data, tmp_path):
    root = shared_data / "lfw-deepfunneled"
    dev_test = read_lfw_pairs(root / "pairsDevTest.txt", root)
    assert len(dev_test) == 1000 and dev_test.issame.sum() == 500
    assert np.bincount(dev_test.fold).tolist() == [100] * 10
    assert dev_test.issame[:500].all() and (dev_test.fold[:50] == 0).all()
    assert (dev_test.fold[450:500] == 9).all() and (dev_test.fold[500:550] == 0).all()
    for f in range(10):
        assert dev_test.issame[dev_test.fold == f].sum() == 50
    dev_train = read_lfw_pairs(root / "pairsDevTrain.txt", root)
    assert len(dev_train) == 2200 and np.bincount(dev_train.fold).tolist() == [220] * 10
    # written back in View 2 layout ("10 50"): the same pairs, fold by fold
    out = tmp_path / "dev.txt"
    write_lfw_pairs(out, dev_test, root)
    assert out.read_text().splitlines()[0] == "10\t50"
    back = read_lfw_pairs(out, root)
    key = lambda p: sorted(zip(p.paths1, p.paths2, p.issame.tolist(), p.fold.tolist(), strict=True))  # noqa: E731
    assert key(back) == key(dev_test)


# ------------------------------------------------------------------------- synthetic
@pytest.fixture
def lfw_root(tmp_path):
    return make_lfw_like(tmp_path / "lfw", {"Ann": 3, "Bob": 2, "Cy": 1})


def test_read_small_view2_and_view1(tmp_path, lfw_root):
    p = write(tmp_path, "2 1\nAnn 1 2\nBob 1 Cy 1\nBob\t1\t2\nAnn\t3\tCy\t1\n")
    pairs = read_lfw_pairs(p, lfw_root)
    assert pairs.issame.tolist() == [True, False, True, False]
    assert pairs.fold.tolist() == [0, 0, 1, 1]
    assert pairs.paths2[3] == os.fspath(lfw_root / "Cy" / "Cy_0001.jpg")
    v1 = read_lfw_pairs(write(tmp_path, "2\nAnn 1 2\nBob 1 2\nAnn 1 Bob 1\nCy 1 Ann 3\n"), lfw_root)
    assert v1.fold.tolist() == [0, 1, 0, 1] and v1.issame.tolist() == [True, True, False, False]


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 1\nAnn 1 2\nAnn 1 Bob\n",
         "pairs.txt:3: expected 'name n1 n2' or 'name1 n1 name2 n2', got 'Ann 1 Bob'"),
        ("1 1\nAnn one 2\nAnn 1 Bob 1\n",
         "pairs.txt:2: expected 'name n1 n2' or 'name1 n1 name2 n2', got 'Ann one 2'"),
        ("1 1\nAnn 0 2\nAnn 1 Bob 1\n", "pairs.txt:2: expected 'name n1 n2' or"),
        ("1 1\nAnn 1 2\n", "pairs.txt: the header '1 1' announces 2 pair lines, found 1"),
        ("1 1\nAnn 1 Bob 1\nAnn 1 2\n", "pairs.txt:2: expected a matched pair 'name n1 n2'"),
        ("ten 300\n", "pairs.txt:1: expected a header 'folds pairs_per_half'"),
        ("", "pairs.txt: empty"),
    ],
)
def test_malformed(tmp_path, lfw_root, text, message):
    with pytest.raises(DataError) as info:
        read_lfw_pairs(write(tmp_path, text), lfw_root)
    assert str(info.value).startswith(message), str(info.value)


def test_missing_images(tmp_path, lfw_root):
    p = write(tmp_path, "1 2\nAnn 1 2\nAnn 2 9\nAnn 1 Bob 1\nZed 1 Bob 5\n")
    with pytest.raises(DataError) as info:
        read_lfw_pairs(p, lfw_root)
    msg = str(info.value)
    assert msg.startswith("pairs.txt: 3 of the 6 images it names are missing under")
    assert msg.endswith(f"(first: {lfw_root / 'Ann' / 'Ann_0009'}.*)")
    pairs = read_lfw_pairs(p, lfw_root, on_missing="skip")
    assert len(pairs) == 2 and pairs.skipped == 2 and len(pairs.skipped_paths) == 3
    assert pairs.issame.tolist() == [True, False]
    with pytest.raises(ConfigError, match="on_missing"):
        read_lfw_pairs(p, lfw_root, on_missing="ignore")
    with pytest.raises(DataError, match="pair file not found"):
        read_lfw_pairs(tmp_path / "none.txt", lfw_root)


def test_generated_pairs_roundtrip(tmp_path):
    root = make_lfw_like(tmp_path / "lfw", {f"P{i:02d}": 4 for i in range(24)})
    folder = IdentityFolder(root)
    pairs = generate_folder_pairs(folder, pairs_per_fold=8, n_folds=4, seed=1)
    assert len(pairs) == 32 and pairs.issame.sum() == 16
    for a, b, same, (n1, n2) in zip(pairs.paths1, pairs.paths2, pairs.issame, pairs.names, strict=True):
        assert (os.path.basename(os.path.dirname(a)) == os.path.basename(os.path.dirname(b))) == same
        assert (n1 == n2) == same
    again = generate_folder_pairs(folder, pairs_per_fold=8, n_folds=4, seed=1)
    _assert_same(pairs, again)
    out = tmp_path / "gen.txt"
    write_lfw_pairs(out, pairs, root)
    assert out.read_text().splitlines()[0] == "4\t4"
    _assert_same(read_lfw_pairs(out, root), pairs)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_write_errors(tmp_path, shared_data):
    orl = IdentityFolder(shared_data / "att-faces")
    pairs = generate_folder_pairs(orl, pairs_per_fold=20, n_folds=10)
    assert len(pairs) == 200
    with pytest.raises(DataError, match=r"expected the LFW layout <root>/<name>/<name>_NNNN.<ext>"):
        write_lfw_pairs(tmp_path / "x.txt", pairs, orl.root)
    uneven = PairSet(["a/a_0001.jpg"] * 3, ["a/a_0002.jpg"] * 3, [True, False, False], [0, 0, 0])
    with pytest.raises(DataError, match="same number of genuine and impostor"):
        write_lfw_pairs(tmp_path / "x.txt", uneven, ".")
    assert not (tmp_path / "x.txt").exists()


# ---------------------------------------------------------------------------- .bin
def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("protocol", [2, 4])
def test_bin_roundtrip(tmp_path, protocol):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(20, 18, 3), dtype=np.uint8) for _ in range(6)]
    issame = [True, False, True]
    bins = [_png(a) for a in images]
    bins[1] = np.frombuffer(bins[1], dtype=np.uint8)  # some sets hold uint8 arrays
    path = tmp_path / "tiny.bin"
    path.write_bytes(pickle.dumps((bins, issame), protocol=protocol))
    got, same = read_bin_pairs(path)
    assert same.dtype == bool and same.tolist() == issame
    assert len(got) == 6
    for a, b in zip(images, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert consecutive_folds(3, 10).tolist() == [0, 1, 2]
    assert np.bincount(consecutive_folds(6000)).tolist() == [600] * 10


def test_bin_errors(tmp_path):
    odd = tmp_path / "odd.bin"
    odd.write_bytes(pickle.dumps(([_png(np.zeros((4, 4, 3), np.uint8))] * 3, [True])))
    with pytest.raises(DataError, match="expected 2 images per pair"):
        read_bin_pairs(odd)
    broken = tmp_path / "broken.bin"
    broken.write_bytes(pickle.dumps(([b"junk", b"junk"], [True])))
    with pytest.raises(DataError, match=r"broken.bin: image 0: cannot read image"):
        read_bin_pairs(broken)
    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps((os.getcwd, [True])))  # a global outside the allow-list
    with pytest.raises(DataError, match="refusing to load"):
        read_bin_pairs(evil)
    with pytest.raises(DataError, match="not found"):
        read_bin_pairs(tmp_path / "none.bin")


# ------------------------------------------------------------------ any image extension
@pytest.mark.parametrize("ext", ["pgm", "png", "PNG"])
def test_pairs_find_photos_with_any_image_extension(tmp_path, ext):
    root = tmp_path / "faces"
    for name, n in {"Ann": 2, "Bob": 1}.items():
        (root / name).mkdir(parents=True)
        for k in range(1, n + 1):
            Image.new("L", (20, 20), k).save(root / name / f"{name}_{k:04d}.{ext}", format="PPM" if ext == "pgm" else "PNG")
    p = write(tmp_path, "1 1\nAnn 1 2\nAnn 2 Bob 1\n")
    pairs = read_lfw_pairs(p, root)  # was: "3 of the 3 images it names are missing"
    assert pairs.paths1 == [os.fspath(root / "Ann" / f"Ann_0001.{ext}"), os.fspath(root / "Ann" / f"Ann_0002.{ext}")]
    assert pairs.paths2[1] == os.fspath(root / "Bob" / f"Bob_0001.{ext}") and pairs.skipped == 0
    with pytest.raises(DataError, match="3 of the 3 images it names are missing"):
        read_lfw_pairs(p, root, ext="jpg")  # an explicit extension is taken as given


def test_pairs_prefer_jpg_and_ignore_non_images(tmp_path):
    root = tmp_path / "faces"
    (root / "Ann").mkdir(parents=True)
    for ext in ("png", "jpg", "txt"):
        (root / "Ann" / f"Ann_0001.{ext}").write_bytes(b"x")
    (root / "Ann" / "Ann_0002.txt").write_bytes(b"x")
    (root / "Ann" / "Ann_0002.png").mkdir()  # a folder named like a photo is not one
    p = write(tmp_path, "1 1\nAnn 1 1\nAnn 1 Ann 2\n")
    pairs = read_lfw_pairs(p, root, on_missing="skip")
    assert pairs.paths1 == [os.fspath(root / "Ann" / "Ann_0001.jpg")]
    assert pairs.skipped_paths == [os.fspath(root / "Ann" / "Ann_0002") + ".*"]
