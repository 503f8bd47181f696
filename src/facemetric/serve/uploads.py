"""Uploaded photos: bytes -> upright uint8 pixels, refusing hostile input with a 4xx naming
the field.

* **Content is sniffed**, never trusted from the file name or the part's ``Content-Type``: the
  first bytes must be a JPEG, PNG, GIF, BMP, WebP, TIFF or PNM signature (:func:`sniff`), else
  415 ``photos[i]: not an image (...)``.
* **Decompression bombs are refused before decoding**: the loader
  (:func:`facemetric.data.image_io.load_image`) reads the header and refuses more than
  ``max_pixels`` decoded pixels (413) without allocating them.
* **EXIF orientation** is applied by the same loader (the pixels are upright as a viewer shows
  them); truncated, blank, too small or unreadable photos are 422 with the loader's reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from facemetric.data.image_io import SkipKind, load_image
from facemetric.serve.errors import ApiError

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"P5", "pgm"),
    (b"P6", "ppm"),
    (b"P2", "pgm"),
    (b"P3", "ppm"),
)
FORMATS = ("jpeg", "png", "gif", "bmp", "webp", "tiff", "pgm", "ppm")


def sniff(data: bytes) -> str | None:
    """The image format of ``data`` by its signature (one of :data:`FORMATS`), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, kind in _SIGNATURES:
        if data.startswith(magic):
            return kind
    return None


@dataclass
class Photo:
    """One decoded upload: ``field`` (``photos[0]``), ``filename`` (as sent, for messages
    only), ``pixels`` uint8 ``[H, W, 3]`` upright RGB, ``sha256`` of the bytes, the
    ``format`` sniffed and the bytes themselves (``data``, for thumbnails)."""

    field: str
    filename: str
    pixels: np.ndarray
    sha256: str
    format: str
    data: bytes


def _label(field: str, filename: str) -> str:
    name = " ".join(str(filename or "").split())[:80]
    return f"{field} ({name})" if name else field


def decode_photo(data: bytes, field: str, filename: str = "", *, max_pixels: int) -> Photo:
    """Decode one uploaded photo (see the module docstring) or raise :class:`ApiError`
    (400 empty, 415 not an image, 413 too many pixels, 422 unreadable / too small / blank)."""
    label = _label(field, filename)
    if not data:
        raise ApiError(400, f"{label}: empty upload (expected a photo)", field)
    kind = sniff(data[:16])
    if kind is None:
        head = data[:8].hex(" ")
        raise ApiError(415, f"{label}: not an image (its first bytes {head} are no JPEG, PNG, GIF, "
                            f"BMP, WebP, TIFF or PNM signature)", field)
    r = load_image(data, "RGB", max_pixels=max_pixels)
    if r.skip is not None:
        status = 413 if r.skip.kind == SkipKind.TOO_LARGE else 422
        raise ApiError(status, f"{label}: {r.skip.reason}", field)
    return Photo(field, str(filename or ""), r.array, hashlib.sha256(data).hexdigest(), kind, bytes(data))


__all__ = ["FORMATS", "Photo", "decode_photo", "sniff"]
