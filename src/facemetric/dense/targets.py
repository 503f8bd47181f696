"""Pixel-level targets from label maps: region boundaries, region skeletons with scales, and
FSDS's scale classes.

* :func:`boundaries`: pixel ``(y, x)`` is a boundary pixel when its label differs from the
  pixel below or to the right (one pixel thick: each label change marks the pixel before it).
* :func:`skeletons`: the medial axis of each region class (skin, hair by default), found by
  thinning (:func:`skimage.morphology.skeletonize`, Zhang-Suen; ``medial_axis`` gives nearly the
  same axes but rebuilds a lookup table in Python on every call, 100x slower), with its radius
  ``r``, the Euclidean distance transform at the axis pixel (distance to the nearest pixel
  outside the region, the photo's border counted as outside); the **scale** of a skeleton pixel
  is the diameter ``2 r`` of its maximal disc.
* :func:`quantise_scales` (FSDS, Shen et al., CVPR 2016, eq. 1): with side outputs of receptive
  fields ``RF_1 < ... < RF_M``, a skeleton pixel of scale ``s`` gets the class
  ``z = min{i : RF_i > lambda s}`` (``lambda = 1.2``; 1-based; scales no side can see get
  ``M``, the largest); non-skeleton pixels are 0.
* :func:`side_targets` (the rule): side output ``i`` (``1..M``) is supervised only with the
  scales its receptive field can see, ``G_i = z if z <= i else 0``; side ``i`` has ``i + 1``
  classes. The fused output is supervised with ``z`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: FSDS's lambda: a receptive field must exceed the skeleton scale by this factor
FSDS_LAMBDA = 1.2


def boundaries(labels: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` map of label changes (module docstring) from ``labels [H, W]``."""
    lab = np.asarray(labels)
    out = np.zeros(lab.shape, dtype=bool)
    out[:-1, :] |= lab[:-1, :] != lab[1:, :]
    out[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    return out.astype(np.uint8)


def skeletons(labels: np.ndarray, classes: Sequence[int] = (1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """``(skeleton uint8 [H, W], scale float32 [H, W])``: medial axes of each class in
    ``classes`` and their scale ``2 r`` (0 off the axes)."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize

    lab = np.asarray(labels)
    skel = np.zeros(lab.shape, dtype=bool)
    scale = np.zeros(lab.shape, dtype=np.float32)
    for c in classes:
        mask = lab == c
        if not mask.any():
            continue
        # padded with background: the photo's border counts as outside the region
        axis = skeletonize(mask)
        dist = distance_transform_edt(np.pad(mask, 1, constant_values=False))[1:-1, 1:-1]
        skel |= axis
        scale[axis] = 2.0 * dist[axis]
    return skel.astype(np.uint8), scale


def quantise_scales(skeleton: np.ndarray, scale: np.ndarray, receptive_fields: Sequence[int],
                    lam: float = FSDS_LAMBDA) -> np.ndarray:
    """FSDS scale classes (module docstring): uint8 ``[H, W]`` in ``0..M``."""
    rf = np.asarray(receptive_fields, dtype=np.float64)
    m = len(rf)
    s = np.asarray(scale, dtype=np.float64)
    # first i with RF_i > lam * s  (searchsorted right of lam * s); none -> M
    z = np.searchsorted(rf, lam * s, side="right") + 1
    z = np.minimum(z, m)
    return np.where(np.asarray(skeleton) > 0, z, 0).astype(np.uint8)


def side_targets(classes, num_sides: int) -> list:
    """The rule: ``G_i = z if z <= i else 0`` for sides ``i = 1..num_sides`` (numpy arrays or
    torch tensors, same type out)."""
    return [classes * (classes <= i) for i in range(1, num_sides + 1)]


__all__ = ["FSDS_LAMBDA", "boundaries", "quantise_scales", "side_targets", "skeletons"]
