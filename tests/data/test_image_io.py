"""Reading image files: shapes, modes, extensions and one-line errors naming the file; the
loader's policy (EXIF, 16-bit, transparency, sizes, blank images) and hostile files/folders."""

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageFile

from facemetric.data.image_io import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS_ENV,
    MIN_SIDE_ENV,
    SkipKind,
    convert_image,
    decode_image_bytes,
    display_path,
    find_images,
    image_limits,
    is_image_file,
    list_images,
    load_image,
    path_problem,
    read_image,
    scan_images,
    verify_image,
)
from facemetric.errors import ConfigError, DataError


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
    with pytest.raises(DataError, match=r"nope\.jpg: file not found$"):
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
    assert set(IMAGE_EXTENSIONS) == {
        ".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp", ".gif", ".tif", ".tiff"
    }
    assert is_image_file("A.JPG") and is_image_file("b.Jpeg") and is_image_file("c.webp")
    assert is_image_file("d.GIF") and is_image_file("e.tif") and is_image_file("f.TIFF")
    assert not is_image_file("notes.txt") and not is_image_file("jpg")
    for name in ("b.PNG", "a.jpg", ".hidden.jpg", "readme.txt", "c.gif", "d.tiff"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.gif", "d.tiff"]
    _, skipped = scan_images(tmp_path)
    assert {p.name: str(s) for p, s in skipped.items()} == {
        "dir.jpg": "is a directory", "empty.png": "empty file"
    }


# ------------------------------------------------------------------ silent wrong answers
def _asymmetric(h=40, w=64):
    """A picture with a bright top-left corner and a dark bottom-right one."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (255 * (1 - x / w)).astype(np.uint8)
    img[..., 1] = (255 * (1 - y / h)).astype(np.uint8)
    img[:10, :10] = 255
    return img


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(tmp_path, fmt):
    upright = _asymmetric()
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # as a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    p = tmp_path / f"sideways.{fmt.lower()}"
    Image.fromarray(stored).save(p, format=fmt, exif=exif, **({"quality": 98} if fmt == "JPEG" else {}))
    out = read_image(p)
    assert out.shape == upright.shape  # not (64, 40, 3): upright as any viewer shows it
    err = np.abs(out.astype(int) - upright.astype(int)).mean()
    assert err < (4 if fmt == "JPEG" else 0.5), err
    pil = convert_image(Image.open(p))  # in-memory PIL images too
    assert pil.size == (64, 40)


def _gradient16(h=32, w=64):
    return (np.linspace(0, 65535, h * w).reshape(h, w)).astype(np.uint16)


@pytest.mark.parametrize("ext", ["png", "tif", "pgm"])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, ext):
    g = _gradient16()
    p = tmp_path / f"deep.{ext}"
    Image.fromarray(g).save(p)
    assert Image.open(p).mode in ("I;16", "I")  # how Pillow opens 16-bit PNG/TIFF/PGM
    out = read_image(p, mode="L")[:, :, 0]
    expected = np.rint(g / 257.0).astype(np.uint8)
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert (out == 255).mean() < 0.01  # was 99.6% white (clipped at 255)
    rgb = read_image(p)
    np.testing.assert_array_equal(rgb[:, :, 0], out)


def test_12_bit_pgm_uses_its_maxval(tmp_path):
    values = (np.arange(32 * 64).reshape(32, 64) * 2).astype(">u2")  # 0..4094, maxval 4095
    p = tmp_path / "twelve.pgm"
    p.write_bytes(b"P5\n64 32\n4095\n" + values.tobytes())
    out = read_image(p, mode="L")[:, :, 0]
    expected = np.rint(values.astype(float) * 255 / 4095)
    assert np.abs(out - expected).max() <= 1


def test_float_and_32_bit_modes(tmp_path):
    f = np.linspace(0, 1, 32 * 40, dtype=np.float32).reshape(32, 40)
    Image.fromarray(f).save(tmp_path / "unit.tif")
    out = read_image(tmp_path / "unit.tif", mode="L")[:, :, 0]
    np.testing.assert_array_equal(out, np.rint(f * 255).astype(np.uint8))
    Image.fromarray(f * 1000).save(tmp_path / "wide.tif")
    r = load_image(tmp_path / "wide.tif")
    assert r.skip.kind is SkipKind.UNSUPPORTED and "0..1 or 0..255" in str(r.skip)
    i32 = (np.arange(32 * 40).reshape(32, 40) * 100_000).astype(np.int32)
    Image.fromarray(i32).save(tmp_path / "big.tif")
    assert load_image(tmp_path / "big.tif").skip.kind is SkipKind.UNSUPPORTED


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)  # black under full transparency ...
    rgba[8:24, 8:24] = (200, 10, 10, 255)  # ... around an opaque red square
    rgba[0, 0] = (0, 0, 0, 128)  # half-transparent black over white -> mid grey
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    out = read_image(tmp_path / "cut.png")
    assert out[2, 2].tolist() == [255, 255, 255]  # not the black stored under alpha 0
    assert out[16, 16].tolist() == [200, 10, 10]
    assert out[0, 0].tolist() == [127, 127, 127]
    la = Image.fromarray(rgba, "RGBA").convert("LA")
    la.save(tmp_path / "cut_la.png")
    assert read_image(tmp_path / "cut_la.png", mode="L")[2, 2, 0] == 255
    pal = Image.fromarray(rgba[:, :, :3]).convert("P")
    pal.save(tmp_path / "pal.png", transparency=int(np.asarray(pal)[2, 2]))
    assert read_image(tmp_path / "pal.png")[2, 2].tolist() == [255, 255, 255]


def test_palette_bilevel_and_cmyk(tmp_path):
    img = _asymmetric()
    Image.fromarray(img).convert("P").save(tmp_path / "p.gif")
    assert read_image(tmp_path / "p.gif").shape == img.shape
    bw = Image.fromarray(((_asymmetric()[:, :, 0] > 128) * 255).astype(np.uint8)).convert("1")
    bw.save(tmp_path / "bw.png")
    assert set(np.unique(read_image(tmp_path / "bw.png", mode="L")).tolist()) == {0, 255}
    Image.fromarray(img).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=98)
    out = read_image(tmp_path / "cmyk.jpg")
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 6


def test_animated_gif_gives_its_first_frame(tmp_path):
    first, second = _asymmetric(), 255 - _asymmetric()
    frames = [Image.fromarray(first).convert("P"), Image.fromarray(second).convert("P")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    r = load_image(tmp_path / "anim.gif")
    assert r.ok and r.animated
    expected = np.asarray(frames[0].convert("RGB"))
    np.testing.assert_array_equal(r.array, expected)
    assert [p.name for p in list_images(tmp_path)] == ["anim.gif"]


# -------------------------------------------------------------------------- size policy
def _bmp_header_only(path, width, height):
    """A BMP whose header announces width x height and that holds almost no pixels: decoding
    it would fail (truncated), so a size refusal proves the check came before any decode."""
    buf = io.BytesIO()
    Image.new("L", (64, 64), 7).save(buf, format="BMP")
    data = bytearray(buf.getvalue()[:2048])
    data[18:22] = int(width).to_bytes(4, "little", signed=True)
    data[22:26] = int(height).to_bytes(4, "little", signed=True)
    path.write_bytes(bytes(data))


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")  # refused, not warned
def test_tiny_and_huge_images_are_refused_before_decoding(tmp_path, monkeypatch):
    Image.new("RGB", (1, 1), (0, 0, 0)).save(tmp_path / "dot.png")
    r = load_image(tmp_path / "dot.png")
    assert r.skip.kind is SkipKind.TOO_SMALL and "1x1" in str(r.skip)
    with pytest.raises(DataError, match=r"dot\.png: too small: 1x1 px"):
        read_image(tmp_path / "dot.png")
    huge = tmp_path / "huge.bmp"
    _bmp_header_only(huge, 13_000, 13_000)
    r = load_image(huge)
    assert r.skip.kind is SkipKind.TOO_LARGE and "13000x13000" in str(r.skip), r.skip
    assert verify_image(huge).startswith("too large")
    # the limits are parameters and environment variables
    assert load_image(huge, max_pixels=200_000_000).skip.kind is SkipKind.UNREADABLE  # truncated
    monkeypatch.setenv(MAX_PIXELS_ENV, "200000000")
    assert image_limits() == (16, 200_000_000)
    monkeypatch.setenv(MIN_SIDE_ENV, "1")
    assert load_image(tmp_path / "dot.png").skip.kind is SkipKind.BLANK  # one pixel is blank
    monkeypatch.setenv(MIN_SIDE_ENV, "small")
    with pytest.raises(ConfigError, match=f"^{MIN_SIDE_ENV}: expected a positive integer"):
        image_limits()


def test_pillow_decompression_bomb_is_a_skip(tmp_path):
    bomb = tmp_path / "bomb.bmp"
    _bmp_header_only(bomb, 20_000, 20_000)  # above twice Pillow's MAX_IMAGE_PIXELS
    r = load_image(bomb, max_pixels=10**10)
    assert r.skip.kind is SkipKind.TOO_LARGE and "\n" not in str(r.skip)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_image_is_no_content(tmp_path, value):
    Image.new("RGB", (300, 200), (value,) * 3).save(tmp_path / "blank.jpg")
    r = load_image(tmp_path / "blank.jpg")
    assert r.skip.kind is SkipKind.BLANK and str(r.skip).startswith("no content")
    with pytest.raises(DataError, match=r"blank\.jpg: no content"):
        decode_image_bytes((tmp_path / "blank.jpg").read_bytes(), name="blank.jpg")
    almost = np.full((200, 300, 3), value, np.uint8)
    almost[100, 150] = (value + 50) % 256
    Image.fromarray(almost).save(tmp_path / "dot.png")
    assert load_image(tmp_path / "dot.png").ok


# ---------------------------------------------------------------------- files and names
def test_file_problems_each_named(tmp_path, monkeypatch):
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop2.jpg")
    (tmp_path / "loop2.jpg").symlink_to(tmp_path / "loop.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    expected = {
        "dir.jpg": "is a directory",
        "loop.jpg": "symlink loop",
        "dangling.jpg": f"broken symlink (-> {tmp_path / 'gone.jpg'})",
        "pipe.jpg": "not a regular file",  # reading it would block forever
        "empty.jpg": "empty file",
        "missing.jpg": "file not found",
    }
    for name, why in expected.items():
        assert path_problem(tmp_path / name) == why
        with pytest.raises(DataError) as info:
            read_image(tmp_path / name)
        assert str(info.value) == f"{tmp_path / name}: {why}"
    Image.fromarray(_noise()).save(tmp_path / "ok.png")
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # as a user without read rights
    assert load_image(tmp_path / "ok.png").skip.kind is SkipKind.PERMISSION


def test_names_that_are_not_utf8(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"  # Latin-1 bytes: not valid UTF-8
    Image.fromarray(_noise()).save(raw.decode("utf-8", "surrogateescape"))
    Image.fromarray(_noise()).save(tmp_path / "ok.png")
    paths, skipped = scan_images(tmp_path)
    assert [p.name for p in paths] == ["ok.png"]
    [(bad, why)] = skipped.items()
    assert why.kind is SkipKind.BAD_NAME
    shown = display_path(bad)
    assert shown.endswith("caf\\xe9.png") and shown.encode("utf-8")  # printable, storable


def test_find_images_survives_symlink_loops(tmp_path):
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    Image.fromarray(_noise()).save(root / "a" / "x.png")
    Image.fromarray(_noise(seed=1)).save(root / "a" / "b" / "y.jpg")
    (root / "a" / "b" / "up").symlink_to(root)  # a loop back to the top
    (root / "again").symlink_to(root / "a")  # a second name of one folder
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    (root / "same.png").symlink_to(root / "a" / "x.png")
    (root / "album.jpg").mkdir()
    paths, skipped = find_images(root)
    assert [p.relative_to(root).as_posix() for p in paths] == ["a/b/y.jpg", "a/x.png"]
    reasons = {p.relative_to(root).as_posix(): str(s) for p, s in skipped.items()}
    assert reasons == {
        "a/b/up": f"already searched as {root}",
        "again": f"already searched as {root / 'a'}",
        "loop.jpg": "symlink loop",
        "same.png": f"same file as {root / 'a' / 'x.png'}",
        "album.jpg": "is a directory (named like a photo; not searched)",
    }
