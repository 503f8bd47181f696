"""similarity_transform (Umeyama) and warp: exact recovery, least squares, no reflections."""

import math

import numpy as np
import pytest

from facemetric.align import apply_affine, invert_affine, similarity_transform, warp
from facemetric.align.dlib_geometry import sample_bilinear
from facemetric.errors import FacemetricError


def _similarity(scale, angle, tx, ty):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


@pytest.mark.parametrize("n", [2, 3, 5, 68])
def test_recovers_a_known_similarity_exactly(n):
    rng = np.random.default_rng(n)
    src = rng.uniform(-50, 200, size=(n, 2))
    true = _similarity(1.7, math.radians(-33.0), 12.5, -40.25)
    got = similarity_transform(src, apply_affine(true, src))
    np.testing.assert_allclose(got, true, atol=1e-9)


def test_matches_brute_force_least_squares_under_noise():
    # The similarity is linear in (a, b, tx, ty): x' = a x - b y + tx, y' = b x + a y + ty,
    # so numpy's lstsq on that 4-parameter model is the reference least-squares answer.
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(3, 30))
        src = rng.uniform(0, 250, size=(n, 2))
        true = _similarity(
            rng.uniform(0.3, 3), rng.uniform(-math.pi, math.pi), *rng.normal(0, 50, 2)
        )
        dst = apply_affine(true, src) + rng.normal(0, 3.0, size=(n, 2))
        rows = []
        for (x, y), (u, v) in zip(src, dst, strict=True):
            rows.append(([x, -y, 1, 0], u))
            rows.append(([y, x, 0, 1], v))
        a_mat = np.array([r[0] for r in rows])
        b_vec = np.array([r[1] for r in rows])
        (a, b, tx, ty), *_ = np.linalg.lstsq(a_mat, b_vec, rcond=None)
        ref = np.array([[a, -b, tx], [b, a, ty]])
        np.testing.assert_allclose(
            similarity_transform(src, dst), ref, atol=1e-8, err_msg=f"{trial}"
        )


def test_never_returns_a_reflection():
    rng = np.random.default_rng(1)
    for _ in range(50):
        src = rng.uniform(0, 100, size=(int(rng.integers(2, 10)), 2))
        dst = src * np.array([-1.0, 1.0]) + rng.normal(0, 0.5, size=src.shape)  # mirrored
        m = similarity_transform(src, dst)
        a = m[:, :2]
        assert np.linalg.det(a) > 0
        # a similarity: a = s * rotation
        np.testing.assert_allclose(a[0, 0], a[1, 1], atol=1e-9)
        np.testing.assert_allclose(a[0, 1], -a[1, 0], atol=1e-9)


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(FacemetricError, match="coincide"):
        similarity_transform([[1, 1], [1, 1], [1, 1]], [[0, 0], [1, 0], [0, 1]])
    with pytest.raises(FacemetricError, match="at least 2"):
        similarity_transform([[1, 1]], [[0, 0]])
    with pytest.raises(FacemetricError, match="equal shapes"):
        similarity_transform([[1, 1], [2, 2]], [[0, 0], [1, 0], [0, 1]])
    with pytest.raises(FacemetricError, match="NaN"):
        similarity_transform([[1, np.nan], [2, 2]], [[0, 0], [1, 0]])


def test_invert_affine_roundtrip():
    m = _similarity(0.8, 0.4, 3, -7)
    pts = np.array([[0.0, 0.0], [10.0, 5.0], [-3.0, 8.0]])
    np.testing.assert_allclose(
        apply_affine(invert_affine(m), apply_affine(m, pts)), pts, atol=1e-12
    )


def _image(h=60, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("backend", ["pil", "cv2"])
def test_warp_integer_shift_is_exact(backend):
    if backend == "cv2":
        pytest.importorskip("cv2", reason="OpenCV not installed")
    img = _image()
    m = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -3.0]])  # out(x, y) = img(x - 2, y + 3)
    out = warp(img, m, (80, 60), backend=backend)
    np.testing.assert_array_equal(out[:-3, 2:], img[3:, :-2])
    assert not out[:, :2].any()  # outside the image: black


@pytest.mark.parametrize("backend", ["pil", "cv2"])
def test_warp_is_bilinear_with_pixel_centres_at_integers(backend):
    if backend == "cv2":
        pytest.importorskip("cv2", reason="OpenCV not installed")
    img = _image()
    m = np.array([[0.9, 0.2, 3.3], [-0.2, 0.9, 5.1]])
    out = warp(img, m, (50, 40), backend=backend, antialias=False).astype(int)
    ref = sample_bilinear(img, invert_affine(m), 40, 50).astype(int)  # truncated bilinear
    inside = ref.sum(axis=2) > 0
    diff = np.abs(out - ref)[inside]
    if backend == "pil":
        assert diff.max() <= 1  # rounding conventions differ by at most one grey level
    else:
        # cv2.warpAffine quantises sample positions to 1/32 pixel (INTER_BITS = 5): on this
        # image's steepest steps that moves a value by a few grey levels, never by a pixel
        assert diff.max() <= 8 and diff.mean() < 1.0


def test_warp_antialias_keeps_geometry():
    # a bright square at a known place, shrunk 5x: its centroid must land at M(centre)
    img = np.zeros((500, 500, 3), dtype=np.uint8)
    img[200:260, 300:360] = 255
    m = np.array([[0.2, 0.0, 1.0], [0.0, 0.2, 2.0]])
    out = warp(img, m, 100)[:, :, 0].astype(float)
    ys, xs = np.nonzero(out)
    w = out[ys, xs]
    cx, cy = (xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()
    ex, ey = apply_affine(m, [[329.5, 229.5]])[0]
    assert abs(cx - ex) < 0.3 and abs(cy - ey) < 0.3
    assert out.max() == 255  # a block average, not blurred below full intensity


def test_warp_rejects_bad_input():
    with pytest.raises(FacemetricError, match="uint8"):
        warp(np.zeros((4, 4, 3), dtype=np.float32), np.eye(2, 3), 4)
    with pytest.raises(FacemetricError, match="singular"):
        warp(_image(), np.zeros((2, 3)), 4)
