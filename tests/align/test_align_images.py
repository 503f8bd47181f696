"""Alignment inputs go through the project's one loader and its policy (paths, PIL images,
arrays): EXIF orientation, 16-bit scaling, transparency on white, refused photos named."""

import numpy as np
import pytest
from PIL import Image

from facemetric.align import detect_faces, similarity_transform
from facemetric.align.images import to_rgb
from facemetric.align.templates import check_landmarks
from facemetric.errors import DataError, FacemetricError


def test_pil_16_bit_image_is_scaled_not_clipped():
    g = np.linspace(0, 65535, 32 * 48).reshape(32, 48).astype(np.uint16)
    img = Image.fromarray(g)
    assert img.mode == "I;16"
    out = to_rgb(img)
    assert out.shape == (32, 48, 3)
    assert np.abs(out[:, :, 0].astype(int) - np.rint(g / 257)).max() <= 1  # was 255 almost everywhere


def test_rgba_array_is_composited_on_white_like_a_file(tmp_path):
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[6:18, 6:18] = (10, 200, 10, 255)
    out = to_rgb(rgba)
    assert out[0, 0].tolist() == [255, 255, 255] and out[12, 12].tolist() == [10, 200, 10]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    np.testing.assert_array_equal(to_rgb(tmp_path / "cut.png"), out)


def test_exif_rotated_path_detects_on_upright_pixels(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to display
    Image.fromarray(img).save(tmp_path / "r.png", exif=exif)
    [result] = detect_faces(tmp_path / "r.png", detector="center")
    assert result.image_size == (64, 40)  # upright: the stored 40x64 turned


@pytest.mark.parametrize("size, why", [((1, 1), "too small"), ((200, 200), "no content")])
def test_refused_photos_are_named(tmp_path, size, why):
    Image.new("RGB", size, (0, 0, 0)).save(tmp_path / "bad.png")
    with pytest.raises(DataError, match=rf"bad\.png: {why}"):
        detect_faces(tmp_path / "bad.png", detector="center")


def test_nan_landmarks_name_the_point():
    pts = np.arange(10, dtype=float).reshape(5, 2)
    pts[3, 1] = np.nan
    with pytest.raises(FacemetricError, match=r"^src_pts: point 3 of 5 is NaN or infinite$"):
        similarity_transform(pts, np.ones((5, 2)))
    with pytest.raises(FacemetricError, match=r"^landmarks of layout 'dlib5': point 3 is NaN or infinite$"):
        check_landmarks(pts, "dlib5")
