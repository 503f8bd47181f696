"""How an image file becomes a network input: :class:`Preprocessing` and the functions using it.

The pipeline, in this order (the same at training and inference time):

1. **decode** the file with Pillow as RGB (or grey for ``color="L"``);
2. **centre crop** ``crop = (H, W)`` pixels out of the decoded image (``None``: whole image);
3. **resize** to ``stored_size`` (``None``: ``input_size``) with Pillow's ``interpolation``
   (Pillow's bilinear/bicubic are antialiased when downscaling).
   Steps 1-3 are :func:`decode_and_resize`; its uint8 output is what the image cache stores.
4. **crop to input_size**: a *centre* crop at test time, a *random* crop when training
   (facenet-style augmentation: ``stored_size`` slightly larger than ``input_size``, e.g.
   128 -> 112). A no-op when ``stored_size`` is ``None``.
5. optional random horizontal **flip** (training only);
6. **colour order** (``"BGR"`` reverses the RGB channels) and **normalisation** to float32:

   * ``"minus127.5_div128"``: ``(x - 127.5) / 128``;
   * ``"prewhiten"``: facenet's per-image standardisation ``(x - mean) / max(std, 1/sqrt(n))``
     over the ``n = C*H*W`` values of the cropped image;
   * ``"mean_std"``: ``(x / 255 - mean[c]) / std[c]`` (torchvision convention: ``mean``/``std``
     on the [0, 1] scale, in the output channel order).

Steps 4-6 on a channels-last uint8 batch are :func:`to_tensor` (centre crop); the datasets
apply :func:`random_crop` / :func:`random_flip` then :func:`normalize` when training.

A :class:`Preprocessing` is stored in the model card (``to_dict()`` / ``from_dict()``), so
inference repeats exactly the preprocessing the model was trained with.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from facemetric.data.image_io import convert_image, open_image
from facemetric.errors import ConfigError, DataError

COLORS = ("RGB", "BGR", "L")
NORMALIZATIONS = ("minus127.5_div128", "prewhiten", "mean_std")
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def _size(field: str, value: Any) -> tuple[int, int]:
    """``(H, W)`` of positive ints from an int or a 2-sequence; ConfigError naming the field."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in value)
    ):
        raise ConfigError(
            f"preprocessing.{field}: expected [height, width] positive integers, got {value!r}"
        )
    return int(value[0]), int(value[1])


def _floats(field: str, value: Any, n: int) -> tuple[float, ...]:
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != n
        or any(isinstance(v, bool) or not isinstance(v, (int, float, np.number)) for v in value)
        or not all(math.isfinite(float(v)) for v in value)
    ):
        raise ConfigError(f"preprocessing.{field}: expected a list of {n} numbers, got {value!r}")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class Preprocessing:
    """The single description of how an image becomes a network input (see module docstring).

    Attributes:
        input_size: ``(H, W)`` of the network input.
        crop: ``(H, W)`` centre crop taken from the decoded image before resizing, or ``None``
            for the whole image. For 250x250 deep-funneled LFW, ``(150, 150)`` keeps the face
            and a little context (see :data:`PRESETS`).
        color: ``"RGB"``, ``"BGR"`` or ``"L"`` (grey, 1 channel).
        normalize: ``"minus127.5_div128"``, ``"prewhiten"`` or ``"mean_std"``.
        mean, std: per-channel values for ``"mean_std"`` (``None`` otherwise).
        interpolation: Pillow resampling filter: ``"bilinear"`` (default), ``"bicubic"``,
            ``"nearest"``, ``"lanczos"`` or ``"box"``.
        stored_size: ``(H, W)`` the image is resized to (what a cache stores), at least
            ``input_size``; ``input_size`` is then cropped out of it (random when training,
            centre otherwise). ``None``: same as ``input_size``.
    """

    input_size: tuple[int, int] = (112, 112)
    crop: tuple[int, int] | None = None
    color: str = "RGB"
    normalize: str = "minus127.5_div128"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"
    stored_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "input_size", _size("input_size", self.input_size))
        if self.crop is not None:
            set_(self, "crop", _size("crop", self.crop))
        if self.stored_size is not None:
            stored = _size("stored_size", self.stored_size)
            if stored[0] < self.input_size[0] or stored[1] < self.input_size[1]:
                raise ConfigError(
                    f"preprocessing.stored_size: expected at least input_size "
                    f"{list(self.input_size)}, got {list(stored)}"
                )
            set_(self, "stored_size", stored)
        if self.color not in COLORS:
            raise ConfigError(f"preprocessing.color: expected one of {list(COLORS)}, got {self.color!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(
                f"preprocessing.normalize: expected one of {list(NORMALIZATIONS)}, got {self.normalize!r}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"preprocessing.interpolation: expected one of {list(INTERPOLATIONS)}, "
                f"got {self.interpolation!r}"
            )
        if self.normalize == "mean_std":
            for name in ("mean", "std"):
                if getattr(self, name) is None:
                    raise ConfigError(
                        f"preprocessing.{name}: required (a list of {self.channels} numbers) "
                        "with normalize 'mean_std'"
                    )
            set_(self, "mean", _floats("mean", self.mean, self.channels))
            std = _floats("std", self.std, self.channels)
            if min(std) <= 0:
                raise ConfigError(f"preprocessing.std: expected positive numbers, got {list(std)}")
            set_(self, "std", std)
        else:
            for name in ("mean", "std"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        f"preprocessing.{name}: only used with normalize 'mean_std' "
                        f"(normalize is {self.normalize!r}); remove it"
                    )

    # ------------------------------------------------------------------ derived values
    @property
    def channels(self) -> int:
        return 1 if self.color == "L" else 3

    @property
    def decode_mode(self) -> str:
        """Pillow mode images are decoded to and stored in: ``"L"`` or ``"RGB"``."""
        return "L" if self.color == "L" else "RGB"

    @property
    def resize_size(self) -> tuple[int, int]:
        """``(H, W)`` that :func:`decode_and_resize` returns: ``stored_size or input_size``."""
        return self.stored_size if self.stored_size is not None else self.input_size

    def replace(self, **changes: Any) -> Preprocessing:
        return Preprocessing.from_dict({**self.to_dict(), **changes})

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples as lists) that :meth:`from_dict` turns back into ``self``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Validate and build; missing keys take the defaults; an unknown key is a ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"preprocessing: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(
                    f"preprocessing.{key}: unknown field (expected one of {sorted(known)})"
                )
        return cls(**dict(data))


#: Explicit, named starting points (all ``minus127.5_div128``, RGB unless grey).
PRESETS: dict[str, Preprocessing] = {
    # deep-funneled LFW is 250x250 with the face centred; a 150x150 centre crop keeps the face
    "lfw-deepfunneled-112x112": Preprocessing(input_size=(112, 112), crop=(150, 150)),
    "lfw-deepfunneled-112x96": Preprocessing(input_size=(112, 96), crop=(150, 128)),
    # facenet-style: store 128x128, random 112x112 crops when training, centre crop at test
    "lfw-deepfunneled-112x112-randcrop": Preprocessing(
        input_size=(112, 112), crop=(150, 150), stored_size=(128, 128)
    ),
    # ORL / AT&T: 92x112 grey, whole image
    "orl-112x92": Preprocessing(input_size=(112, 92), color="L"),
}


# ------------------------------------------------------------------------- decoding
def _centre_box(height: int, width: int, crop: tuple[int, int], what: str) -> tuple[int, int, int, int]:
    ch, cw = crop
    if ch > height or cw > width:
        raise DataError(
            f"{what}: image is {height}x{width} (HxW), smaller than the crop {ch}x{cw}"
        )
    top, left = (height - ch) // 2, (width - cw) // 2
    return left, top, left + cw, top + ch


def decode_and_resize(
    source: str | os.PathLike | np.ndarray | Image.Image, prep: Preprocessing
) -> np.ndarray:
    """Decode (a path, a uint8 ``[H, W]``/``[H, W, 1|3]`` array or a PIL image), centre crop
    ``prep.crop`` and resize to ``prep.resize_size``: uint8 ``[H, W, C]`` (RGB or grey).

    This is the expensive part, worth caching (:func:`~facemetric.data.cache.build_image_cache`).
    """
    mode = prep.decode_mode
    if isinstance(source, (str, os.PathLike)):
        what = os.fspath(source)
        img = open_image(source, mode)
    elif isinstance(source, Image.Image):
        what = "image"
        img = convert_image(source, mode)  # EXIF orientation, 16-bit, alpha: the loader policy
    else:
        what = "image"
        arr = np.asarray(source)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3)):
            raise DataError(
                f"image: expected a uint8 [H, W], [H, W, 1] or [H, W, 3] array, "
                f"got {arr.dtype} {arr.shape}"
            )
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        img = Image.fromarray(np.ascontiguousarray(arr), "L" if arr.ndim == 2 else "RGB").convert(mode)
    if prep.crop is not None:
        box = _centre_box(img.height, img.width, prep.crop, what)
        if box != (0, 0, img.width, img.height):
            img = img.crop(box)
    h, w = prep.resize_size
    if (img.height, img.width) != (h, w):
        img = img.resize((w, h), INTERPOLATIONS[prep.interpolation])
    out = np.array(img, dtype=np.uint8)  # a writable copy
    return out[:, :, None] if out.ndim == 2 else out


# ----------------------------------------------------------------- tensor functions
# On CPU the per-image work (crop windows, flips, the uint8 -> float32 conversion and the
# normalisation) runs in NumPy: a loop of per-image slice copies measured ~10x faster than
# torch's gather indexing for random crops, and NumPy is single-threaded, so it does not
# suffer from intra-op thread contention on a busy machine (torch's 2-thread element-wise
# kernels were up to 10x slower than 1 thread there). On other devices the same operations
# run as batched torch kernels (``_crop_flip_torch`` / ``_normalize_torch``).
def _check_nchw(batch: Tensor, what: str) -> None:
    if not isinstance(batch, Tensor) or batch.ndim != 4:
        shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
        raise DataError(f"{what}: expected a [B, C, H, W] tensor, got {shape}")


def _numpy_ok(batch: Tensor) -> bool:
    return batch.device.type == "cpu" and not batch.requires_grad


def center_crop(batch: Tensor, size: int | Sequence[int]) -> Tensor:
    """Centre ``(H, W)`` crop of a ``[..., H, W]`` tensor (same offsets as :func:`decode_and_resize`)."""
    h, w = _size("input_size", size)
    height, width = batch.shape[-2], batch.shape[-1]
    if (height, width) == (h, w):
        return batch
    left, top, _, _ = _centre_box(height, width, (h, w), "center_crop")
    return batch[..., top : top + h, left : left + w]


def flip_tensor(batch: Tensor) -> Tensor:
    """Horizontal flip of ``[..., H, W]`` (for flip test-time augmentation)."""
    return torch.flip(batch, dims=(-1,))


def _crop_flip_torch(batch: Tensor, size: tuple[int, int], top: Tensor, left: Tensor,
                     flip: Tensor | None, dtype: torch.dtype) -> Tensor:
    h, w = size
    dev = batch.device
    rows = (top.to(dev)[:, None] + torch.arange(h, device=dev))[:, :, None]  # [B, h, 1]
    cols = (left.to(dev)[:, None] + torch.arange(w, device=dev))[:, None, :]  # [B, 1, w]
    b = torch.arange(batch.shape[0], device=dev)[:, None, None]
    out = batch.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2)  # [B, C, h, w]
    if flip is not None and bool(flip.any()):
        out = torch.where(flip.to(dev).view(-1, 1, 1, 1), out.flip(-1), out)
    return out.to(dtype).contiguous()


def _crop_flip_numpy(batch: Tensor, size: tuple[int, int], top: Tensor, left: Tensor,
                     flip: Tensor | None, dtype: torch.dtype) -> Tensor:
    h, w = size
    src = batch.detach().numpy()  # a view, whatever the strides (e.g. NHWC storage)
    out = torch.empty((src.shape[0], src.shape[1], h, w), dtype=dtype)
    dst = out.numpy()
    tops, lefts = top.tolist(), left.tolist()
    flips = flip.tolist() if flip is not None else [False] * len(tops)
    for i, (t, lft, f) in enumerate(zip(tops, lefts, flips, strict=True)):
        win = src[i, :, t : t + h, lft : lft + w]
        dst[i] = win[:, :, ::-1] if f else win  # copies (and casts) one image
    return out


def crop_flip(
    batch: Tensor,
    size: int | Sequence[int],
    top: Tensor,
    left: Tensor,
    flip: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """``out[i] = batch[i, :, top[i]:top[i]+H, left[i]:left[i]+W]``, flipped horizontally where
    the bool ``flip[i]``; a new contiguous ``[B, C, H, W]`` tensor of ``dtype`` (default:
    the input's). The common core of :func:`random_crop` and :func:`random_flip`."""
    _check_nchw(batch, "crop_flip")
    h, w = _size("input_size", size)
    n, _, height, width = batch.shape
    top, left = torch.as_tensor(top, dtype=torch.long), torch.as_tensor(left, dtype=torch.long)
    if top.shape != (n,) or left.shape != (n,) or (flip is not None and tuple(flip.shape) != (n,)):
        raise DataError(f"crop_flip: expected offsets and flip flags of shape [{n}]")
    if n and (int(top.min()) < 0 or int(left.min()) < 0 or int(top.max()) + h > height
              or int(left.max()) + w > width):
        raise DataError(f"crop_flip: a {h}x{w} window leaves the {height}x{width} images")
    dtype = dtype or batch.dtype
    impl = _crop_flip_numpy if _numpy_ok(batch) else _crop_flip_torch
    return impl(batch, (h, w), top, left, flip, dtype)


def random_flip(batch: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Flip each image of a ``[B, C, H, W]`` batch horizontally with probability ``p``
    (one ``torch.rand(B)`` draw from ``generator``)."""
    _check_nchw(batch, "random_flip")
    n = batch.shape[0]
    mask = torch.rand(n, generator=generator) < p
    zeros = torch.zeros(n, dtype=torch.long)
    return crop_flip(batch, tuple(batch.shape[-2:]), zeros, zeros, mask)


def _crop_offsets(
    n: int, height: int, width: int, size: tuple[int, int], generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    h, w = size
    if h > height or w > width:
        raise DataError(
            f"random_crop: crop {h}x{w} is larger than the (padded) images {height}x{width}"
        )
    top = torch.randint(0, height - h + 1, (n,), generator=generator)
    left = torch.randint(0, width - w + 1, (n,), generator=generator)
    return top, left


def random_crop(
    batch: Tensor,
    size: int | Sequence[int],
    padding: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A random ``(H, W)`` crop per image of a ``[B, C, H, W]`` batch.

    With ``padding > 0`` the images are first zero-padded by that many pixels on each side.
    Offsets are drawn uniformly with ``generator`` (``randint`` for the rows, then the columns).
    """
    _check_nchw(batch, "random_crop")
    h, w = _size("input_size", size)
    if padding < 0:
        raise DataError(f"random_crop: padding must be >= 0, got {padding}")
    if padding:
        batch = F.pad(batch, (padding, padding, padding, padding))
    n, _, height, width = batch.shape
    top, left = _crop_offsets(n, height, width, (h, w), generator)
    return crop_flip(batch, (h, w), top, left)


def augment(
    batch: Tensor,
    prep: Preprocessing,
    generator: torch.Generator | None,
    random_crop: bool = True,
    flip: bool = True,
    padding: int = 0,
) -> Tensor:
    """Training input from uint8 ``[B, C, H, W]`` stored images: exactly
    ``normalize(random_flip(random_crop(batch, prep.input_size, padding, g), g), prep)``
    (each step only when enabled; a centre crop instead of a random one when ``random_crop``
    is False), fused into one pass over the pixels."""
    _check_nchw(batch, "augment")
    size = prep.input_size
    n = batch.shape[0]
    if random_crop:
        if padding:
            batch = F.pad(batch, (padding, padding, padding, padding))
        top, left = _crop_offsets(n, batch.shape[2], batch.shape[3], size, generator)
    else:
        left0, top0, _, _ = _centre_box(batch.shape[2], batch.shape[3], size, "augment")
        top = torch.full((n,), top0, dtype=torch.long)
        left = torch.full((n,), left0, dtype=torch.long)
    mask = torch.rand(n, generator=generator) < 0.5 if flip else None
    x = crop_flip(batch, size, top, left, mask, dtype=torch.float32)
    return _normalize_float(x, prep)


def _normalize_torch(x: Tensor, prep: Preprocessing) -> Tensor:
    """In place on a contiguous float32 ``[B, C, H, W]``."""
    if prep.normalize == "minus127.5_div128":
        return x.sub_(127.5).div_(128.0)
    if prep.normalize == "prewhiten":
        var, mean = torch.var_mean(x.view(x.shape[0], -1), dim=1, correction=0)
        std = var.sqrt().clamp_min(1.0 / math.sqrt(x[0].numel()))
        return x.sub_(mean.view(-1, 1, 1, 1)).div_(std.view(-1, 1, 1, 1))
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.div_(255.0).sub_(mean).div_(std)


def _normalize_numpy(x: Tensor, prep: Preprocessing) -> Tensor:
    """In place on a contiguous float32 CPU ``[B, C, H, W]`` (same formulas, NumPy kernels)."""
    a = x.numpy()
    if prep.normalize == "minus127.5_div128":
        a -= 127.5
        a /= 128.0
    elif prep.normalize == "prewhiten":
        flat = a.reshape(a.shape[0], -1)
        n = flat.shape[1]
        mean = flat.mean(axis=1, dtype=np.float64)
        sq = np.einsum("ij,ij->i", flat, flat, dtype=np.float64) / n
        std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
        std = np.maximum(std, 1.0 / math.sqrt(n))
        a -= mean.astype(np.float32).reshape(-1, 1, 1, 1)
        a /= std.astype(np.float32).reshape(-1, 1, 1, 1)
    else:
        a /= 255.0
        a -= np.asarray(prep.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        a /= np.asarray(prep.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return x


def _normalize_float(x: Tensor, prep: Preprocessing) -> Tensor:
    """Colour order + normalisation, in place where possible, of a fresh contiguous float32."""
    if x.shape[1] != prep.channels:
        raise DataError(
            f"normalize: expected {prep.channels} channel(s) for color {prep.color!r}, "
            f"got {x.shape[1]}"
        )
    if prep.color == "BGR":
        x = x.flip(1)  # a new contiguous tensor
    return (_normalize_numpy if _numpy_ok(x) else _normalize_torch)(x, prep)


def normalize(batch: Tensor, prep: Preprocessing) -> Tensor:
    """Colour order + normalisation of a ``[B, C, H, W]`` batch (uint8, or float in 0..255)
    to a new contiguous float32 tensor (the input is not modified)."""
    _check_nchw(batch, "normalize")
    x = torch.empty(batch.shape, dtype=torch.float32, device=batch.device)
    if _numpy_ok(batch):
        np.copyto(x.numpy(), batch.detach().numpy(), casting="unsafe")
    else:
        x.copy_(batch)
    return _normalize_float(x, prep)


def to_tensor(images: np.ndarray | Tensor, prep: Preprocessing) -> Tensor:
    """uint8 channels-last image ``[H, W]``/``[H, W, C]`` or batch ``[B, H, W, C]`` (as returned by
    :func:`decode_and_resize` / stored in the cache) -> float32 ``[B, C, *input_size]``.

    Images larger than ``input_size`` (a ``stored_size`` cache) are centre-cropped to it; then
    colour order and normalisation are applied (:func:`normalize`).
    """
    if isinstance(images, np.ndarray):
        writable = images.flags.writeable and images.flags.c_contiguous
        x = torch.from_numpy(images if writable else np.array(images))
    else:
        x = images
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.dtype != torch.uint8:
        raise DataError(
            f"to_tensor: expected uint8 [H, W, C] or [B, H, W, C] images, got {x.dtype} {tuple(x.shape)}"
        )
    x = center_crop(x.permute(0, 3, 1, 2), prep.input_size)
    return normalize(x, prep)


def preprocess(source: str | os.PathLike | np.ndarray | Image.Image, prep: Preprocessing) -> Tensor:
    """The whole inference pipeline for one image: ``to_tensor(decode_and_resize(source))``."""
    return to_tensor(decode_and_resize(source, prep), prep)
