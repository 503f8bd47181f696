"""Boundaries, skeletons with scales, and FSDS's scale classes and side-output rule."""

import numpy as np

from facemetric.dense.targets import boundaries, quantise_scales, side_targets, skeletons


def test_boundaries_mark_each_label_change_once():
    lab = np.zeros((4, 5), np.uint8)
    lab[:, 3:] = 1
    b = boundaries(lab)
    want = np.zeros((4, 5), np.uint8)
    want[:, 2] = 1
    assert np.array_equal(b, want)
    lab[3, :] = 2
    b = boundaries(lab)
    assert b[2].tolist() == [1, 1, 1, 1, 1] and b[3].tolist() == [0, 0, 0, 0, 0]


def test_skeleton_of_a_bar_is_its_axis_with_its_width():
    lab = np.zeros((20, 40), np.uint8)
    lab[5:14, 5:35] = 1  # 9 px tall bar: the axis is row 9, radius ~ 5 (to the outside pixel)
    sk, scale = skeletons(lab, classes=(1,))
    rows = np.nonzero(sk[:, 12:28])[0]
    assert set(rows.tolist()) == {9}
    assert np.allclose(scale[9, 12:28], 10.0)  # 2 r, r = distance to the nearest background pixel
    assert scale[sk == 0].max() == 0


def test_scale_classes_follow_the_receptive_field_rule():
    rf = [14, 32, 68, 140]
    sk = np.ones((1, 6), np.uint8)
    s = np.array([[5.0, 11.0, 12.0, 26.0, 56.0, 500.0]])
    # z = min{i: RF_i > 1.2 s}: 6 < 14 -> 1; 13.2 < 14 -> 1; 14.4 -> 2; 31.2 -> 2; 67.2 -> 3; none -> 4
    assert quantise_scales(sk, s, rf).tolist() == [[1, 1, 2, 2, 3, 4]]
    sk[0, 0] = 0
    assert quantise_scales(sk, s, rf)[0, 0] == 0


def test_side_output_sees_only_the_scales_of_its_receptive_field():
    z = np.array([0, 1, 2, 3, 4])
    g = side_targets(z, 4)
    assert [t.tolist() for t in g] == [[0, 1, 0, 0, 0], [0, 1, 2, 0, 0], [0, 1, 2, 3, 0], [0, 1, 2, 3, 4]]
