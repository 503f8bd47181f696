"""Image inputs for alignment: file paths, PIL images or NumPy arrays -> RGB uint8 arrays."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from facemetric.data.image_io import convert_image, flatten_alpha, read_image
from facemetric.errors import FacemetricError

#: What the alignment functions accept as one image.
ImageInput = str | os.PathLike | Image.Image | np.ndarray


def _describe(obj: Any) -> str:
    if isinstance(obj, np.ndarray):
        return f"array {obj.dtype} {obj.shape}"
    return type(obj).__name__


def to_rgb(image: ImageInput, name: str = "image") -> np.ndarray:
    """One image as a C-contiguous RGB uint8 ``[H, W, 3]`` array.

    Paths are decoded with :func:`facemetric.data.image_io.read_image` (the project's one
    loader and its policy: EXIF orientation, 16-bit scaling, size limits, blank images refused;
    an unusable file raises a one-line :class:`~facemetric.errors.DataError` naming it); PIL
    images go through :func:`facemetric.data.image_io.convert_image` (orientation and modes);
    arrays must be uint8 ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA,
    composited on white as the loader does).
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, mode="RGB")
    if isinstance(image, Image.Image):
        return np.array(convert_image(image, "RGB"), dtype=np.uint8)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise FacemetricError(f"{name}: expected a uint8 image array, got {_describe(image)}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape[:2]:
            raise FacemetricError(
                f"{name}: expected an [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] array, "
                f"got {_describe(image)}"
            )
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        elif image.shape[2] == 4:
            image = flatten_alpha(image)
        return np.ascontiguousarray(image)
    raise FacemetricError(
        f"{name}: expected a file path, a PIL image or a uint8 array, got {_describe(image)}"
    )


def is_single_image(images: Any) -> bool:
    """True for one image (a path, a PIL image, a 2-D/3-D array), False for a batch."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return True
    return isinstance(images, np.ndarray) and images.ndim in (2, 3)


def to_rgb_batch(images: ImageInput | Sequence[ImageInput] | np.ndarray) -> list[np.ndarray]:
    """A batch (a sequence, or a ``[N, H, W, C]`` array) or one image -> list of RGB arrays."""
    if is_single_image(images):
        images = [images]
    elif not isinstance(images, (Sequence, np.ndarray)):
        raise FacemetricError(
            f"images: expected a list of paths, PIL images or arrays, got {_describe(images)}"
        )
    return [to_rgb(img, name=f"images[{i}]") for i, img in enumerate(images)]
