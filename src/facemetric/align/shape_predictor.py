"""dlib's shape predictor (``shape_predictor_5_face_landmarks.dat`` and the 68-point file),
read and run in NumPy: no dlib.

The model is the ensemble-of-regression-trees cascade of Kazemi & Sullivan, "One Millisecond
Face Alignment with an Ensemble of Regression Trees" (CVPR 2014), as dlib implements it
(facts from dlib's ``shape_predictor.h``, ``point_transforms.h``, ``vector.h`` and
``pixel.h``):

* **Normalised frame.** Shapes live on the face box's unit square: ``unnormalizing_tform(rect)``
  maps ``(0, 0)``, ``(1, 0)``, ``(1, 1)`` onto the rectangle's top-left, top-right and
  bottom-right corners, i.e. ``x = left + u * (right - left)``, ``y = top + v * (bottom -
  top)`` with dlib's *inclusive* ``right``/``bottom`` (a :class:`~facemetric.align.Face` box
  ``(x0, y0, x1, y1)`` has ``right = x1 - 1``, ``bottom = y1 - 1``).
* **Cascade.** The shape starts at ``initial_shape`` (the mean shape, float32 ``[2P]``). At
  each cascade level ``l``: let ``T`` be the least-squares similarity (Umeyama, computed in
  double and cast to float32) taking the mean shape onto the current shape; feature pixel
  ``i`` sits at ``T_2x2 @ delta_i + shape[anchor_i]`` (float32; ``anchor_i`` the landmark it
  is indexed to, ``delta_i`` its offset), mapped to the image and rounded to the nearest pixel
  (``floor(v + 0.5)``); its value is the pixel's grey intensity (``(R + G + B) // 3``, dlib's
  ``rgb_pixel -> unsigned char``), ``0`` outside the image. Every tree of the level reads these
  same values: node ``n`` goes to child ``2n + 1`` when ``f[idx1] - f[idx2] > thresh`` (float32)
  else ``2n + 2``; the leaf's ``[2P]`` delta is added to the shape, tree after tree, in float32.
* **Output.** The final shape mapped to the image and rounded to integer pixels (dlib returns
  ``point``\\ s); :meth:`ShapePredictor.predict` ``exact=True`` keeps the unrounded positions.

**File format** (``dlib::serialize(shape_predictor)``; every value is a dlib integer, see
:mod:`facemetric.models.dlib_format`; a float is a mantissa/exponent pair of integers): the
version ``1``; ``initial_shape`` as a matrix (``-rows``, ``-cols``, the values); the forests
(a count of levels, per level a count of trees, per tree its splits ``(idx1, idx2, thresh)``
and its leaf matrices); the anchor indices per level; the deltas per level (``x``, ``y``).

Vectorised over faces, trees and feature pixels; the only sequential part is the float32
sum of the leaf deltas (``np.add.accumulate``, so the rounding is dlib's).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facemetric.errors import FacemetricError
from facemetric.models.dlib_format import EXP_INF, EXP_NAN, EXP_NINF


def decode_integers(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Every dlib integer of a buffer that holds nothing else, as int64 (in order).

    The chain of control bytes is walked in Python (each integer's length is in its control
    byte); the magnitudes are then gathered with NumPy."""
    n = len(data)
    starts: list[int] = []
    append = starts.append
    pos = 0
    while pos < n:
        append(pos)
        pos += (data[pos] & 0x0F) + 1
    if pos != n:
        raise FacemetricError(f"{name}: truncated integer at byte {starts[-1]}")
    buf = np.frombuffer(data, dtype=np.uint8)
    at = np.asarray(starts, dtype=np.int64)
    control = buf[at]
    if (control & 0x70).any() or ((control & 0x0F) > 8).any():
        bad = int(at[np.flatnonzero((control & 0x70) | ((control & 0x0F) > 8))[0]])
        raise FacemetricError(f"{name}: bad integer control byte at byte {bad}")
    size = (control & 0x0F).astype(np.int64)
    mag = np.zeros(len(at), dtype=np.uint64)
    for j in range(int(size.max(initial=0))):
        sel = size > j
        mag[sel] |= buf[at[sel] + 1 + j].astype(np.uint64) << np.uint64(8 * j)
    if (mag >= np.uint64(1 << 63)).any():
        raise FacemetricError(f"{name}: integer out of range")
    val = mag.astype(np.int64)
    return np.where(control & 0x80, -val, val)


class _Cursor:
    """Reads structured values off the decoded integer stream."""

    def __init__(self, ints: np.ndarray, name: str):
        self.v, self.i, self.name = ints, 0, name

    def error(self, what: str, problem: str) -> FacemetricError:
        return FacemetricError(f"{self.name}: {what} at value {self.i}: {problem}")

    def take(self, n: int, what: str) -> np.ndarray:
        if n < 0 or self.i + n > len(self.v):
            raise self.error(what, "unexpected end of file")
        out = self.v[self.i : self.i + n]
        self.i += n
        return out

    def int(self, what: str) -> int:
        return int(self.take(1, what)[0])

    def count(self, what: str, limit: int = 10_000_000) -> int:
        n = self.int(what)
        if not 0 <= n <= limit:
            raise self.error(what, f"implausible count {n}")
        return n

    def floats(self, n: int, what: str) -> np.ndarray:
        pairs = self.take(2 * n, what).reshape(n, 2)
        mant, exp = pairs[:, 0], pairs[:, 1]
        special = (exp == EXP_INF) | (exp == EXP_NINF) | (exp == EXP_NAN)
        if special.any():
            raise self.error(what, "non-finite value in a shape predictor")
        if (np.abs(exp) > 2000).any():
            raise self.error(what, "bad float exponent")
        return np.ldexp(mant.astype(np.float64), exp.astype(np.int32)).astype(np.float32)

    def matrix(self, what: str) -> np.ndarray:
        rows, cols = -self.int(f"{what} rows"), -self.int(f"{what} cols")
        if rows < 0 or cols < 0:
            raise self.error(what, f"bad matrix size {rows}x{cols}")
        return self.floats(rows * cols, what).reshape(rows, cols)


@dataclass
class CascadeLevel:
    """One cascade level: ``T`` trees of depth ``D`` (``S = 2**D - 1`` splits each)."""

    anchor: np.ndarray  # [F] int64: the landmark each feature pixel is indexed to
    deltas: np.ndarray  # [F, 2] float32: its offset from that landmark in the mean-shape frame
    idx1: np.ndarray  # [T, S] int64
    idx2: np.ndarray  # [T, S] int64
    thresh: np.ndarray  # [T, S] float32
    leaves: np.ndarray  # [T, S + 1, 2P] float32


class ShapePredictor:
    """A dlib shape predictor (see the module docstring); ``predict(image, boxes)``."""

    def __init__(self, initial_shape: np.ndarray, levels: list[CascadeLevel], name: str = ""):
        self.initial_shape = np.asarray(initial_shape, dtype=np.float32).reshape(-1)
        self.levels = levels
        self.name = name
        self.num_parts = self.initial_shape.size // 2
        ref = self.initial_shape.reshape(-1, 2).astype(np.float64)
        self._ref_centred = ref - ref.mean(axis=0)
        self._ref_var = float((self._ref_centred**2).sum(axis=1).mean())

    def __repr__(self) -> str:
        trees = sum(len(lv.idx1) for lv in self.levels)
        return (f"ShapePredictor({self.name!r}, parts={self.num_parts}, "
                f"levels={len(self.levels)}, trees={trees})")

    # ------------------------------------------------------------------ geometry
    def _tform(self, shapes: np.ndarray) -> np.ndarray:
        """``[K, 2, 2]`` float32: the linear part of the similarity mean shape -> ``shapes``
        (Umeyama's least squares in double; for 2-D the rotation is
        ``atan2(C10 - C01, C00 + C11)`` and ``c R = [[a, -b], [b, a]] / var_from`` with
        ``a = C00 + C11``, ``b = C10 - C01``, ``C`` the to x from covariance)."""
        to = shapes.reshape(len(shapes), -1, 2).astype(np.float64)
        to_c = to - to.mean(axis=1, keepdims=True)
        fr = self._ref_centred
        n = fr.shape[0]
        c00 = (to_c[:, :, 0] * fr[:, 0]).sum(axis=1) / n
        c11 = (to_c[:, :, 1] * fr[:, 1]).sum(axis=1) / n
        c01 = (to_c[:, :, 0] * fr[:, 1]).sum(axis=1) / n
        c10 = (to_c[:, :, 1] * fr[:, 0]).sum(axis=1) / n
        var = self._ref_var if self._ref_var != 0 else 1.0
        a, b = (c00 + c11) / var, (c10 - c01) / var
        m = np.empty((len(shapes), 2, 2))
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a, -b, b, a
        return m.astype(np.float32)

    @staticmethod
    def _rects(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """dlib's ``left, top`` and the spans ``right - left``, ``bottom - top`` (float64)."""
        left, top = boxes[:, 0], boxes[:, 1]
        return left, top, (boxes[:, 2] - 1.0) - left, (boxes[:, 3] - 1.0) - top

    # ------------------------------------------------------------------ inference
    def predict(self, image: np.ndarray, boxes: np.ndarray, exact: bool = False) -> np.ndarray:
        """Landmarks of the faces ``boxes`` (``[K, 4]`` ``(x0, y0, x1, y1)``, ``x1``/``y1``
        exclusive) in the RGB uint8 (or grey uint8 ``[H, W]``) ``image``: float64
        ``[K, P, 2]``, rounded to whole pixels as dlib returns them (``exact``: unrounded)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        k = len(boxes)
        if k == 0:
            return np.zeros((0, self.num_parts, 2))
        img = _check_image(image)
        h, w = img.shape[:2]
        flat = img.reshape(h * w, -1)  # grey values are computed only where sampled
        left, top, sx, sy = self._rects(boxes)
        left, top, sx, sy = left[:, None], top[:, None], sx[:, None], sy[:, None]
        shapes = np.tile(self.initial_shape, (k, 1))
        rows = np.arange(k)[:, None]
        for lv in self.levels:
            m = self._tform(shapes)  # [K, 2, 2] float32
            dx, dy = lv.deltas[:, 0], lv.deltas[:, 1]
            px = m[:, 0, 0, None] * dx + m[:, 0, 1, None] * dy  # float32, as dlib
            py = m[:, 1, 0, None] * dx + m[:, 1, 1, None] * dy
            px = px + shapes[:, 2 * lv.anchor]
            py = py + shapes[:, 2 * lv.anchor + 1]
            ix = np.floor(sx * px.astype(np.float64) + left + 0.5)
            iy = np.floor(sy * py.astype(np.float64) + top + 0.5)
            inside = (ix >= 0) & (iy >= 0) & (ix < w) & (iy < h)
            index = np.where(inside, iy * w + ix, 0).astype(np.intp)
            pix = flat[index].astype(np.uint16)
            grey = pix[..., 0] if pix.shape[-1] == 1 else pix.sum(axis=-1) // 3
            feats = np.where(inside, grey, 0).astype(np.float32)  # [K, F]
            n_trees, n_splits = lv.idx1.shape
            trees = np.arange(n_trees)[None, :]
            node = np.zeros((k, n_trees), dtype=np.intp)
            while True:
                active = node < n_splits
                if not active.any():
                    break
                nd = np.minimum(node, n_splits - 1)
                f1 = feats[rows, lv.idx1[trees, nd]]
                f2 = feats[rows, lv.idx2[trees, nd]]
                go_left = (f1 - f2) > lv.thresh[trees, nd]
                node = np.where(active, np.where(go_left, 2 * node + 1, 2 * node + 2), node)
            leaf = lv.leaves[trees, node - n_splits]  # [K, T, 2P]
            stack = np.concatenate([shapes[:, None, :], leaf], axis=1)
            shapes = np.add.accumulate(stack, axis=1, dtype=np.float32)[:, -1]
        pts = shapes.reshape(k, -1, 2).astype(np.float64)
        x = sx * pts[:, :, 0] + left
        y = sy * pts[:, :, 1] + top
        out = np.stack([x, y], axis=-1)
        return out if exact else np.floor(out + 0.5)


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise FacemetricError(
            f"shape predictor image: expected uint8 [H, W, 3] or [H, W], got "
            f"{img.dtype} {list(img.shape)}"
        )
    return img


def grey_intensity(image: np.ndarray) -> np.ndarray:
    """dlib's grey value of an RGB uint8 image: ``(R + G + B) // 3`` (a grey image as is)."""
    img = _check_image(image)
    if img.ndim == 2:
        return img
    return (img.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)


def parse_shape_predictor(data: bytes, name: str = "<bytes>") -> ShapePredictor:
    """Parse a serialised ``dlib::shape_predictor`` (see the module docstring)."""
    c = _Cursor(decode_integers(data, name), name)
    version = c.int("version")
    if version != 1:
        raise c.error("version", f"unsupported shape_predictor version {version} (expected 1)")
    initial = c.matrix("initial_shape").reshape(-1)
    if initial.size < 2 or initial.size % 2:
        raise c.error("initial_shape", f"expected 2 * parts values, got {initial.size}")
    dim = initial.size
    forests = []
    for lv in range(c.count("forests")):
        trees = []
        for t in range(c.count(f"level {lv} trees")):
            what = f"level {lv} tree {t}"
            n_splits = c.count(f"{what} splits")
            raw = c.take(4 * n_splits, f"{what} splits").reshape(n_splits, 4)  # idx1 idx2 m e
            splits = np.empty((n_splits, 3), dtype=np.float64)
            splits[:, :2] = raw[:, :2]
            splits[:, 2] = np.ldexp(raw[:, 2].astype(np.float64), raw[:, 3].astype(np.int32))
            n_leaves = c.count(f"{what} leaves")
            if n_leaves != n_splits + 1:
                raise c.error(what, f"{n_leaves} leaves for {n_splits} splits")
            # each leaf: -rows, -cols, then rows * cols floats (mantissa, exponent)
            raw = c.take(n_leaves * (2 + 2 * dim), f"{what} leaves").reshape(n_leaves, -1)
            if (raw[:, 0] != -dim).any() or (raw[:, 1] != -1).any():
                raise c.error(what, f"leaf is not a {dim}x1 matrix")
            pairs = raw[:, 2:].reshape(n_leaves, dim, 2)
            if (np.abs(pairs[:, :, 1]) > 2000).any():
                raise c.error(what, "bad leaf value")
            leaves = np.ldexp(pairs[:, :, 0].astype(np.float64), pairs[:, :, 1].astype(np.int32))
            leaves = leaves.astype(np.float32)
            trees.append((splits, leaves))
        forests.append(trees)
    n_levels = len(forests)
    if c.count("anchor levels") != n_levels:
        raise c.error("anchor_idx", "level count differs from the forests'")
    anchors = [c.take(c.count(f"level {lv} anchors"), f"level {lv} anchors").copy()
               for lv in range(n_levels)]
    if c.count("delta levels") != n_levels:
        raise c.error("deltas", "level count differs from the forests'")
    deltas = [c.floats(2 * c.count(f"level {lv} deltas"), f"level {lv} deltas").reshape(-1, 2)
              for lv in range(n_levels)]
    if c.i != len(c.v):
        raise c.error("end of file", f"{len(c.v) - c.i} unexpected trailing values")
    levels = []
    for lv, trees in enumerate(forests):
        if not trees:
            raise c.error(f"level {lv}", "no trees")
        sizes = {len(s) for s, _ in trees}
        if len(sizes) != 1:
            raise c.error(f"level {lv}", "trees of different sizes")
        n_feats = len(anchors[lv])
        if len(deltas[lv]) != n_feats:
            raise c.error(f"level {lv}", "anchors and deltas differ in count")
        if ((anchors[lv] < 0) | (anchors[lv] >= dim // 2)).any():
            raise c.error(f"level {lv}", "anchor index out of range")
        splits = np.stack([s for s, _ in trees])
        idx1, idx2 = splits[:, :, 0].astype(np.int64), splits[:, :, 1].astype(np.int64)
        if ((idx1 < 0) | (idx1 >= n_feats) | (idx2 < 0) | (idx2 >= n_feats)).any():
            raise c.error(f"level {lv}", "split feature index out of range")
        levels.append(CascadeLevel(
            anchors[lv].astype(np.int64), deltas[lv].astype(np.float32), idx1, idx2,
            splits[:, :, 2].astype(np.float32), np.stack([lf for _, lf in trees]),
        ))
    return ShapePredictor(initial, levels, name)


@functools.lru_cache(maxsize=4)
def _load(path: str, size: int, mtime_ns: int) -> ShapePredictor:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FacemetricError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    return parse_shape_predictor(data, path)


def load_shape_predictor(path: str | os.PathLike) -> ShapePredictor:
    """The shape predictor in the dlib file ``path`` (parsed once per process and file
    version)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise FacemetricError(f"{p}: shape predictor file not found") from None
    return _load(str(p), st.st_size, st.st_mtime_ns)


__all__ = [
    "CascadeLevel",
    "ShapePredictor",
    "decode_integers",
    "grey_intensity",
    "load_shape_predictor",
    "parse_shape_predictor",
]
