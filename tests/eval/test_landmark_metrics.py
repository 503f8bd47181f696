"""Landmark metrics (facemetric.eval.landmarks) against hand-computed values and plain loops."""

import math

import numpy as np
import pytest

from facemetric.errors import FacemetricError
from facemetric.eval.landmarks import (
    POINT_NAMES,
    dlib5_eye_centres,
    eye_metrics,
    inter_ocular,
    landmark_metrics,
    normalised_errors,
)


def _face(dx=0.0):
    # eyes 10 px apart: inter-ocular distance 10
    return np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [1.0, 9.0], [9.0, 9.0]]) + dx


def test_hand_computed_face():
    truth = _face()[None]
    pred = truth.copy()
    pred[0, 0] += [3.0, 4.0]  # 5 px off: 0.5 of the inter-ocular distance
    pred[0, 4] += [0.0, -2.0]  # 0.2
    m = landmark_metrics(pred, truth)
    assert m["faces"] == 1 and m["points"] == list(POINT_NAMES)
    assert m["nme"] == pytest.approx((0.5 + 0.2) / 5)  # 0.14 > 0.1: a failure
    assert m["failure_rate"] == 1.0
    assert m["per_point"]["left_eye"] == {"nme": pytest.approx(0.5), "failure_rate": 1.0}
    assert m["per_point"]["right_mouth"]["nme"] == pytest.approx(0.2)
    assert m["per_point"]["nose_tip"] == {"nme": 0.0, "failure_rate": 0.0}


def test_failure_is_strictly_above_threshold_per_face_and_per_point():
    truth = np.stack([_face(), _face(1.0)])
    pred = truth.copy()
    pred[0, :, 0] += 1.0  # every point 0.1 off: not a failure (not > 0.1)
    pred[1, 2, 1] += 6.0  # nose 0.6 off: face NME 0.12 (failure); nose point failure
    m = landmark_metrics(pred, truth)
    assert m["per_point"]["nose_tip"]["nme"] == pytest.approx((0.1 + 0.6) / 2)
    assert m["per_point"]["nose_tip"]["failure_rate"] == 0.5
    assert m["per_point"]["left_eye"]["failure_rate"] == 0.0
    assert m["failure_rate"] == 0.5
    assert m["nme"] == pytest.approx((0.1 + 0.12) / 2)


def test_matches_a_plain_loop_reference():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 100, size=(40, 5, 2))
    pred = truth + rng.normal(0, 4, size=truth.shape)
    m = landmark_metrics(pred, truth, threshold=0.1)
    per_face, fails = [], 0
    per_point = [[] for _ in range(5)]
    for n in range(40):
        d = math.dist(truth[n, 0], truth[n, 1])
        errs = [math.dist(pred[n, p], truth[n, p]) / d for p in range(5)]
        for p in range(5):
            per_point[p].append(errs[p])
        per_face.append(sum(errs) / 5)
        fails += sum(errs) / 5 > 0.1
    assert m["nme"] == pytest.approx(sum(per_face) / 40)
    assert m["failure_rate"] == pytest.approx(fails / 40)
    for p, name in enumerate(POINT_NAMES):
        assert m["per_point"][name]["nme"] == pytest.approx(sum(per_point[p]) / 40)
        assert m["per_point"][name]["failure_rate"] == pytest.approx(sum(e > 0.1 for e in per_point[p]) / 40)
    e = normalised_errors(pred, truth, points=[2, 4])
    assert e.shape == (40, 2)
    assert e[7, 1] == pytest.approx(math.dist(pred[7, 4], truth[7, 4]) / math.dist(truth[7, 0], truth[7, 1]))


def test_dlib_eye_centres_and_eye_only_metrics():
    # dlib5: 0/1 outer/inner corner of the image-right eye, 2/3 of the image-left eye, 4 nose base
    dlib5 = np.array([[[14.0, 1.0], [8.0, -1.0], [-4.0, 2.0], [2.0, 0.0], [5.0, 7.0]]])
    eyes = dlib5_eye_centres(dlib5)
    np.testing.assert_allclose(eyes[0], [[-1.0, 1.0], [11.0, 0.0]])
    m = eye_metrics(eyes, _face()[None])
    # left eye off by (-1, 1): sqrt(2)/10; right eye off by (1, 0): 0.1
    assert m["points"] == ["left_eye", "right_eye"]
    assert m["nme"] == pytest.approx((math.sqrt(2) / 10 + 0.1) / 2)
    assert m["per_point"]["right_eye"]["failure_rate"] == 0.0
    assert m["per_point"]["left_eye"]["failure_rate"] == 1.0
    # all five arcface points given: only the eyes are scored
    assert eye_metrics(_face()[None], _face()[None])["nme"] == 0.0


def test_bad_input_is_one_line_error():
    with pytest.raises(FacemetricError, match=r"^pred: expected landmarks of shape \[N, P, 2\]"):
        landmark_metrics(np.zeros((2, 5)), np.zeros((2, 5, 2)))
    with pytest.raises(FacemetricError, match="^truth: face 0 has both eyes at one point$"):
        inter_ocular(np.zeros((1, 5, 2)))
    bad = _face()[None].copy()
    bad[0, 3, 0] = np.nan
    with pytest.raises(FacemetricError, match="^pred: face 0 has NaN"):
        landmark_metrics(bad, _face()[None])
    with pytest.raises(FacemetricError, match="^pred: 2 faces, truth: 1$"):
        landmark_metrics(np.stack([_face(), _face()]), _face()[None])
    with pytest.raises(FacemetricError, match="^landmark metrics: no faces$"):
        landmark_metrics(np.zeros((0, 5, 2)), np.zeros((0, 5, 2)))
