"""The distance functions every package shares (evaluation, inference, galleries, losses).

Kinds of a model card's ``distance`` (:data:`DISTANCES`), smaller = more alike:

* ``squared_l2`` -- ``||a - b||^2`` on the embeddings as given (in ``[0, 4]`` for unit vectors);
* ``euclidean`` -- ``||a - b||`` (dlib compares its raw descriptors this way, threshold 0.6);
* ``cosine`` -- the cosine distance ``1 - cos(a, b)`` in ``[0, 2]``.

Galleries and clustering rank by cosine *similarity* ``cos(a, b)`` of L2-normalised vectors
(larger = more alike); :func:`cosine_similarity_matrix` computes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from facemetric.errors import FacemetricError

DISTANCES = ("squared_l2", "euclidean", "cosine")


def to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` (numpy array, torch tensor or sequence) as a numpy array (floats as float64)."""
    if x is None:
        raise FacemetricError(f"{name}: is required")
    if isinstance(x, Tensor):
        t = x.detach().cpu()
        x = (t.double() if t.is_floating_point() else t).numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise FacemetricError(f"{name}: expected an array, got {type(x).__name__}") from exc


def check_distance_kind(distance: Any, where: str = "distance") -> str:
    """``distance`` if it is one of :data:`DISTANCES`, else a one-line error naming ``where``."""
    if distance not in DISTANCES:
        raise FacemetricError(f"{where}: expected one of {', '.join(DISTANCES)}, got {distance!r}")
    return str(distance)


def pair_scores(emb1: Any, emb2: Any, distance: str = "squared_l2") -> np.ndarray:
    """Distance of each pair ``(emb1[i], emb2[i])`` as float64 ``[num_pairs]``.

    ``squared_l2``: ``||a - b||^2`` on the embeddings as given (in ``[0, 4]`` when the caller
    L2-normalises, as facenet does). ``euclidean``: ``||a - b||`` (dlib compares its raw
    descriptors this way, threshold 0.6). ``cosine``: the cosine *distance* ``1 - cos(a, b)`` in
    ``[0, 2]``. Accepts numpy arrays or torch tensors ``[num_pairs, dim]``.
    """
    check_distance_kind(distance)
    a = to_numpy(emb1, "emb1")
    b = to_numpy(emb2, "emb2")
    for name, x in (("emb1", a), ("emb2", b)):
        if x.ndim != 2 or x.shape[0] == 0:
            raise FacemetricError(f"{name}: expected a 2-D array [num_pairs, dim], got {x.shape}")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise FacemetricError(f"{name}: expected real numbers, got dtype {x.dtype}")
    if a.shape != b.shape:
        raise FacemetricError(f"emb2: shape {b.shape} does not match emb1 shape {a.shape}")
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    for name, x in (("emb1", a), ("emb2", b)):
        if not np.isfinite(x).all():
            raise FacemetricError(f"{name}: contain NaN or inf")
    if distance == "squared_l2":
        return np.sum((a - b) ** 2, axis=1)
    if distance == "euclidean":
        return np.sqrt(np.sum((a - b) ** 2, axis=1))
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    for name, nx in (("emb1", na), ("emb2", nb)):
        if (nx == 0).any():
            row = int(np.flatnonzero(nx == 0)[0])
            raise FacemetricError(f"{name}: row {row} has zero norm; cosine distance is undefined")
    cos = np.sum(a * b, axis=1) / (na * nb)
    return np.clip(1.0 - cos, 0.0, 2.0)


def pairwise_squared_distances(x: Tensor, y: Tensor | None = None) -> Tensor:
    """Squared Euclidean distances ``d_ij = ||x_i - y_j||^2`` (``y = x`` by default).

    Computed as ``||x_i||^2 + ||y_j||^2 - 2 x_i . y_j`` (one matrix product) and clamped at 0,
    because rounding can make the expansion slightly negative. For L2-normalised rows this is
    ``2 - 2 x_i . x_j`` (FaceNet's embeddings live on the unit hypersphere, so
    ``0 <= d_ij <= 4``). When ``y`` is omitted the diagonal is set to exactly 0. The result is
    differentiable (the clamp has zero gradient only where the expansion went negative, i.e.
    for coincident points).
    """
    same = y is None
    y = x if y is None else y
    sq_x = x.pow(2).sum(dim=1)
    sq_y = sq_x if same else y.pow(2).sum(dim=1)
    d = (sq_x[:, None] + sq_y[None, :] - 2.0 * (x @ y.T)).clamp(min=0.0)
    if same:
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        d = d.masked_fill(eye, 0.0)
    return d


def l2_normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` divided by their L2 norm (float32; rows of norm < ``eps`` stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def cosine_similarity_matrix(x: Any, y: Any | None = None) -> np.ndarray:
    """``S_ij = cos(x_i, y_j)`` (``y = x`` by default) as float32 ``[len(x), len(y)]``."""
    a = l2_normalize_rows(to_numpy(x, "x"))
    b = a if y is None else l2_normalize_rows(to_numpy(y, "y"))
    return a @ b.T
