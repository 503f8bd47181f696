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
            row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise FacemetricError(f"{name}: row {row} contains NaN or inf")
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


# ----------------------------------------------------------------------------------------
# Distance objects for metric learning (pytorch-metric-learning style): a loss or a miner is
# given one of these and asks it for a pairwise matrix. ``is_inverted`` is True for
# similarities (larger = more alike); ``margin(x, y)`` is then ``y - x`` instead of ``x - y``,
# so ``relu(distance.margin(d_ap, d_an) + m)`` is the triplet hinge for either kind.
def _safe_sqrt(squared: Tensor) -> Tensor:
    """``sqrt`` with a zero (sub)gradient at 0 instead of inf (coincident points)."""
    positive = squared > 0
    return torch.where(positive, squared.clamp(min=torch.finfo(squared.dtype).tiny).sqrt(), 0.0)


class BaseDistance:
    """A pairwise distance or similarity between embeddings.

    ``pairwise(x, y=None) -> [len(x), len(y)]`` (``y = x`` by default; the diagonal of
    ``pairwise(x)`` is exact: 0 for distances, 1 for the cosine similarity of non-zero rows),
    ``pair(x, y) -> [n]`` for matched rows. With ``normalize_embeddings`` the rows are first
    L2-normalised (``F.normalize``, eps 1e-12). Both are differentiable.
    """

    #: True for similarities (larger = more alike)
    is_inverted: bool = False

    def __init__(self, normalize_embeddings: bool = True) -> None:
        self.normalize_embeddings = bool(normalize_embeddings)

    def normalize(self, x: Tensor) -> Tensor:
        return torch.nn.functional.normalize(x, dim=1) if self.normalize_embeddings else x

    def pairwise(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        x = self.normalize(x)
        return self.compute_matrix(x, None if y is None else self.normalize(y))

    __call__ = pairwise

    def pair(self, x: Tensor, y: Tensor) -> Tensor:
        return self.compute_pairs(self.normalize(x), self.normalize(y))

    def compute_matrix(self, x: Tensor, y: Tensor | None) -> Tensor:
        raise NotImplementedError

    def compute_pairs(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def margin(self, x: Tensor, y: Tensor) -> Tensor:
        """``x - y`` for distances, ``y - x`` for similarities: positive when ``x`` is less
        alike than ``y``. The triplet hinge is ``relu(margin(d_ap, d_an) + m)``."""
        return y - x if self.is_inverted else x - y

    def as_distance(self, matrix: Tensor) -> Tensor:
        """``matrix`` turned into "smaller = closer" with the same margins (``-s`` for a
        similarity): the triplet selection functions work on distances."""
        return -matrix if self.is_inverted else matrix

    def _key(self) -> tuple:
        return (type(self), tuple(sorted(vars(self).items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BaseDistance) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()))
        return f"{type(self).__name__}({opts})"


class LpDistance(BaseDistance):
    """``||x - y||_p ** power`` (``p = 2, power = 2``: :func:`pairwise_squared_distances`;
    ``p = 2, power = 1``: its square root with a zero gradient at 0; other ``p``:
    ``torch.cdist``)."""

    def __init__(self, normalize_embeddings: bool = True, p: float = 2, power: float = 1) -> None:
        super().__init__(normalize_embeddings)
        try:
            self.p, self.power = float(p), float(power)
        except (TypeError, ValueError):
            raise FacemetricError(f"p, power: expected numbers, got {p!r}, {power!r}") from None
        if not (self.p >= 1 and self.power > 0):
            raise FacemetricError(f"p, power: expected p >= 1 and power > 0, got {p}, {power}")

    def compute_matrix(self, x: Tensor, y: Tensor | None) -> Tensor:
        if self.p == 2:
            squared = pairwise_squared_distances(x, y)
            return squared if self.power == 2 else self._from_squared(squared)
        d = torch.cdist(x, x if y is None else y, p=self.p)
        return d if self.power == 1 else d.pow(self.power)

    def compute_pairs(self, x: Tensor, y: Tensor) -> Tensor:
        if self.p == 2:
            squared = (x - y).pow(2).sum(dim=1)
            return squared if self.power == 2 else self._from_squared(squared)
        d = (x - y).abs().pow(self.p).sum(dim=1).pow(1.0 / self.p)
        return d if self.power == 1 else d.pow(self.power)

    def _from_squared(self, squared: Tensor) -> Tensor:
        d = _safe_sqrt(squared)
        return d if self.power == 1 else d.pow(self.power)


class EuclideanDistance(LpDistance):
    """``||x - y||`` (:class:`LpDistance` with ``p = 2, power = 1``)."""

    def __init__(self, normalize_embeddings: bool = True) -> None:
        super().__init__(normalize_embeddings, p=2, power=1)


class SquaredL2Distance(LpDistance):
    """``||x - y||^2`` (:class:`LpDistance` with ``p = 2, power = 2``; FaceNet's distance, in
    ``[0, 4]`` on the unit sphere)."""

    def __init__(self, normalize_embeddings: bool = True) -> None:
        super().__init__(normalize_embeddings, p=2, power=2)


class CosineSimilarity(BaseDistance):
    """``cos(x, y) = x.y / (||x|| ||y||)``, a similarity (``is_inverted``); the rows are always
    L2-normalised (``normalize_embeddings`` is fixed to True)."""

    is_inverted = True

    def __init__(self, normalize_embeddings: bool = True) -> None:
        if not normalize_embeddings:
            raise FacemetricError("normalize_embeddings: CosineSimilarity always normalises")
        super().__init__(True)

    def compute_matrix(self, x: Tensor, y: Tensor | None) -> Tensor:
        s = x @ (x if y is None else y).T
        if y is None:
            eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
            s = s.masked_fill(eye & (x.norm(dim=1) > 0)[:, None], 1.0)
        return s

    def compute_pairs(self, x: Tensor, y: Tensor) -> Tensor:
        return (x * y).sum(dim=1)


#: distance objects by name (the names of :data:`DISTANCES`; ``cosine`` is the similarity)
DISTANCE_OBJECTS: dict[str, type[BaseDistance]] = {
    "squared_l2": SquaredL2Distance,
    "euclidean": EuclideanDistance,
    "cosine": CosineSimilarity,
}


def build_distance(spec: Any, where: str = "distance", **options: Any) -> BaseDistance:
    """A distance object from an object (returned as is), a name of :data:`DISTANCE_OBJECTS`
    (``-`` and ``_`` alike), or a mapping ``{name: ..., <options>}``."""
    if isinstance(spec, BaseDistance):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        options = {**spec, **options}
        spec = options.pop("name", None)
    key = str(spec).lower().replace("-", "_") if isinstance(spec, str) else spec
    if key not in DISTANCE_OBJECTS:
        names = ", ".join(DISTANCE_OBJECTS)
        raise FacemetricError(f"{where}: expected one of {names}, got {spec!r}")
    try:
        return DISTANCE_OBJECTS[key](**options)
    except TypeError as exc:
        raise FacemetricError(f"{where}: {exc}") from None
