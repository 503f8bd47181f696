"""dlib's face-chip geometry, reimplemented in NumPy (no dlib needed).

What ``dlib.get_face_chip(img, shape, size, padding)`` does, as described by dlib's
``get_face_chip_details`` / ``chip_details`` / ``extract_image_chips`` (interpolation.h),
``pyramid_down<2>`` (image_pyramid.h) and ``drectangle`` (drectangle.h):

1. template points ``(padding + p) / (1 + 2 padding) * size`` (see
   :func:`facemetric.align.templates.dlib_chip_points`) are fitted to the landmarks by a
   least-squares similarity ``T`` (chip -> image) with scale ``s`` and angle ``a``;
2. the chip is the square of side ``size * s`` centred at ``T(size / 2, size / 2)``, rotated by
   ``a``; as a dlib ``drectangle`` its corners lie ``(size * s - 1) / 2`` from the centre, and
   chip pixels ``0`` and ``size - 1`` map to those corners (so the per-pixel step is
   ``(size * s - 1) / (size - 1)``, not exactly ``s``);
3. if that square is much larger than the chip, the image (cropped to the square's bounding
   box grown by a margin) is first reduced by dlib's 5x5 ``[1 4 6 4 1]`` pyramid, with dlib's
   own coordinate map ``p -> p / 2 - (1.25, 0.75)`` per level;
4. each chip pixel is sampled bilinearly at its mapped position; positions whose 2x2
   neighbourhood is not inside the (cropped) image are black; values are truncated to uint8.

On LFW images this gives chips identical to dlib's (see tests/align).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facemetric.align.transform import similarity_transform


@dataclass(frozen=True)
class ChipDetails:
    """dlib's ``chip_details``: a rotated rectangle ``(left, top, right, bottom)`` in image
    pixels (rotation ``angle`` in radians about its centre) that becomes a rows x cols chip."""

    rect: tuple[float, float, float, float]
    angle: float
    rows: int
    cols: int

    @property
    def scale(self) -> float:
        """Image pixels per chip pixel of the fitted similarity."""
        return (self.rect[2] - self.rect[0] + 1.0) / self.cols


def chip_details(chip_points: np.ndarray, image_points: np.ndarray, size: int) -> ChipDetails:
    """The chip of ``size`` x ``size`` whose ``chip_points`` land on ``image_points``."""
    m = similarity_transform(chip_points, image_points)  # chip -> image
    p = m[:, 0]  # the image of the unit vector (1, 0)
    angle = math.atan2(p[1], p[0])
    scale = math.hypot(p[0], p[1])
    cx, cy = m[:, :2] @ np.array([size / 2.0, size / 2.0]) + m[:, 2]
    half = (size * scale - 1.0) / 2.0  # dlib's centered_drect(p, w, h) spans (w - 1) / 2 each way
    return ChipDetails((cx - half, cy - half, cx + half, cy + half), angle, size, size)


def _rotate(center: tuple[float, float], p: tuple[float, float], angle: float) -> np.ndarray:
    ca, sa = math.cos(angle), math.sin(angle)
    dx, dy = p[0] - center[0], p[1] - center[1]
    return np.array([ca * dx - sa * dy + center[0], sa * dx + ca * dy + center[1]])


def _center(rect) -> tuple[float, float]:
    return ((rect[0] + rect[2]) / 2.0, (rect[1] + rect[3]) / 2.0)


def _area(rect) -> float:
    left, top, right, bottom = rect
    if top > bottom or left > right:
        return 0.0
    return (right - left + 1.0) * (bottom - top + 1.0)


def _rect_down(rect) -> tuple[float, float, float, float]:
    left, top, right, bottom = rect
    return (left / 2.0 - 1.25, top / 2.0 - 0.75, right / 2.0 - 1.25, bottom / 2.0 - 0.75)


def _round(v: float) -> int:
    return int(math.floor(v + 0.5))


def pyramid_down2(image: np.ndarray) -> np.ndarray:
    """One level of dlib's ``pyramid_down<2>`` on a uint8 ``[H, W, C]`` image: a separable
    ``[1 4 6 4 1]`` filter, every other row/column, integer sums divided by 256 (truncated).
    Output ``[(H - 3) // 2, (W - 3) // 2, C]``; empty for images of 8 pixels or fewer a side."""
    h, w = image.shape[:2]
    if h <= 8 or w <= 8:
        return np.zeros((0, 0, image.shape[2]), dtype=np.uint8)
    im = image.astype(np.int32)
    oc = 2 * np.arange((w - 3) // 2)
    tmp = im[:, oc] + 4 * im[:, oc + 1] + 6 * im[:, oc + 2] + 4 * im[:, oc + 3] + im[:, oc + 4]
    r = 2 + 2 * np.arange((h - 3) // 2)
    out = tmp[r - 2] + 4 * tmp[r - 1] + 6 * tmp[r] + 4 * tmp[r + 1] + tmp[r + 2]
    return (out // 256).astype(np.uint8)


def sample_bilinear(
    image: np.ndarray, chip_to_image: np.ndarray, rows: int, cols: int
) -> np.ndarray:
    """dlib's ``transform_image`` with ``interpolate_bilinear``: chip pixel ``(c, r)`` takes the
    bilinear value at ``chip_to_image @ (c, r, 1)``; black where the 2x2 neighbourhood leaves
    the image; values truncated (not rounded) to uint8."""
    channels = image.shape[2]
    out = np.zeros((rows, cols, channels), dtype=np.uint8)
    h, w = image.shape[:2]
    if h < 2 or w < 2:
        return out
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    a = chip_to_image
    x = a[0, 0] * xx + a[0, 1] * yy + a[0, 2]
    y = a[1, 0] * xx + a[1, 1] * yy + a[1, 2]
    left, top = np.floor(x), np.floor(y)
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    if not inside.any():
        return out
    left, top = left[inside].astype(np.intp), top[inside].astype(np.intp)
    fx = (x[inside] - left)[:, None]
    fy = (y[inside] - top)[:, None]
    tl = image[top, left].astype(np.float64)
    tr = image[top, left + 1].astype(np.float64)
    bl = image[top + 1, left].astype(np.float64)
    br = image[top + 1, left + 1].astype(np.float64)
    v = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    out[inside] = np.clip(np.floor(v), 0, 255).astype(np.uint8)
    return out


def _basic_extract(image: np.ndarray, rect, rows: int, cols: int) -> np.ndarray:
    """dlib's copy path (no rotation, no scaling): the rounded rectangle, black outside."""
    left, top = _round(rect[0]), _round(rect[1])
    out = np.zeros((rows, cols, image.shape[2]), dtype=np.uint8)
    h, w = image.shape[:2]
    y0, y1 = max(top, 0), min(top + rows, h)
    x0, x1 = max(left, 0), min(left + cols, w)
    if y0 < y1 and x0 < x1:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
    return out


def extract_chip(image: np.ndarray, details: ChipDetails) -> np.ndarray:
    """dlib's ``extract_image_chip(img, details)`` (bilinear) on a uint8 ``[H, W, C]`` image."""
    rect, angle, rows, cols = details.rect, details.angle, details.rows, details.cols
    if angle == 0 and _area(rect) > 0:
        if rows == rect[3] - rect[1] + 1 and cols == rect[2] - rect[0] + 1:
            return _basic_extract(image, rect, rows, cols)
    n_pixels = rows * cols
    # how deep a pyramid the chip needs, and the margin it needs around the rectangle
    depth, grow = 0, 2.0
    r = _rect_down(rect)
    while _area(r) > n_pixels:
        r = _rect_down(r)
        depth += 1
        grow = grow * 2 + 2
    cen = _center(rect)
    corners = np.array(
        [_rotate(cen, (rect[i], rect[j]), angle) for i, j in ((0, 1), (2, 1), (0, 3), (2, 3))]
    )
    h, w = image.shape[:2]
    bx0 = _round(max(corners[:, 0].min() - grow, 0.0))
    by0 = _round(max(corners[:, 1].min() - grow, 0.0))
    bx1 = _round(min(corners[:, 0].max() + grow, w - 1.0))
    by1 = _round(min(corners[:, 1].max() + grow, h - 1.0))
    if bx0 > bx1 or by0 > by1:  # the chip lies wholly outside the image
        return np.zeros((rows, cols, image.shape[2]), dtype=np.uint8)
    src = image[by0 : by1 + 1, bx0 : bx1 + 1]
    # which pyramid level to sample, and the rectangle in that level's coordinates
    level = -1
    r = (rect[0] - bx0, rect[1] - by0, rect[2] - bx0, rect[3] - by0)
    while _area(_rect_down(r)) > n_pixels:
        level += 1
        r = _rect_down(r)
    for _ in range(level + 1):
        src = pyramid_down2(src)
    cen = _center(r)
    tl = _rotate(cen, (r[0], r[1]), angle)
    tr = _rotate(cen, (r[2], r[1]), angle)
    bl = _rotate(cen, (r[0], r[3]), angle)
    a = np.empty((2, 3))
    a[:, 0] = (tr - tl) / max(cols - 1, 1)
    a[:, 1] = (bl - tl) / max(rows - 1, 1)
    a[:, 2] = tl
    return sample_bilinear(src, a, rows, cols)
