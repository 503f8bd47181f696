"""Reading image files into uint8 arrays (Pillow): the one loader every path decodes through.

Every photo read by the project (the embedder, batch embedding, identity-folder datasets, the
image cache, alignment, ``.bin`` sets) goes through :func:`load_image`, which returns the pixels
*or* a typed reason (:class:`Skip`) so that callers can skip and count; :func:`read_image`
raises the reason as a one-line :class:`~facemetric.errors.DataError` naming the file.

Policy
------
* **Files**: a path must be a readable regular file. Refused with a reason, before any read:
  ``file not found``, ``is a directory``, ``symlink loop``, ``broken symlink (-> target)``,
  ``permission denied``, ``not a regular file`` (a FIFO would block forever), ``empty file``.
* **Size** (checked on the header, *before* decoding): the smaller side must be at least
  :data:`MIN_SIDE` px (16; a face below that has nothing to recognise -- the smallest model
  input here is LeNets++'s 28x28 and 28-px digit images must stay loadable) and the pixel count
  at most :data:`MAX_PIXELS` (40 MP; a 13,000 x 13,000 photo is refused in milliseconds instead
  of decoded into 0.5 GB). Both are parameters, or set by the environment variables
  ``FACEMETRIC_MIN_IMAGE_SIDE`` and ``FACEMETRIC_MAX_IMAGE_PIXELS``. Pillow's own
  ``DecompressionBombError`` is reported the same way (``too large``).
* **Content**: an image whose pixels are all equal (blank: all black, all white, one grey) is
  refused as ``no content``; it holds no face, and embedding it gives a confident wrong answer.
* **Orientation**: the EXIF orientation tag is applied (``ImageOps.exif_transpose``), so the
  pixels are upright as any viewer shows them.
* **Modes**: 16-bit samples (Pillow modes ``I;16*``, and ``I`` with values in 0..65535, which is
  how Pillow opens 16-bit PNG/TIFF/PGM; PGM with another maxval is scaled to 0..65535 by
  Pillow) become 8-bit as ``round(v * 255 / 65535)``; ``I`` values outside 0..65535 are refused.
  Float ``F`` images: values in [0, 1] are scaled by 255, values in [0, 255] kept (rounded);
  anything else, or NaN/inf, is refused. Transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, and
  palette / grey / RGB images with a ``transparency`` key) is composited **on white** -- what a
  viewer on a white page shows and the usual ID-photo background -- so the colour stored under
  transparent pixels never leaks in. ``P``, ``1``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` go
  through Pillow's conversion to RGB (or L). Grey output is Pillow's ITU-R 601-2 luma.
* **Frames**: animated GIF/WebP and multi-page TIFF give their *first* frame
  (:attr:`Loaded.animated` says so); ``.gif``, ``.tif`` and ``.tiff`` are image extensions like
  the others, so folder commands and the loaders agree.
* **Truncated files are errors**: this module never turns Pillow's
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` on (code that turns it on globally makes truncated JPEGs
  decode silently with a grey bottom, which this module cannot detect).

Folder listing (:func:`scan_images`, :func:`find_images`) skips and counts what cannot be a
photo (symlink loops, broken links, unreadable entries, names that are not valid UTF-8, a
directory named ``x.jpg``, a sub-folder an identity folder does not search); find_images takes
each real folder and file once however many links lead to it. :func:`display_path` prints any name
safely (``\\xNN`` for bytes that are not UTF-8).

In-memory PIL images go through :func:`convert_image` (orientation and modes, no size
policy); uint8 arrays are the caller's pixels and are taken as they are.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from facemetric.errors import ConfigError, DataError

#: File extensions read as images (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp", ".gif", ".tif", ".tiff",
)

#: Default smallest accepted image side in pixels (``FACEMETRIC_MIN_IMAGE_SIDE``).
MIN_SIDE = 16
#: Default largest accepted pixel count, width x height (``FACEMETRIC_MAX_IMAGE_PIXELS``).
MAX_PIXELS = 40_000_000
MIN_SIDE_ENV = "FACEMETRIC_MIN_IMAGE_SIDE"
MAX_PIXELS_ENV = "FACEMETRIC_MAX_IMAGE_PIXELS"

_MODES = ("RGB", "L")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class SkipKind(str, Enum):
    """Why an image was not loaded (the category; :attr:`Skip.reason` has the words)."""

    MISSING = "missing"
    DIRECTORY = "directory"
    BROKEN_LINK = "broken-link"
    LINK_LOOP = "link-loop"
    PERMISSION = "permission"
    NOT_REGULAR = "not-regular"
    BAD_NAME = "bad-name"
    DUPLICATE = "duplicate"
    SUBFOLDER = "sub-folder"
    EMPTY = "empty"
    UNREADABLE = "unreadable"
    TOO_SMALL = "too-small"
    TOO_LARGE = "too-large"
    BLANK = "blank"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class Skip:
    """A typed reason: ``kind`` to count by, ``reason`` a one-line explanation in words."""

    kind: SkipKind
    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Loaded:
    """The result of :func:`load_image`: ``array`` (uint8 ``[H, W, C]``) or ``skip``, never both;
    ``animated``: the file holds more frames and ``array`` is the first."""

    array: np.ndarray | None = None
    skip: Skip | None = None
    animated: bool = False

    @property
    def ok(self) -> bool:
        return self.skip is None


class _Refused(Exception):
    def __init__(self, kind: SkipKind, reason: str):
        super().__init__(reason)
        self.skip = Skip(kind, reason)


# ----------------------------------------------------------------------------- names, files
def display_path(path: str | os.PathLike) -> str:
    """``path`` printable on any terminal and storable as UTF-8: a name that is not valid UTF-8
    (surrogate escapes on POSIX) shows its undecodable bytes as ``\\xNN``."""
    p = os.fspath(path)
    if isinstance(p, bytes):
        return p.decode("utf-8", errors="backslashreplace")
    try:
        p.encode("utf-8")
        return p
    except UnicodeEncodeError:
        return os.fsencode(p).decode("utf-8", errors="backslashreplace")


def is_valid_name(path: str | os.PathLike) -> bool:
    """False when ``path`` holds bytes that are not UTF-8 (Python's surrogate escapes)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_skip(path: str | os.PathLike) -> Skip | None:
    """Why ``path`` cannot be read as a file (a :class:`Skip`), or ``None`` for a readable,
    non-empty regular file. Follows links (``os.stat``); ``ELOOP`` is a loop of symlinks and a
    name that exists only as a dangling link is named with its target, not "file not found"."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Skip(SkipKind.LINK_LOOP, "symlink loop")
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(p):
                try:
                    target = display_path(os.readlink(p))
                except OSError:
                    target = "?"
                return Skip(SkipKind.BROKEN_LINK, f"broken symlink (-> {target})")
            return Skip(SkipKind.MISSING, "file not found")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return Skip(SkipKind.PERMISSION, "permission denied")
        return Skip(SkipKind.UNREADABLE, exc.strerror or type(exc).__name__)
    if stat.S_ISDIR(st.st_mode):
        return Skip(SkipKind.DIRECTORY, "is a directory")
    if not stat.S_ISREG(st.st_mode):
        return Skip(SkipKind.NOT_REGULAR, "not a regular file")
    if not os.access(p, os.R_OK):
        return Skip(SkipKind.PERMISSION, "permission denied")
    if st.st_size == 0:
        return Skip(SkipKind.EMPTY, "empty file")
    return None


def path_problem(path: str | os.PathLike) -> str | None:
    """:func:`file_skip` in words (``"file not found"``, ``"is a directory"``, ``"symlink
    loop"``, ...), or ``None`` for a readable regular file."""
    skip = file_skip(path)
    return None if skip is None else skip.reason


# ---------------------------------------------------------------------------- size policy
def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name}: expected a positive integer, got {raw!r}")
    return value


def image_limits(min_side: int | None = None, max_pixels: int | None = None) -> tuple[int, int]:
    """``(min_side, max_pixels)``: the arguments when given, else the environment
    (``FACEMETRIC_MIN_IMAGE_SIDE``, ``FACEMETRIC_MAX_IMAGE_PIXELS``), else 16 and 40 MP."""
    side = _env_int(MIN_SIDE_ENV, MIN_SIDE) if min_side is None else min_side
    pixels = _env_int(MAX_PIXELS_ENV, MAX_PIXELS) if max_pixels is None else max_pixels
    for what, v in (("min_side", side), ("max_pixels", pixels)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"{what}: expected a positive integer, got {v!r}")
    return int(side), int(pixels)


def _check_size(width: int, height: int, min_side: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise _Refused(
            SkipKind.TOO_LARGE,
            f"too large: {width}x{height} is {width * height / 1e6:.1f} MP, above the limit of "
            f"{max_pixels / 1e6:g} MP ({MAX_PIXELS_ENV})",
        )
    if min(width, height) < min_side:
        raise _Refused(
            SkipKind.TOO_SMALL,
            f"too small: {width}x{height} px, a side below the minimum of {min_side} px "
            f"({MIN_SIDE_ENV})",
        )


# -------------------------------------------------------------------------------- modes
def _sixteen_to_8(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.uint32)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _grey_image(arr: np.ndarray, mode: str) -> Image.Image:
    img = Image.fromarray(np.ascontiguousarray(arr), "L")
    return img if mode == "L" else img.convert(mode)


def _on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _convert(img: Image.Image, mode: str) -> Image.Image:
    """``img`` (already upright) in ``mode`` ("RGB" or "L") by the module's mode policy."""
    m = img.mode
    if m in _SIXTEEN_BIT or m == "I":
        a = np.asarray(img)
        if m == "I" and a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise _Refused(
                SkipKind.UNSUPPORTED,
                f"unsupported pixels: 32-bit integer values {int(a.min())}..{int(a.max())} "
                "(expected 16-bit samples 0..65535)",
            )
        return _grey_image(_sixteen_to_8(a), mode)
    if m == "F":
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise _Refused(SkipKind.UNSUPPORTED, "unsupported pixels: float image with NaN or inf")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < 0 or hi > 255:
            raise _Refused(
                SkipKind.UNSUPPORTED,
                f"unsupported pixels: float values {lo:g}..{hi:g} (expected 0..1 or 0..255)",
            )
        scale = 255.0 if hi <= 1.0 else 1.0
        return _grey_image(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), mode)
    if m in _ALPHA_MODES or "transparency" in img.info:
        rgb = _on_white(img)
        return rgb if mode == "RGB" else rgb.convert(mode)
    if m == mode:
        return img
    try:
        return img.convert(mode)
    except (ValueError, OSError) as exc:
        raise _Refused(SkipKind.UNSUPPORTED, f"unsupported mode {m} ({exc})") from None


def convert_image(img: Image.Image, mode: str = "RGB") -> Image.Image:
    """An in-memory PIL image upright (EXIF orientation) and in ``mode`` by the module's mode
    policy (16-bit and float scaling, transparency on white); no size or content checks.
    Raises a one-line :class:`DataError` for pixels the policy refuses."""
    _check_mode(mode)
    try:
        return _convert(ImageOps.exif_transpose(img), mode)
    except _Refused as exc:
        raise DataError(f"image: {exc.skip.reason}") from None


def flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 4]`` RGBA -> ``[H, W, 3]`` RGB composited on white (the module policy)."""
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    out = (rgba[:, :, :3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


# ------------------------------------------------------------------------------- loading
def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode: expected 'RGB' or 'L', got {mode!r}")


#: Serialises :func:`_open`'s warning filter: ``warnings.catch_warnings`` saves and restores the
#: process-wide filter list, so two threads inside it at once restore each other's state (a
#: filter left behind for good, or the warning let through); a service decodes in threads.
_OPEN_LOCK = threading.Lock()


def _open(source: str | io.BytesIO) -> Image.Image:
    """``Image.open`` (header only) without Pillow's DecompressionBombWarning: the size policy
    here decides, and refuses with one line instead of a warning on stderr. (Pillow's own
    ``DecompressionBombError``, above twice its ``MAX_IMAGE_PIXELS``, still raises here.)
    Thread-safe: the filter change is held under :data:`_OPEN_LOCK` (header parsing only; the
    decode runs outside it)."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source)


def _decode(source: str | io.BytesIO, mode: str, min_side: int, max_pixels: int) -> Loaded:
    try:
        with _open(source) as img:
            _check_size(img.width, img.height, min_side, max_pixels)  # header only: no decode yet
            animated = bool(getattr(img, "is_animated", False))
            img.load()  # decodes fully (the first frame): a truncated file raises here
            upright = ImageOps.exif_transpose(img)
            out = _convert(upright, mode)
            arr = np.array(out, dtype=np.uint8)  # a writable copy
    except _Refused as exc:
        return Loaded(skip=exc.skip)
    except Image.DecompressionBombError as exc:
        return Loaded(skip=Skip(SkipKind.TOO_LARGE, f"too large: {_reason(exc)}"))
    except PermissionError:
        return Loaded(skip=Skip(SkipKind.PERMISSION, "cannot read image (permission denied)"))
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        return Loaded(skip=Skip(SkipKind.UNREADABLE, f"cannot read image ({_reason(exc)})"))
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.size and (arr == arr.flat[0]).all():
        return Loaded(skip=Skip(
            SkipKind.BLANK, f"no content: every pixel has the value {arr.flat[0]} (a blank image)"
        ))
    return Loaded(array=arr, animated=animated)


def load_image(
    source: str | os.PathLike | bytes,
    mode: str = "RGB",
    *,
    min_side: int | None = None,
    max_pixels: int | None = None,
) -> Loaded:
    """The loader: a file path (or encoded bytes) -> :class:`Loaded` holding uint8
    ``[H, W, 3]`` (``mode="RGB"``) or ``[H, W, 1]`` (``mode="L"``) pixels, or a :class:`Skip`
    saying why not (see the module docstring for the policy). Never raises for a bad file."""
    _check_mode(mode)
    side, pixels = image_limits(min_side, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            return Loaded(skip=Skip(SkipKind.EMPTY, "empty file"))
        return _decode(io.BytesIO(bytes(source)), mode, side, pixels)
    skip = file_skip(source)
    if skip is not None:
        return Loaded(skip=skip)
    return _decode(os.fspath(source), mode, side, pixels)


def _raise(name: str, skip: Skip) -> None:
    raise DataError(f"{display_path(name)}: {skip.reason}")


def read_image(
    path: str | os.PathLike,
    mode: str = "RGB",
    *,
    min_side: int | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode ``path`` to uint8 ``[H, W, 3]`` (``mode="RGB"``) or ``[H, W, 1]`` (``mode="L"``).

    Raises :class:`DataError` ``"<path>: <reason>"`` (:func:`load_image`'s skip reason, e.g.
    ``file not found``, ``cannot read image (<why>)``, ``too small: ...``, ``no content: ...``).
    """
    r = load_image(path, mode, min_side=min_side, max_pixels=max_pixels)
    if r.skip is not None:
        _raise(os.fspath(path), r.skip)
    return r.array


def open_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """:func:`read_image` as a PIL image of ``mode``."""
    arr = read_image(path, mode)
    return Image.fromarray(arr[:, :, 0], "L") if mode == "L" else Image.fromarray(arr, "RGB")


def decode_image_bytes(data: bytes, mode: str = "RGB", name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) like :func:`read_image`; ``name`` for errors."""
    r = load_image(bytes(data), mode)
    if r.skip is not None:
        _raise(name, r.skip)
    return r.array


def verify_image(
    path: str | os.PathLike, *, min_side: int | None = None, max_pixels: int | None = None
) -> str | None:
    """Fast check (file checks, header size policy, Pillow ``verify()``; no full decode):
    ``None`` if it looks fine, else why not.

    Catches missing files, non-images, garbage and sizes out of bounds; a JPEG truncated in its
    pixel data, or a blank image, can pass and is only found when decoded (:func:`read_image`
    raises then).
    """
    side, pixels = image_limits(min_side, max_pixels)
    skip = file_skip(path)
    if skip is not None:
        return skip.reason
    try:
        with _open(os.fspath(path)) as img:
            _check_size(img.width, img.height, side, pixels)
            img.verify()
    except _Refused as exc:
        return exc.skip.reason
    except Image.DecompressionBombError as exc:
        return f"too large: {_reason(exc)}"
    except Exception as exc:
        return f"cannot read image ({_reason(exc)})"
    return None


# ------------------------------------------------------------------------------- listing
def is_image_file(path: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> bool:
    """True when ``path``'s extension is one of ``extensions`` (case-insensitive)."""
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    return os.fspath(path).lower().endswith(exts)


def _entry_skip(path: str) -> Skip | None:
    if not is_valid_name(os.path.basename(path)):
        return Skip(SkipKind.BAD_NAME, "name is not valid UTF-8")
    return file_skip(path)


def scan_images(
    directory: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> tuple[list[Path], dict[Path, Skip]]:
    """Image files directly inside ``directory``, sorted by name, and the skipped ones.

    Hidden names (starting with ``.``) and files of other extensions are ignored. An entry
    with an image extension that cannot be a photo is *skipped with its reason*: a directory
    (``x.jpg/``), a symlink loop, a broken symlink, an unreadable, empty or non-regular file, a
    name that is not valid UTF-8. Sub-folders are not searched, and are skipped with a reason
    too (so that photos in them are never left out without a word): ``"symlink loop (a link
    to a folder above)"`` or ``"sub-folder not searched (photos are read directly in
    <directory>)"``. Returns ``(paths, {path: Skip})``.
    """
    good: list[Path] = []
    skipped: dict[Path, Skip] = {}
    with os.scandir(directory) as it:
        entries = list(it)
    here = None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not is_image_file(entry.name, extensions):
            try:
                is_dir = entry.is_dir()
            except OSError:  # a loop of links with a plain name: not a photo either way
                is_dir = False
            if is_dir:
                here = here or os.path.realpath(directory)
                target = os.path.realpath(entry.path)
                if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
                    skipped[Path(entry.path)] = Skip(
                        SkipKind.LINK_LOOP, "symlink loop (a link to a folder above)")
                else:
                    skipped[Path(entry.path)] = Skip(
                        SkipKind.SUBFOLDER,
                        f"sub-folder not searched (photos are read directly in "
                        f"{display_path(directory)})")
            continue
        skip = _entry_skip(entry.path)
        if skip is None:
            good.append(Path(entry.path))
        else:
            skipped[Path(entry.path)] = skip
    return sorted(good, key=lambda p: p.name), dict(sorted(skipped.items()))


def list_images(
    directory: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> list[Path]:
    """The readable image files directly inside ``directory``, sorted by name
    (:func:`scan_images` without the skipped ones)."""
    return scan_images(directory, extensions)[0]


def find_images(
    root: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> tuple[list[Path], dict[Path, Skip]]:
    """Image files under ``root``, recursively, following symlinks; sorted by path.

    Hidden names are ignored. Each real folder (and each real file) is taken once, however
    many links lead to it, under its own name when it has one inside ``root`` (real folders
    and files are listed before any link is followed): a link to a folder already searched (a
    symlink loop, or a second name of one folder) is skipped with the reason ``"already
    searched as <path>"``, a second name of one file with ``"same file as <path>"``; other
    entries are skipped as in :func:`scan_images` (unreadable folders too; a folder named like a
    photo, ``x.jpg/``, is skipped as ``"is a directory"`` and not searched).
    Returns ``(paths, {path: Skip})``.
    """
    root = Path(root)
    skipped: dict[Path, Skip] = {}
    seen_dirs: dict[tuple[int, int], Path] = {}
    files: dict[tuple[int, int], Path] = {}
    linked_files: list[tuple[tuple[int, int], Path]] = []
    st = os.stat(root)
    seen_dirs[(st.st_dev, st.st_ino)] = root
    real: list[Path] = [root]  # folders to list now
    links: list[tuple[tuple[int, int], Path]] = []  # linked folders, followed after the real ones
    while real or links:
        if real:
            folder = real.pop()
        else:
            key, folder = links.pop(0)
            if key in seen_dirs:
                skipped[folder] = Skip(SkipKind.LINK_LOOP,
                                       f"already searched as {display_path(seen_dirs[key])}")
                continue
            seen_dirs[key] = folder
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped[folder] = Skip(SkipKind.PERMISSION if isinstance(exc, PermissionError)
                                   else SkipKind.UNREADABLE, f"cannot list folder ({_reason(exc)})")
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            image_name = is_image_file(entry.name, extensions)
            try:
                est = os.stat(entry.path)
            except OSError:
                if image_name or entry.is_symlink():
                    skipped[path] = _entry_skip(entry.path) or Skip(SkipKind.UNREADABLE, "cannot stat")
                continue
            key = (est.st_dev, est.st_ino)
            if stat.S_ISDIR(est.st_mode):
                if not is_valid_name(entry.name):
                    skipped[path] = Skip(SkipKind.BAD_NAME, "name is not valid UTF-8")
                elif image_name:  # x.jpg/: named like a photo, reported as read_image does
                    skipped[path] = Skip(SkipKind.DIRECTORY, "is a directory (named like a photo; not searched)")
                elif entry.is_symlink():
                    links.append((key, path))
                elif key in seen_dirs:  # a bind mount or similar: the same folder again
                    skipped[path] = Skip(SkipKind.DUPLICATE,
                                         f"already searched as {display_path(seen_dirs[key])}")
                else:
                    seen_dirs[key] = path
                    subdirs.append(path)
                continue
            if not image_name:
                continue
            skip = _entry_skip(entry.path)
            if skip is not None:
                skipped[path] = skip
            elif entry.is_symlink() or key in files:
                linked_files.append((key, path))
            else:
                files[key] = path
        real.extend(reversed(subdirs))
    for key, path in linked_files:  # second names of files: after every real name is known
        if key in files:
            skipped[path] = Skip(SkipKind.DUPLICATE, f"same file as {display_path(files[key])}")
        else:
            files[key] = path
    return sorted(files.values()), dict(sorted(skipped.items()))
