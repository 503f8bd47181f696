"""A decoded-image cache, so epochs after the first never decode a JPEG again.

:func:`build_image_cache` decodes, centre-crops and resizes every image once
(:func:`~facemetric.data.transforms.decode_and_resize`) into a uint8 ``[N, H, W, C]`` ``.npy``
file that is then memory-mapped. It is written under a temporary name
(:func:`facemetric.io.temp_path_for`) and renamed: a failed or interrupted build deletes its
temporary, and the temporary of a killed build (SIGKILL) is removed by the next build in the
folder (:func:`facemetric.io.remove_stale_temp_files`), so no partial cache stays behind. A
sidecar ``<cache>.json`` describes what is in it (paths, stored size, crop, colour mode,
interpolation) and holds a hash of that description plus each file's size and modification
time. A later call with the same inputs reuses the file; any
change (a path, an image file, the size, the crop, ...) rebuilds it.

Decoding runs in a thread pool: Pillow releases the GIL while decoding and resizing, the
workers write straight into the memory map, and on this project's 2-core machine threads
were as fast as a process pool (about 1.1-1.3x serial for both, noisy) without its start-up
and pickling costs.

:class:`CachedImageDataset` serves whole batches from such an array (augmentation batched in
torch); :class:`ImageFileDataset` decodes on the fly for a ``DataLoader`` with workers and
returns the same tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from facemetric.data.transforms import (
    Preprocessing,
    augment,
    center_crop,
    decode_and_resize,
    normalize,
)
from facemetric.errors import DataError
from facemetric.io import (
    atomic_write_bytes,
    default_file_mode,
    fsync_dir,
    remove_stale_temp_files,
    temp_path_for,
)

CACHE_FORMAT = "facemetric-image-cache/1"
_AUG_SALT = 0xCAC4E


def sidecar_path(cache_path: str | os.PathLike) -> Path:
    """The sidecar JSON of a cache file: ``<cache_path>.json``."""
    return Path(os.fspath(cache_path) + ".json")


def cache_info(cache_path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of a cache (paths, stored_size, crop, mode, hash, skipped), or None."""
    try:
        return json.loads(sidecar_path(cache_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _as_prep(prep_or_size: Preprocessing | int | Sequence[int]) -> Preprocessing:
    if isinstance(prep_or_size, Preprocessing):
        return prep_or_size
    return Preprocessing(input_size=prep_or_size)  # type: ignore[arg-type]


def _describe(
    paths: Sequence[str | os.PathLike],
    root: str | os.PathLike | None,
    prep: Preprocessing,
    alignment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The sidecar content (without ``skipped``) for these inputs, including its hash."""
    if root is not None:
        base = Path(root).resolve()
        rel = []
        for p in paths:
            try:
                rel.append(Path(p).resolve().relative_to(base).as_posix())
            except ValueError:
                raise DataError(f"{p}: not under the cache root {root}") from None
    else:
        rel = [Path(p).as_posix() for p in paths]
    stats = []
    for p in paths:
        try:
            st = os.stat(p)
            stats.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((-1, -1))  # reported by the decoder
    h, w = prep.resize_size
    info: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "count": len(rel),
        "shape": [len(rel), h, w, prep.channels],
        "stored_size": [h, w],
        "crop": list(prep.crop) if prep.crop is not None else None,
        "mode": prep.decode_mode,
        "interpolation": prep.interpolation,
        "root": os.fspath(root) if root is not None else None,
        "paths": rel,
    }
    if alignment is not None:  # chips made by a detection + alignment step
        info["alignment"] = alignment
    digest = hashlib.sha256()
    keyed = {k: v for k, v in info.items() if k != "root"}
    digest.update(json.dumps(keyed, sort_keys=True).encode())
    digest.update(json.dumps(stats).encode())
    info["hash"] = digest.hexdigest()
    return info


def _try_reuse(cache_path: Path, info: dict[str, Any], skip_corrupt: bool) -> np.memmap | None:
    old = cache_info(cache_path)
    if not old or old.get("hash") != info["hash"] or not cache_path.is_file():
        return None
    if old.get("skipped") and not skip_corrupt:
        return None  # rebuild: the bad image raises a DataError naming it
    try:
        arr = np.lib.format.open_memmap(cache_path, mode="r")
    except (OSError, ValueError):
        return None
    if arr.dtype != np.uint8 or list(arr.shape) != info["shape"]:
        return None
    return arr


def _progress_bar(enabled: bool, total: int):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("caching images"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


def _fill(
    out: np.ndarray,
    paths: Sequence[str | os.PathLike],
    prep: Preprocessing,
    num_workers: int,
    progress: bool,
    skip_corrupt: bool,
    chunk_size: int = 64,
    aligner: Any = None,
) -> list[tuple[str, str]]:
    """Decode ``paths`` into ``out``; returns ``(path, error)`` of the images zeroed (skip)."""
    skipped: list[tuple[str, str]] = []
    if aligner is not None:
        num_workers = 0  # one detector, used from one thread

    def work(start: int, stop: int) -> int:
        for i in range(start, stop):
            try:
                item = paths[i] if aligner is None else aligner([paths[i]])[0]
                out[i] = decode_and_resize(item, prep)
            except DataError as exc:
                if not skip_corrupt:
                    raise
                out[i] = 0
                skipped.append((os.fspath(paths[i]), str(exc)))  # list.append is thread-safe
        return stop - start

    n = len(paths)
    chunks = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    with _progress_bar(progress, n) as bar:
        task = bar.add_task("cache", total=n)
        if num_workers <= 0:
            for s, e in chunks:
                bar.advance(task, work(s, e))
        else:
            with ThreadPoolExecutor(max_workers=num_workers) as ex:
                pending = {ex.submit(work, s, e) for s, e in chunks}
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        if fut.exception() is not None:
                            for other in pending:
                                other.cancel()
                            raise fut.exception()  # type: ignore[misc]
                        bar.advance(task, fut.result())
    skipped.sort()
    return skipped


def build_image_cache(
    paths: Sequence[str | os.PathLike],
    prep_or_size: Preprocessing | int | Sequence[int],
    cache_path: str | os.PathLike,
    num_workers: int = 2,
    progress: bool = True,
    root: str | os.PathLike | None = None,
    skip_corrupt: bool = False,
    aligner: Any = None,
) -> np.memmap:
    """Decode + centre crop + resize ``paths`` once into a memory-mapped uint8 ``[N, H, W, C]``.

    Args:
        paths: image files, in dataset order (row ``i`` is ``paths[i]``).
        prep_or_size: a :class:`Preprocessing` (its ``crop``, ``resize_size``, colour mode and
            interpolation are used) or an ``(H, W)``/int size (whole image, RGB, bilinear).
        cache_path: the ``.npy`` file; its sidecar is ``<cache_path>.json``.
        num_workers: decoding threads (0: decode in the calling thread).
        progress: show a rich progress bar (stderr) while building.
        root: store the paths in the sidecar relative to this folder.
        skip_corrupt: an unreadable image becomes an all-zero image, is listed in the
            sidecar's ``skipped`` (see :func:`cache_info`) and a warning is issued; otherwise
            a DataError names the file and no cache file is left behind.
        aligner: a detection + alignment step (:class:`facemetric.inference.alignment.CardAligner`)
            applied to each image before ``prep`` (the cache then holds aligned chips; its
            ``spec`` is part of the cache key).

    Returns the read-only memory map (reused as is when the sidecar matches the inputs).
    """
    prep = _as_prep(prep_or_size)
    paths = list(paths)
    if not paths:
        raise DataError(f"{cache_path}: no images to cache")
    cache_path = Path(cache_path)
    info = _describe(paths, root, prep, aligner.spec if aligner is not None else None)
    reused = _try_reuse(cache_path, info, skip_corrupt)
    if reused is not None:
        return reused

    side = sidecar_path(cache_path)
    side.unlink(missing_ok=True)  # never leave a sidecar that could match a half-built cache
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(cache_path.parent)  # caches of builds that were killed
    tmp = temp_path_for(cache_path)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=tuple(info["shape"]))
        skipped = _fill(out, paths, prep, num_workers, progress, skip_corrupt, aligner=aligner)
        out.flush()
        del out
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, cache_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(cache_path.parent)
    info["skipped"] = [p for p, _ in skipped]
    info["skip_reasons"] = [r for _, r in skipped]
    atomic_write_bytes(side, json.dumps(info, indent=1).encode())
    if skipped:
        warnings.warn(
            f"{cache_path}: {len(skipped)} unreadable image(s) stored as zeros "
            f"(first: {skipped[0][1]})",
            stacklevel=2,
        )
    return np.lib.format.open_memmap(cache_path, mode="r")


# ----------------------------------------------------------------------------- datasets
def _aug_generator(seed: int, epoch: int, stream: int, counter: int) -> torch.Generator:
    state = np.random.SeedSequence(
        [int(seed) % 2**64, int(epoch) % 2**64, _AUG_SALT, int(stream), int(counter) % 2**64]
    ).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return g


def _labels_tensor(labels: Any, n: int) -> Tensor:
    t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if t.ndim != 1 or t.shape[0] != n:
        raise DataError(f"labels: expected shape [{n}], got {tuple(t.shape)}")
    if n and int(t.min()) < 0:
        raise DataError("labels: expected non-negative identity ids")
    return t


class _Augmenting(torch.utils.data.Dataset):
    """Shared: (seed, epoch) bookkeeping and the train/test tensor path for uint8 NCHW batches."""

    prep: Preprocessing
    labels: Tensor

    def _setup(self, prep: Preprocessing, train: bool, random_crop: bool, flip: bool,
               padding: int, seed: int) -> None:
        if not isinstance(prep, Preprocessing):
            raise DataError(f"prep: expected a Preprocessing, got {type(prep).__name__}")
        if padding < 0:
            raise DataError(f"padding: expected >= 0, got {padding}")
        self.prep = prep
        self.train = bool(train)
        self.random_crop = bool(random_crop)
        self.flip = bool(flip)
        self.padding = int(padding)
        self.seed = int(seed)
        self.epoch = 0
        self.calls = 0  # get_batch calls in this epoch

    def set_epoch(self, epoch: int) -> None:
        """Augmentation of epoch ``e`` depends only on (seed, e, the batch's call number in the
        epoch) for :meth:`get_batch` and (seed, e, index) for ``dataset[index]``."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"set_epoch: expected a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)
        self.calls = 0

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def _transform(self, x: Tensor, g: torch.Generator | None) -> Tensor:
        """uint8 ``[B, C, H, W]`` -> float input; random crop/flip with ``g`` when training."""
        if self.train:
            return augment(x, self.prep, g, random_crop=self.random_crop, flip=self.flip,
                           padding=self.padding)
        return normalize(center_crop(x, self.prep.input_size), self.prep)

    def _item_generator(self, index: int) -> torch.Generator | None:
        return _aug_generator(self.seed, self.epoch, 1, index) if self.train else None


class CachedImageDataset(_Augmenting):
    """Batches from a decoded uint8 ``[N, H, W, C]`` array (usually :func:`build_image_cache`).

    ``get_batch(indices) -> (float32 [B, C, *input_size], labels [B])``. With ``train=True``
    each batch gets a random ``input_size`` crop (when ``random_crop`` and the stored images
    are larger, or ``padding > 0``) and a random horizontal flip (when ``flip``), drawn batched
    in torch from a generator seeded by (``seed``, epoch, call number within the epoch): call
    :meth:`set_epoch` at the start of each epoch and a resumed run repeats the augmentation of
    an uninterrupted one. With ``train=False`` the centre ``input_size`` crop, no flip.
    ``dataset[i]`` is one image ``[C, H, W]`` and its label (augmentation seeded by index).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray | Tensor,
        prep: Preprocessing,
        train: bool = False,
        random_crop: bool = True,
        flip: bool = True,
        padding: int = 0,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self._setup(prep, train, random_crop, flip, padding, seed)
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8:
            got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise DataError(f"images: expected a uint8 [N, H, W, C] array, got {got}")
        n, h, w, c = images.shape
        if n == 0:
            raise DataError("images: the cache is empty")
        if c != prep.channels:
            raise DataError(
                f"images: the cache has {c} channel(s), preprocessing color {prep.color!r} needs "
                f"{prep.channels}"
            )
        ih, iw = prep.input_size
        if h < ih or w < iw:
            raise DataError(
                f"images: cached images are {h}x{w}, smaller than input_size {ih}x{iw}"
            )
        self.images = images
        self.labels = _labels_tensor(labels, n)
        self.class_names = list(class_names) if class_names is not None else None

    @classmethod
    def from_folder(
        cls,
        folder: Any,
        prep: Preprocessing,
        cache_path: str | os.PathLike,
        num_workers: int = 2,
        progress: bool = True,
        skip_corrupt: bool = False,
        **options: Any,
    ) -> CachedImageDataset:
        """Build (or reuse) the cache of an :class:`~facemetric.data.folder.IdentityFolder`."""
        arr = build_image_cache(
            folder.paths, prep, cache_path, num_workers=num_workers, progress=progress,
            root=folder.root, skip_corrupt=skip_corrupt,
        )
        return cls(arr, folder.labels, prep, class_names=folder.classes, **options)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def get_batch(self, indices: Sequence[int] | np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
        idx = np.asarray(indices.cpu() if isinstance(indices, Tensor) else indices, dtype=np.int64)
        if idx.ndim != 1:
            raise DataError(f"get_batch: expected a 1-D list of indices, got shape {idx.shape}")
        x = torch.from_numpy(np.ascontiguousarray(self.images[idx])).permute(0, 3, 1, 2)
        g = None
        if self.train:
            g = _aug_generator(self.seed, self.epoch, 0, self.calls)
            self.calls += 1
        return self._transform(x, g), self.labels[torch.from_numpy(idx)]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        index = int(index)
        x = torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1)[None]
        return self._transform(x, self._item_generator(index))[0], self.labels[index]


class ImageFileDataset(_Augmenting):
    """Decodes image files on the fly (for a ``DataLoader`` with workers); no cache.

    ``dataset[i] -> (float32 [C, *input_size], label)``, equal to ``CachedImageDataset[i]`` for
    the same arguments (the same pixels, and in training the same index-seeded augmentation).
    Call :meth:`set_epoch` before each epoch (the trainer's DataLoader re-creates its workers
    every epoch, so they see the new epoch).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        labels: Sequence[int] | np.ndarray | Tensor,
        prep: Preprocessing,
        train: bool = False,
        random_crop: bool = True,
        flip: bool = True,
        padding: int = 0,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self._setup(prep, train, random_crop, flip, padding, seed)
        self.paths = list(paths)
        if not self.paths:
            raise DataError("paths: no images")
        self.labels = _labels_tensor(labels, len(self.paths))
        self.class_names = list(class_names) if class_names is not None else None

    @classmethod
    def from_folder(cls, folder: Any, prep: Preprocessing, **options: Any) -> ImageFileDataset:
        return cls(folder.paths, folder.labels, prep, class_names=folder.classes, **options)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        index = int(index)
        arr = decode_and_resize(self.paths[index], self.prep)
        x = torch.from_numpy(arr).permute(2, 0, 1)[None]
        return self._transform(x, self._item_generator(index))[0], self.labels[index]
