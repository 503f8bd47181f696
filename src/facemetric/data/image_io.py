"""Reading image files into uint8 arrays (Pillow), with one-line errors naming the file.

Truncated files are errors: this module never turns Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES`` on (it is off by default; code that turns it on globally
makes truncated JPEGs decode silently with a grey bottom, which this module cannot detect).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from facemetric.errors import DataError

#: File extensions read as images (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp")

_MODES = ("RGB", "L")


def is_image_file(path: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> bool:
    """True when ``path``'s extension is one of ``extensions`` (case-insensitive)."""
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    return os.fspath(path).lower().endswith(exts)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _loaded(img: Image.Image, mode: str) -> Image.Image:
    img.load()  # decodes fully: a truncated file raises here
    return img.convert(mode) if img.mode != mode else img.copy()


def _to_array(img: Image.Image) -> np.ndarray:
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    return arr[:, :, None] if arr.ndim == 2 else arr


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode: expected 'RGB' or 'L', got {mode!r}")


def open_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """Decode ``path`` fully into a PIL image of ``mode`` (errors as :func:`read_image`)."""
    _check_mode(mode)
    try:
        with Image.open(path) as img:
            return _loaded(img, mode)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise DataError(f"{path}: cannot read image ({_reason(exc)})") from None


def read_image(path: str | os.PathLike, mode: str = "RGB") -> np.ndarray:
    """Decode ``path`` to uint8 ``[H, W, 3]`` (``mode="RGB"``) or ``[H, W, 1]`` (``mode="L"``).

    Raises :class:`DataError` ``"<path>: cannot read image (<reason>)"`` for a missing,
    unreadable, truncated or corrupt file.
    """
    return _to_array(open_image(path, mode))


def decode_image_bytes(data: bytes, mode: str = "RGB", name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) like :func:`read_image`; ``name`` for errors."""
    _check_mode(mode)
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _to_array(_loaded(img, mode))
    except Exception as exc:
        raise DataError(f"{name}: cannot read image ({_reason(exc)})") from None


def verify_image(path: str | os.PathLike) -> str | None:
    """Fast check (Pillow ``verify()``, no full decode): ``None`` if it looks fine, else why not.

    Catches missing files, non-images and garbage; a JPEG truncated in its pixel data can pass
    and is only found when decoded (:func:`read_image` raises then).
    """
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:
        return _reason(exc)
    return None


def list_images(
    directory: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> list[Path]:
    """Image files directly inside ``directory``, sorted by name (hidden files ignored)."""
    out = []
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            if is_image_file(entry.name, extensions) and entry.is_file():
                out.append(Path(entry.path))
    return sorted(out, key=lambda p: p.name)
