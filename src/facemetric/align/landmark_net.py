"""A learned 5-point landmark model (``"learned5"``): a small CNN that regresses the five
ArcFace points (layout ``"arcface5"``: image-left eye centre, image-right eye centre, nose tip,
image-left and image-right mouth corner) from a square crop around a detector's face box.

Usage (a code block, not a doctest: it needs a trained run and a photo)::

    from facemetric.align.landmarks import build_landmarker
    lm = build_landmarker("learned5", path="runs/landmarks-5point")   # run dir or artifact
    pts = lm.predict(image, np.array([[40.0, 50.0, 100.0, 110.0]]))  # [1, 5, 2] (x, y)

The crop (:func:`crop_matrix`, used by training and inference alike)
-------------------------------------------------------------------
A box ``(x0, y0, x1, y1)`` (``x1``/``y1`` exclusive, :class:`~facemetric.align.Face`'s
convention) covers the pixel centres ``x0 .. x1 - 1``; its centre is
``c = ((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2)`` and its side ``s = max(x1 - x0, y1 - y0)``.
The crop is the square of side ``S = s * (1 + 2 * margin)`` centred on ``c``, resampled to
``size x size`` pixels; an image point ``p`` lands at crop pixel::

    q = R(angle) (p - c) * size / S + (size - 1) / 2

(integer coordinates at pixel centres on both sides; ``R`` rotates by ``angle`` radians,
0 at inference). Training jitters the box before this map (``shift`` in units of ``s``,
``scale`` multiplying ``S``, a small ``angle``). The pixels are taken with
:func:`facemetric.align.transform.warp` (bilinear, antialiased when the crop shrinks the face
by 2x or more), outside the photo is black.

The network (:class:`LandmarkNet`)
----------------------------------
Input: the crop as RGB float ``(pixel / 255 - 0.5) / 0.5``, ``[B, 3, size, size]``.
Five stages of two 3x3 conv-BN-ReLU layers (widths ``w, 2w, 4w, 8w, 8w``; the first conv of
stages 1-5 has stride 2), so a 64-pixel crop ends as ``8w x 2 x 2``, then a linear layer to
10 numbers: the points in *crop units* ``t = (q - (size - 1) / 2) / size`` (``[-0.5, 0.5]``
inside the crop), in the ``"arcface5"`` order. The output bias starts at the training set's
mean shape.

The artifact
------------
A folder ``landmark_model/`` (inside the run directory) with ``landmark_model.json`` (the card:
format, network options, crop ``size`` and ``margin``, input normalisation, layout, what boxes
the model was trained on, training data and test metrics) and ``weights.pt`` (a state dict,
loaded with ``weights_only=True``). :func:`load_landmark_model` takes either the artifact folder
or a run directory that holds one. No weights are downloaded or shipped: the training labels
(lfw-5590, CUHK) carry no licence beyond research use, so users train their own
(``facemetric train --config configs/landmarks-5point.yaml``).
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facemetric.align.landmarks import LANDMARKERS, Landmarker, check_boxes, check_image
from facemetric.align.transform import apply_affine, invert_affine, warp
from facemetric.errors import FacemetricError
from facemetric.io import atomic_write_bytes

#: the artifact's folder name inside a run directory, and its two files
ARTIFACT_DIR = "landmark_model"
CARD_FILE = "landmark_model.json"
WEIGHTS_FILE = "weights.pt"
FORMAT = "facemetric-landmarks/1"

#: ``"arcface5"`` points swapped by a horizontal flip (image-left <-> image-right)
FLIP_ORDER = (1, 0, 2, 4, 3)

DEFAULT_SIZE = 64
DEFAULT_MARGIN = 0.25


# -- crop geometry -------------------------------------------------------------------------


def crop_matrix(
    box: Any,
    size: int = DEFAULT_SIZE,
    margin: float = DEFAULT_MARGIN,
    *,
    shift: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
    angle: float = 0.0,
) -> np.ndarray:
    """The 2x3 matrix mapping image points to crop pixels for ``box`` (see the module
    docstring): ``q = R(angle) (p - c') * size / S' + (size - 1) / 2`` with the box centre
    ``c' = c + shift * s`` and side ``S' = scale * s * (1 + 2 * margin)``."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    side = max(x1 - x0, y1 - y0)
    if not (x1 > x0 and y1 > y0 and math.isfinite(side)):
        raise FacemetricError(f"landmark crop: box {[x0, y0, x1, y1]} is empty")
    cx = (x0 + x1 - 1.0) / 2.0 + shift[0] * side
    cy = (y0 + y1 - 1.0) / 2.0 + shift[1] * side
    k = size / (scale * side * (1.0 + 2.0 * margin))
    cos, sin = math.cos(angle) * k, math.sin(angle) * k
    half = (size - 1) / 2.0
    a = np.array([[cos, -sin], [sin, cos]])
    return np.hstack([a, (np.array([half, half]) - a @ np.array([cx, cy]))[:, None]])


def crop_face(
    image: np.ndarray, box: Any, size: int = DEFAULT_SIZE, margin: float = DEFAULT_MARGIN, **jitter: Any
) -> tuple[np.ndarray, np.ndarray]:
    """``(crop, matrix)``: the ``size x size`` RGB uint8 crop of ``box`` and the image -> crop
    matrix of :func:`crop_matrix` (``jitter``: its ``shift``/``scale``/``angle``)."""
    m = crop_matrix(box, size, margin, **jitter)
    return warp(image, m, size), m


def to_crop_units(points: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Image points ``[P, 2]`` -> crop units ``(q - (size - 1) / 2) / size``."""
    return (apply_affine(matrix, points) - (size - 1) / 2.0) / size


def from_crop_units(units: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Crop units ``[P, 2]`` -> image points (the inverse of :func:`to_crop_units`)."""
    return apply_affine(invert_affine(matrix), np.asarray(units, dtype=np.float64) * size + (size - 1) / 2.0)


def flip_units(units: np.ndarray) -> np.ndarray:
    """Points in crop units of a horizontally flipped crop: ``x -> -x``, left/right swapped
    (``q_x -> size - 1 - q_x`` is ``t_x -> -t_x`` in crop units)."""
    out = np.array(units, dtype=np.float64)[..., FLIP_ORDER, :]
    out[..., 0] = -out[..., 0]
    return out


def normalise_crops(crops: np.ndarray) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> float ``[B, 3, H, W]`` as ``(pixel / 255 - 0.5) / 0.5``."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    return x.div_(127.5).sub_(1.0)


# -- network -----------------------------------------------------------------------------------


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class LandmarkNet(nn.Module):
    """The regression CNN of the module docstring: ``[B, 3, size, size]`` -> ``[B, 5, 2]`` crop
    units. ``width``: channels of the first stage; ``size``: the crop side (a multiple of 32);
    ``dropout`` before the output layer."""

    def __init__(self, width: int = 16, size: int = DEFAULT_SIZE, points: int = 5, dropout: float = 0.1):
        super().__init__()
        if size % 32 or size < 32:
            raise FacemetricError(f"landmark net size: expected a multiple of 32, got {size}")
        self.width, self.size, self.points = int(width), int(size), int(points)
        widths = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers += _conv(cin, w, 2) + _conv(w, w, 1)
            cin = w
        self.features = nn.Sequential(*layers)
        side = size // 32
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin * side * side, 2 * points))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def set_mean_shape(self, mean_units: np.ndarray) -> None:
        """Start the output at ``mean_units`` ``[P, 2]`` (crop units) for every input."""
        with torch.no_grad():
            self.head[-1].bias.copy_(torch.as_tensor(np.asarray(mean_units).reshape(-1), dtype=torch.float32))

    def options(self) -> dict[str, Any]:
        return {"width": self.width, "size": self.size, "points": self.points,
                "dropout": float(self.head[1].p)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).view(-1, self.points, 2)


# -- artifact -----------------------------------------------------------------------------------


def save_landmark_model(
    directory: str | os.PathLike, model: LandmarkNet, *, margin: float, card: dict[str, Any] | None = None
) -> Path:
    """Write the artifact folder (weights first, then the card; each atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    atomic_write_bytes(directory / WEIGHTS_FILE, buf.getvalue())
    full = {
        "format": FORMAT,
        "layout": "arcface5",
        "network": model.options(),
        "crop": {"size": model.size, "margin": float(margin)},
        "input": {"color": "RGB", "scale": "(pixel / 255 - 0.5) / 0.5"},
        **(card or {}),
    }
    atomic_write_bytes(directory / CARD_FILE, (json.dumps(full, indent=2) + "\n").encode())
    return directory


def _artifact_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    if (p / CARD_FILE).is_file():
        return p
    if (p / ARTIFACT_DIR / CARD_FILE).is_file():
        return p / ARTIFACT_DIR
    if not p.exists():
        raise FacemetricError(f"{p}: landmark model not found")
    raise FacemetricError(
        f"{p}: not a landmark model (expected {CARD_FILE} in it or in {ARTIFACT_DIR}/; "
        "train one with: facemetric train --config configs/landmarks-5point.yaml)"
    )


def load_landmark_model(path: str | os.PathLike) -> tuple[LandmarkNet, dict[str, Any]]:
    """``(network in eval mode, card)`` from an artifact folder or a run directory holding one."""
    folder = _artifact_dir(path)
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FacemetricError(f"{folder / CARD_FILE}: not a readable landmark card ({exc.__class__.__name__})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise FacemetricError(f"{folder / CARD_FILE}: format expected {FORMAT!r}, got {card.get('format') if isinstance(card, dict) else card!r}")
    try:
        model = LandmarkNet(**card["network"])
        state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except FacemetricError:
        raise
    except Exception as exc:  # missing/corrupt weights, or weights of another network
        raise FacemetricError(
            f"{folder / WEIGHTS_FILE}: cannot load the landmark weights ({exc.__class__.__name__})"
        ) from None
    if int(card["crop"]["size"]) != model.size:
        raise FacemetricError(f"{folder / CARD_FILE}: crop.size {card['crop']['size']} != network size {model.size}")
    return model.eval(), card


# -- the landmarker -----------------------------------------------------------------------------


def predict_units(model: LandmarkNet, crops: np.ndarray, flip: bool = False, device: str = "cpu") -> np.ndarray:
    """Crop units ``[B, 5, 2]`` for uint8 crops ``[B, S, S, 3]``; with ``flip`` the mean of the
    crop's and its mirror's predictions (mapped back with :func:`flip_units`)."""
    if len(crops) == 0:
        return np.zeros((0, model.points, 2))
    with torch.inference_mode():
        x = normalise_crops(crops).to(device)
        out = model(x).double().cpu().numpy()
        if flip:
            mirrored = model(torch.flip(x, dims=[3])).double().cpu().numpy()
            out = 0.5 * (out + flip_units(mirrored))
    return out


class Learned5Landmarker(Landmarker):
    """:class:`~facemetric.align.landmarks.Landmarker` of a trained :class:`LandmarkNet`
    (``path``: its artifact folder or run directory). ``flip``: average with the mirrored crop
    (test-time augmentation). ``batch_size`` faces per forward pass."""

    layout = "arcface5"
    points = 5

    def __init__(self, path: str | os.PathLike, flip: bool = False, device: str = "cpu", batch_size: int = 64):
        self.model, self.card = load_landmark_model(path)
        self.path = str(path)
        self.flip = bool(flip)
        self.device = str(device)
        self.batch_size = int(batch_size)
        self.size = int(self.card["crop"]["size"])
        self.margin = float(self.card["crop"]["margin"])
        self.model.to(self.device)

    def __repr__(self) -> str:
        return f"Learned5Landmarker(path={self.path!r}, flip={self.flip})"

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        img = check_image(image)
        arr = check_boxes(boxes)
        out = np.zeros((len(arr), self.points, 2))
        for start in range(0, len(arr), self.batch_size):
            chunk = arr[start:start + self.batch_size]
            pairs = [crop_face(img, b, self.size, self.margin) for b in chunk]
            units = predict_units(self.model, np.stack([c for c, _ in pairs]), self.flip, self.device)
            for j, (_, m) in enumerate(pairs):
                out[start + j] = from_crop_units(units[j], m, self.size)
        return out


@LANDMARKERS.register("learned5")
def _learned5(path: str | os.PathLike | None = None, flip: bool = False, device: str = "cpu",
              batch_size: int = 64) -> Landmarker:
    if path is None:
        raise FacemetricError(
            "learned5 landmarks: 'path' is required (a trained model's run directory or "
            "landmark_model/ folder; train one with: facemetric train --config configs/landmarks-5point.yaml)"
        )
    return Learned5Landmarker(path, flip=flip, device=device, batch_size=batch_size)


__all__ = [
    "ARTIFACT_DIR",
    "LandmarkNet",
    "Learned5Landmarker",
    "crop_face",
    "crop_matrix",
    "flip_units",
    "from_crop_units",
    "load_landmark_model",
    "normalise_crops",
    "predict_units",
    "save_landmark_model",
    "to_crop_units",
]
