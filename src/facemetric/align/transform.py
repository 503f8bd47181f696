"""Similarity transforms between point sets, and warping an image with a 2x3 affine matrix.

Conventions: points are ``(x, y)``; integer coordinates are pixel *centres* (as in OpenCV and
dlib); a 2x3 matrix ``M`` maps a point ``p`` to ``M[:, :2] @ p + M[:, 2]``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from facemetric.errors import FacemetricError

try:  # optional: faster warps when OpenCV is installed
    import cv2  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None


def _points(name: str, pts) -> np.ndarray:
    arr = np.asarray(pts, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise FacemetricError(f"{name}: expected points of shape [N, 2], got {arr.shape}")
    if not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise FacemetricError(f"{name}: point {row} of {len(arr)} is NaN or infinite")
    return arr


def similarity_transform(src_pts, dst_pts) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, translation) mapping ``src_pts``
    onto ``dst_pts``, as a 2x3 matrix (Umeyama 1991, "Least-squares estimation of transformation
    parameters between two point patterns", IEEE TPAMI 13(4)).

    With ``N`` points ``x_i`` (source) and ``y_i`` (destination), means ``mu_x``, ``mu_y``,
    ``var_x = 1/N sum |x_i - mu_x|^2`` and the 2x2 cross-covariance
    ``C = 1/N sum (y_i - mu_y)(x_i - mu_x)^T`` with SVD ``C = U D V^T``::

        S = diag(1, 1)   if det(U) det(V) >= 0  else  diag(1, -1)   (the reflection fix)
        R = U S V^T,     c = trace(D S) / var_x,     t = mu_y - c R mu_x

    minimises ``sum |y_i - (c R x_i + t)|^2`` over rotations ``R`` (``det R = +1``: never a
    reflection, even when the best orthogonal fit would be one), scales ``c`` and translations
    ``t``. Returns ``[[c R, t]]``. Needs ``N >= 2`` source points that are not all equal.
    """
    src = _points("src_pts", src_pts)
    dst = _points("dst_pts", dst_pts)
    if src.shape != dst.shape:
        raise FacemetricError(f"src_pts {src.shape} and dst_pts {dst.shape}: expected equal shapes")
    if len(src) < 2:
        raise FacemetricError(f"similarity_transform needs at least 2 point pairs, got {len(src)}")
    n = len(src)
    mu_x, mu_y = src.mean(axis=0), dst.mean(axis=0)
    xc, yc = src - mu_x, dst - mu_y
    var_x = float((xc**2).sum()) / n
    if var_x <= 1e-12 * max(1.0, float(np.abs(src).max()) ** 2):
        raise FacemetricError("similarity_transform: the source points all coincide")
    cov = yc.T @ xc / n
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[1] = -1.0
    rot = u @ np.diag(s) @ vt
    scale = float((d * s).sum()) / var_x
    t = mu_y - scale * rot @ mu_x
    return np.hstack([scale * rot, t[:, None]])


def apply_affine(matrix, pts) -> np.ndarray:
    """``pts`` ([N, 2]) mapped by the 2x3 ``matrix``."""
    m = np.asarray(matrix, dtype=np.float64)
    return _points("pts", pts) @ m[:, :2].T + m[:, 2]


def invert_affine(matrix) -> np.ndarray:
    """The inverse of a 2x3 affine matrix (FacemetricError when it is singular)."""
    m = np.asarray(matrix, dtype=np.float64)
    a = m[:, :2]
    if abs(np.linalg.det(a)) < 1e-12:
        raise FacemetricError("affine matrix is singular (zero scale)")
    ai = np.linalg.inv(a)
    return np.hstack([ai, (-ai @ m[:, 2])[:, None]])


def _box_reduce(image: np.ndarray, k: int) -> np.ndarray:
    """Mean of k x k blocks (a partial last row/column of blocks is dropped)."""
    h, w = image.shape[0] // k * k, image.shape[1] // k * k
    c = image.shape[2]
    blocks = image[:h, :w].reshape(h // k, k, w // k, k, c).astype(np.float32)
    return np.clip(np.rint(blocks.mean(axis=(1, 3))), 0, 255).astype(np.uint8)


def warp(
    image: np.ndarray, matrix, size, *, antialias: bool = True, backend: str = "auto"
) -> np.ndarray:
    """Warp ``image`` (uint8 ``[H, W, C]``) by ``matrix`` (2x3, image -> output coordinates)
    into an output of ``size`` (``S`` or ``(width, height)``) with bilinear interpolation;
    outside the image is black.

    ``backend``: ``"cv2"`` (``cv2.warpAffine``), ``"pil"`` (Pillow's ``Image.transform`` with the
    inverse affine) or ``"auto"`` (OpenCV when importable, else Pillow). With ``antialias`` and an
    output at least 2x smaller than the image region it samples, the image is first reduced by
    the integer factor ``k = floor(scale)`` (mean of k x k blocks) so that bilinear sampling does
    not alias.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3:
        raise FacemetricError(
            f"warp: expected a uint8 [H, W, C] image, got {img.dtype} {img.shape}"
        )
    w, h = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if w <= 0 or h <= 0:
        raise FacemetricError(f"warp: size must be positive, got {size!r}")
    m = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    inv = invert_affine(m)
    if antialias:
        k = int(np.sqrt(abs(np.linalg.det(inv[:, :2]))))  # source pixels per output pixel
        if k >= 2 and min(img.shape[0], img.shape[1]) >= 2 * k:
            img = _box_reduce(img, k)
            # reduced pixel q sits at original k*q + (k-1)/2: compose M with that map
            m = np.hstack([m[:, :2] * k, (m[:, 2] + m[:, :2] @ np.full(2, (k - 1) / 2.0))[:, None]])
            inv = invert_affine(m)
    if backend not in ("auto", "cv2", "pil"):
        raise FacemetricError(f"warp backend {backend!r}; expected 'auto', 'cv2' or 'pil'")
    if backend == "cv2" or (backend == "auto" and cv2 is not None):
        if cv2 is None:
            raise FacemetricError("warp backend 'cv2' needs: pip install opencv-python-headless")
        out = cv2.warpAffine(
            np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )  # fmt: skip
        return out.reshape(h, w, img.shape[2])
    return _warp_pil(img, inv, w, h)


def _warp_pil(img: np.ndarray, inv: np.ndarray, w: int, h: int) -> np.ndarray:
    # Pillow samples output pixel (x, y) at (x + 0.5, y + 0.5) in a frame whose pixel centres sit
    # at +0.5: shift the centre-at-integer inverse map into that frame.
    a, t = inv[:, :2], inv[:, 2]
    t_pil = t + 0.5 - a @ np.array([0.5, 0.5])
    data = (a[0, 0], a[0, 1], t_pil[0], a[1, 0], a[1, 1], t_pil[1])

    def one(arr: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(np.ascontiguousarray(arr))
        return np.asarray(
            pil.transform((w, h), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
        )

    if img.shape[2] == 3:
        return one(img)
    return np.stack([one(img[:, :, c]) for c in range(img.shape[2])], axis=2)
