"""The dlib shape-predictor port (facemetric.align.shape_predictor).

* a hand-built one-tree predictor checks the cascade's arithmetic against hand-computed values;
* the integer decoder is checked against the project's dlib-format reader;
* the real 5-point model is pinned on LFW photos to landmarks dlib produced (no dlib needed:
  runs wherever face_recognition_models and the LFW data are present);
* where dlib-bin is importable, the port is compared with dlib on a sample of LFW faces
  (landmarks and the chips made from them).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os

import numpy as np
import pytest
from PIL import Image

from facemetric.align.shape_predictor import (
    decode_integers,
    grey_intensity,
    load_shape_predictor,
    parse_shape_predictor,
)
from facemetric.errors import FacemetricError
from facemetric.models.dlib_format import DlibReader


# -- a tiny dlib serialiser (the inverse of the format the module docstring states) -------------
def enc_int(v: int) -> bytes:
    mag = abs(int(v))
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


def enc_float(x: float) -> bytes:
    m, e = math.frexp(float(x))
    mant = int(m * (1 << 53))
    return enc_int(mant) + enc_int(e - 53)


def enc_matrix(values) -> bytes:
    vals = list(values)
    return enc_int(-len(vals)) + enc_int(-1) + b"".join(enc_float(v) for v in vals)


def tiny_predictor_bytes(thresh: float = 10.0) -> bytes:
    """2 landmarks, 1 level, 1 tree of depth 1 (one split, two leaves), 2 feature pixels."""
    initial = [0.25, 0.5, 0.75, 0.5]  # (0.25, 0.5) and (0.75, 0.5) on the unit square
    out = enc_int(1) + enc_matrix(initial)
    out += enc_int(1) + enc_int(1)  # one level with one tree
    out += enc_int(1) + enc_int(0) + enc_int(1) + enc_float(thresh)  # split f0 - f1 > thresh
    out += enc_int(2) + enc_matrix([0.1, 0.0, 0.1, 0.0]) + enc_matrix([0.0, -0.1, 0.0, -0.1])
    out += enc_int(1) + enc_int(2) + enc_int(0) + enc_int(1)  # anchors: f0 at part 0, f1 at part 1
    out += enc_int(1) + enc_int(2) + enc_float(0.0) + enc_float(0.0) + enc_float(0.0) + enc_float(0.25)
    return out


def test_decode_integers_matches_the_dlib_reader():
    values = [0, 1, -1, 255, 256, -70000, 2**40 + 3, -(2**62), 7]
    data = b"".join(enc_int(v) for v in values)
    r = DlibReader(data)
    assert [r.int() for _ in values] == values
    assert decode_integers(data).tolist() == values


def test_truncated_file_is_one_line_error():
    data = tiny_predictor_bytes()
    with pytest.raises(FacemetricError, match="truncated|unexpected end") as exc:
        parse_shape_predictor(data[:-1], "sp.dat")
    assert "\n" not in str(exc.value) and "sp.dat" in str(exc.value)
    with pytest.raises(FacemetricError, match="version"):
        parse_shape_predictor(enc_int(2) + data[2:], "sp.dat")


def test_grey_is_dlib_average():
    img = np.array([[[255, 254, 0], [1, 1, 2]]], dtype=np.uint8)
    assert grey_intensity(img).tolist() == [[(255 + 254) // 3, 4 // 3]]


@pytest.mark.parametrize("thresh, expected_leaf", [(10.0, 0), (30.0, 1)])
def test_tiny_cascade_by_hand(thresh, expected_leaf):
    sp = parse_shape_predictor(tiny_predictor_bytes(thresh))
    assert sp.num_parts == 2 and len(sp.levels) == 1
    # box (0, 0, 101, 101): dlib rect right = bottom = 100, so x = 100 u, y = 100 v.
    img = np.zeros((101, 101, 3), dtype=np.uint8)
    # f0 samples landmark 0 (25, 50); f1 landmark 1 + (0, 0.25) in the mean frame (75, 75);
    # the shape is the mean shape, so the similarity is the identity.
    img[50, 25] = 60  # grey 60
    img[75, 75] = [40, 40, 41]  # grey 40
    pts = sp.predict(img, np.array([[0, 0, 101, 101]]), exact=True)[0]
    # f0 - f1 = 20: > 10 -> left child (leaf 0: +0.1 in x), else leaf 1 (-0.1 in y)
    if expected_leaf == 0:
        np.testing.assert_allclose(pts, [[35, 50], [85, 50]], atol=1e-4)
    else:
        np.testing.assert_allclose(pts, [[25, 40], [75, 40]], atol=1e-4)
    rounded = sp.predict(img, np.array([[0, 0, 101, 101]]))[0]
    np.testing.assert_array_equal(rounded, np.floor(pts + 0.5))
    # a feature pixel outside the image reads 0: shift the box so that (75, 75) leaves it
    out = sp.predict(img[:60], np.array([[0, 0, 101, 101]]), exact=True)[0]
    np.testing.assert_allclose(out, [[35, 50], [85, 50]], atol=1e-4)  # 60 - 0 > 10 and > 30


# -- the real model -----------------------------------------------------------------------------
def _model_path(name: str = "shape_predictor_5_face_landmarks.dat") -> str:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        pytest.skip("face_recognition_models not installed (pip install 'facemetric[pretrained]')")
    return os.path.join(os.path.dirname(spec.origin), "models", name)


@pytest.fixture(scope="module")
def sp5():
    return load_shape_predictor(_model_path())


#: landmarks dlib 20.0 (dlib-bin) returned for these photos and boxes (Face boxes: x1, y1
#: exclusive); the second box of each photo reaches past the image border.
PINNED = {
    "Aaron_Eckhart/Aaron_Eckhart_0001.jpg": [
        ((67, 80, 176, 188), [(154, 109), (138, 110), (99, 109), (114, 110), (126, 146)]),
        ((-40, 10, 201, 261), [(149, 104), (124, 113), (56, 127), (86, 123), (122, 177)]),
    ],
    "Serena_Williams/Serena_Williams_0003.jpg": [
        ((67, 80, 176, 188), [(156, 114), (138, 116), (93, 115), (110, 116), (125, 145)]),
        ((-40, 10, 201, 261), [(154, 65), (123, 65), (31, 67), (65, 66), (102, 134)]),
    ],
    "Colin_Powell/Colin_Powell_0010.jpg": [
        ((67, 80, 176, 188), [(156, 114), (138, 115), (96, 116), (113, 116), (124, 142)]),
        ((-40, 10, 201, 261), [(140, 101), (108, 112), (33, 143), (62, 130), (103, 177)]),
    ],
    "Gloria_Macapagal_Arroyo/Gloria_Macapagal_Arroyo_0001.jpg": [
        ((76, 86, 166, 177), [(154, 113), (139, 115), (94, 116), (111, 116), (128, 145)]),
        ((-40, 10, 201, 261), [(147, 60), (116, 67), (23, 91), (61, 79), (114, 148)]),
    ],
}


@pytest.fixture
def lfw_root(shared_data):
    root = shared_data / "lfw-deepfunneled"
    if not root.is_dir():
        pytest.skip(f"LFW not found at {root}")
    return root


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_port_reproduces_pinned_dlib_landmarks(sp5, lfw_root):
    """dlib-free: the port gives exactly dlib's landmarks on 4 LFW photos x 2 boxes, batched."""
    assert sp5.num_parts == 5 and len(sp5.levels) == 15
    for rel, cases in PINNED.items():
        img = _rgb(lfw_root / rel)
        boxes = np.array([box for box, _ in cases], dtype=float)
        got = sp5.predict(img, boxes)
        np.testing.assert_array_equal(got, np.array([pts for _, pts in cases], dtype=float), rel)


def test_predict_no_boxes_and_bad_image(sp5):
    assert sp5.predict(np.zeros((8, 8, 3), np.uint8), np.zeros((0, 4))).shape == (0, 5, 2)
    with pytest.raises(FacemetricError, match="uint8"):
        sp5.predict(np.zeros((8, 8, 3), np.float32), np.zeros((1, 4)))


# -- parity with dlib itself --------------------------------------------------------------------
N_PARITY = 40


@functools.cache
def _parity_files(root: str) -> tuple[str, ...]:
    people = sorted(e.name for e in os.scandir(root) if e.is_dir())
    out = []
    for person in people[:: max(1, len(people) // N_PARITY)][:N_PARITY]:
        jpgs = sorted(f for f in os.listdir(os.path.join(root, person)) if f.endswith(".jpg"))
        out.append(os.path.join(root, person, jpgs[-1]))
    return tuple(out)


def test_parity_with_dlib_on_lfw(sp5, lfw_root):
    dlib = pytest.importorskip("dlib", reason="dlib-bin not installed: parity with dlib skipped")
    from facemetric.align import Face, dlib_chip

    det = dlib.get_frontal_face_detector()
    ref = dlib.shape_predictor(_model_path())
    errors, chips_equal, n = [], 0, 0
    for path in _parity_files(str(lfw_root)):
        img = _rgb(path)
        rects = list(det(img, 1)) or [dlib.rectangle(60, 60, 189, 189)]
        # also a box shifted off the face and past the border
        rects.append(dlib.rectangle(rects[0].left() - 30, rects[0].top() + 7,
                                    rects[0].right() - 30, rects[0].bottom() + 7))
        boxes = np.array([(r.left(), r.top(), r.right() + 1, r.bottom() + 1) for r in rects], float)
        ours = sp5.predict(img, boxes)
        for r, pts in zip(rects, ours, strict=True):
            shape = ref(img, r)
            theirs = np.array([(p.x, p.y) for p in shape.parts()], float)
            errors.append(np.abs(theirs - pts).max())
            mine = dlib_chip(img, Face(tuple(boxes[0]), landmarks=pts, layout="dlib5"))
            chips_equal += bool(np.array_equal(mine, dlib.get_face_chip(img, shape, 150, 0.25)))
            n += 1
    errors = np.array(errors)
    assert n >= 2 * N_PARITY
    assert (errors <= 0.01).mean() >= 0.99, errors
    assert errors.max() <= 0.5, errors.max()
    assert chips_equal == n
