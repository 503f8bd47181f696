"""The decoded-image cache and the datasets built on it."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import facemetric.data.cache as cache_mod
from facemetric.data.cache import (
    CachedImageDataset,
    ImageFileDataset,
    build_image_cache,
    cache_info,
    sidecar_path,
)
from facemetric.data.folder import IdentityFolder
from facemetric.data.transforms import Preprocessing, decode_and_resize, to_tensor
from facemetric.errors import DataError


def make_folder(root, n_ids=4, per_id=5, size=(40, 36), seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n_ids):
        d = root / f"id{i}"
        d.mkdir(parents=True)
        for k in range(per_id):
            arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{k}.png")
    return IdentityFolder(root)


PREP = Preprocessing(input_size=(16, 14), crop=(32, 28))
PREP_STORED = PREP.replace(stored_size=[20, 18])


def _no_decode(*args, **kwargs):
    raise AssertionError("decoded although the cache should have been reused")


def test_same_pixels_as_decode_and_resize(tmp_path):
    folder = make_folder(tmp_path / "data")
    arr = build_image_cache(folder.paths, PREP, tmp_path / "c.npy", num_workers=2, progress=False)
    assert isinstance(arr, np.memmap) and arr.shape == (20, 16, 14, 3) and arr.dtype == np.uint8
    for i, p in enumerate(folder.paths):
        np.testing.assert_array_equal(arr[i], decode_and_resize(p, PREP))
    serial = build_image_cache(folder.paths, PREP, tmp_path / "s.npy", num_workers=0, progress=False)
    np.testing.assert_array_equal(serial, arr)


def test_real_images(shared_data, tmp_path):
    lfw = sorted((shared_data / "lfw-deepfunneled" / "Aaron_Peirsol").glob("*.jpg"))
    orl = sorted((shared_data / "att-faces" / "s1").glob("*.pgm"))
    prep = Preprocessing(input_size=(56, 48), crop=(150, 128))
    arr = build_image_cache(lfw, prep, tmp_path / "lfw.npy", progress=False)
    grey = Preprocessing(input_size=(56, 46), color="L")
    arr_g = build_image_cache(orl, grey, tmp_path / "orl.npy", progress=False)
    assert arr.shape == (len(lfw), 56, 48, 3) and arr_g.shape == (10, 56, 46, 1)
    for i, p in enumerate(lfw):
        np.testing.assert_array_equal(arr[i], decode_and_resize(p, prep))
    for i, p in enumerate(orl):
        np.testing.assert_array_equal(arr_g[i], decode_and_resize(p, grey))


def test_reused_without_decoding(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "data")
    path = tmp_path / "c.npy"
    first = np.array(build_image_cache(folder.paths, PREP, path, progress=False, root=folder.root))
    mtime = path.stat().st_mtime_ns
    info = cache_info(path)
    assert info["paths"][0] == "id0/0.png" and info["stored_size"] == [16, 14]
    assert info["crop"] == [32, 28] and info["mode"] == "RGB" and len(info["hash"]) == 64
    monkeypatch.setattr(cache_mod, "decode_and_resize", _no_decode)
    again = build_image_cache(folder.paths, PREP, path, progress=False, root=folder.root)
    np.testing.assert_array_equal(again, first)
    assert path.stat().st_mtime_ns == mtime


def test_rebuilt_when_inputs_change(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "data")
    path = tmp_path / "c.npy"
    build_image_cache(folder.paths, PREP, path, progress=False)
    bigger = build_image_cache(folder.paths, PREP_STORED, path, progress=False)  # size changed
    assert bigger.shape == (20, 20, 18, 3)
    assert cache_info(path)["stored_size"] == [20, 18]
    # an image file replaced under the same name -> rebuilt, new pixels
    new = np.full((40, 36, 3), 200, dtype=np.uint8)
    new[::2] = 100  # not blank: the loader refuses an image whose pixels are all equal
    Image.fromarray(new).save(folder.paths[3])
    os.utime(folder.paths[3], ns=(1, 1))
    arr = build_image_cache(folder.paths, PREP_STORED, path, progress=False)
    np.testing.assert_array_equal(arr[3], decode_and_resize(folder.paths[3], PREP_STORED))
    # fewer paths -> rebuilt
    monkeypatch.setattr(cache_mod, "decode_and_resize", _no_decode)
    with pytest.raises(AssertionError, match="decoded although"):
        build_image_cache(folder.paths[:5], PREP_STORED, path, progress=False, num_workers=0)


def _corrupt_copy(tmp_path):
    folder = make_folder(tmp_path / "data")
    bad = folder.paths[7]
    bad.write_bytes(b"not an image at all")
    return folder, bad


def test_failed_build_leaves_no_partial_file(tmp_path):
    folder, bad = _corrupt_copy(tmp_path)
    out = tmp_path / "cache"
    out.mkdir()
    for workers in (0, 2):
        with pytest.raises(DataError, match=rf"^{bad}: cannot read image"):
            build_image_cache(folder.paths, PREP, out / "c.npy", num_workers=workers, progress=False)
        assert os.listdir(out) == []


def test_skip_corrupt_stores_zeros(tmp_path):
    folder, bad = _corrupt_copy(tmp_path)
    path = tmp_path / "c.npy"
    with pytest.warns(UserWarning, match="1 unreadable image"):
        arr = build_image_cache(folder.paths, PREP, path, progress=False, skip_corrupt=True)
    assert not arr[7].any() and arr[6].any()
    assert cache_info(path)["skipped"] == [str(bad)]
    with pytest.raises(DataError, match=str(bad)):  # not reused without skip_corrupt
        build_image_cache(folder.paths, PREP, path, progress=False)


def test_stale_sidecar_is_not_trusted(tmp_path):
    folder = make_folder(tmp_path / "data")
    path = tmp_path / "c.npy"
    build_image_cache(folder.paths, PREP, path, progress=False)
    side = sidecar_path(path)
    info = json.loads(side.read_text())
    info["hash"] = "0" * 64
    side.write_text(json.dumps(info))
    arr = build_image_cache(folder.paths, PREP, path, progress=False)
    assert cache_info(path)["hash"] != "0" * 64 and arr.shape[0] == 20


# -------------------------------------------------------------------------- datasets
def test_cached_dataset_eval(tmp_path):
    folder = make_folder(tmp_path / "data")
    ds = CachedImageDataset.from_folder(folder, PREP_STORED, tmp_path / "c.npy", progress=False)
    assert len(ds) == 20 and ds.num_classes == 4 and ds.class_names == folder.classes
    x, y = ds.get_batch([3, 0, 19])
    assert x.shape == (3, 3, 16, 14) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.tolist() == [0, 0, 3]
    expected = to_tensor(np.stack([decode_and_resize(folder.paths[i], PREP_STORED) for i in (3, 0, 19)]),
                         PREP_STORED)
    assert torch.equal(x, expected)  # centre crop, no flip
    x1, y1 = ds[19]
    assert torch.equal(x1, expected[2]) and int(y1) == 3
    files = ImageFileDataset.from_folder(folder, PREP_STORED)
    assert torch.equal(files[19][0], x1) and int(files[19][1]) == 3


def test_cached_dataset_train_augmentation_is_seeded(tmp_path):
    folder = make_folder(tmp_path / "data")
    arr = build_image_cache(folder.paths, PREP_STORED, tmp_path / "c.npy", progress=False)
    idx = list(range(20))

    def epoch_batches(ds, epoch):
        ds.set_epoch(epoch)
        return [ds.get_batch(idx)[0] for _ in range(2)]

    a = CachedImageDataset(arr, folder.labels, PREP_STORED, train=True, seed=1)
    b = CachedImageDataset(arr, folder.labels, PREP_STORED, train=True, seed=1)
    e0, e1 = epoch_batches(a, 0), epoch_batches(a, 1)
    assert all(torch.equal(u, v) for u, v in zip(e0, epoch_batches(b, 0), strict=True))
    assert all(torch.equal(u, v) for u, v in zip(e1, epoch_batches(b, 1), strict=True))  # resumed
    assert not torch.equal(e0[0], e0[1]) and not torch.equal(e0[0], e1[0])
    c = CachedImageDataset(arr, folder.labels, PREP_STORED, train=True, seed=2)
    assert not torch.equal(epoch_batches(c, 0)[0], e0[0])
    assert e0[0].shape == (20, 3, 16, 14)

    # each augmented image is a (possibly flipped) 16x14 window of its stored 20x18 image
    stored = to_tensor(np.asarray(arr), PREP_STORED.replace(input_size=[20, 18]))
    for i in range(20):
        found = False
        for y in range(5):
            for x in range(5):
                win = stored[i, :, y : y + 16, x : x + 14]
                found |= torch.equal(win, e0[0][i]) or torch.equal(win.flip(-1), e0[0][i])
        assert found

    # no augmentation requested -> identical to eval
    plain = CachedImageDataset(arr, folder.labels, PREP_STORED, train=True, random_crop=False, flip=False)
    ev = CachedImageDataset(arr, folder.labels, PREP_STORED)
    assert torch.equal(plain.get_batch(idx)[0], ev.get_batch(idx)[0])


def test_item_augmentation_matches_file_dataset(tmp_path):
    folder = make_folder(tmp_path / "data")
    cached = CachedImageDataset.from_folder(
        folder, PREP_STORED, tmp_path / "c.npy", progress=False, train=True, seed=3, padding=1
    )
    files = ImageFileDataset.from_folder(folder, PREP_STORED, train=True, seed=3, padding=1)
    for ds in (cached, files):
        ds.set_epoch(2)
    for i in (0, 7, 19):
        assert torch.equal(cached[i][0], files[i][0])
    loader = torch.utils.data.DataLoader(files, batch_size=5, num_workers=0)
    xb, yb = next(iter(loader))
    assert xb.shape == (5, 3, 16, 14) and yb.tolist() == [0] * 5


def test_dataset_errors(tmp_path):
    imgs = np.zeros((4, 10, 10, 3), dtype=np.uint8)
    with pytest.raises(DataError, match="smaller than input_size"):
        CachedImageDataset(imgs, [0, 1, 2, 3], Preprocessing(input_size=(12, 12)))
    with pytest.raises(DataError, match="needs 1"):
        CachedImageDataset(imgs, [0, 1, 2, 3], Preprocessing(input_size=(8, 8), color="L"))
    with pytest.raises(DataError, match=r"labels: expected shape \[4\]"):
        CachedImageDataset(imgs, [0, 1], Preprocessing(input_size=(8, 8)))
    with pytest.raises(DataError, match="no images to cache"):
        build_image_cache([], PREP, tmp_path / "c.npy", progress=False)


def test_moved_root_reuses_relative_cache(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "data")
    path = tmp_path / "c.npy"
    build_image_cache(folder.paths, PREP, path, progress=False, root=folder.root)
    shutil.copytree(tmp_path / "data", tmp_path / "moved", copy_function=shutil.copy2)
    moved = IdentityFolder(tmp_path / "moved")
    monkeypatch.setattr(cache_mod, "decode_and_resize", _no_decode)
    arr = build_image_cache(moved.paths, PREP, path, progress=False, root=moved.root)
    assert arr.shape[0] == 20
