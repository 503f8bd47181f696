"""Reading image files: shapes, modes, extensions and one-line errors naming the file."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from facemetric.data.image_io import (
    IMAGE_EXTENSIONS,
    decode_image_bytes,
    is_image_file,
    list_images,
    read_image,
    verify_image,
)
from facemetric.errors import DataError


def _noise(h=24, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_png_roundtrip_rgb_and_grey(tmp_path):
    arr = _noise()
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (24, 20, 3)
    np.testing.assert_array_equal(out, arr)
    grey = read_image(tmp_path / "a.png", mode="L")
    assert grey.shape == (24, 20, 1)
    expected = np.asarray(Image.fromarray(arr).convert("L"))
    np.testing.assert_array_equal(grey[:, :, 0], expected)


def test_grey_file_read_as_rgb_repeats_channels(tmp_path):
    g = _noise()[:, :, 0]
    Image.fromarray(g, "L").save(tmp_path / "g.pgm")
    rgb = read_image(tmp_path / "g.pgm")
    assert rgb.shape == (24, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], g)


def test_real_files(shared_data):
    orl = read_image(shared_data / "att-faces" / "s1" / "1.pgm", mode="L")
    assert orl.shape == (112, 92, 1)
    lfw = read_image(shared_data / "lfw-deepfunneled" / "AJ_Cook" / "AJ_Cook_0001.jpg")
    assert lfw.shape == (250, 250, 3)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.jpg"
    with pytest.raises(DataError, match=r"nope\.jpg: cannot read image \(file not found\)$"):
        read_image(p)


def test_garbage_bytes_named(tmp_path):
    p = tmp_path / "bad.jpg"
    p.write_bytes(b"this is not a jpeg" * 10)
    with pytest.raises(DataError) as info:
        read_image(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: cannot read image (") and "\n" not in msg
    assert verify_image(p) is not None


def test_truncated_jpeg_is_an_error(tmp_path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    buf = io.BytesIO()
    Image.fromarray(_noise(64, 64)).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.jpg: cannot read image"):
        read_image(p)


def test_decode_bytes():
    arr = _noise()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    np.testing.assert_array_equal(decode_image_bytes(buf.getvalue()), arr)
    with pytest.raises(DataError, match="x.bin: image 3: cannot read image"):
        decode_image_bytes(b"junk", name="x.bin: image 3")


def test_extensions_case_insensitive(tmp_path):
    assert set(IMAGE_EXTENSIONS) == {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp"}
    assert is_image_file("A.JPG") and is_image_file("b.Jpeg") and is_image_file("c.webp")
    assert not is_image_file("notes.txt") and not is_image_file("jpg")
    for name in ("b.PNG", "a.jpg", ".hidden.jpg", "readme.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.jpg").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]
