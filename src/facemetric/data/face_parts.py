"""LFW Part Labels: funneled 150x150 LFW photos with per-pixel label maps and ``split.csv``.

Folder layout (``../shared/data/lfw-parts``, see its ``SOURCE.md``)::

    <root>/split.csv                      columns split,image,label,identity
    <root>/images/<Name>/<Name>_NNNN.jpg  RGB photo
    <root>/labels/<Name>/<Name>_NNNN.png  mode-L map: 0 background, 1 face/skin, 2 hair

:func:`read_split` reads ``split.csv`` (one-line :class:`~facemetric.errors.DataError` naming the
file, the line and what was expected), :class:`FaceParts` loads the photos (through the one
loader, :func:`facemetric.data.image_io.read_image`) and label maps of one split as arrays and
checks that each map has its photo's size and only known labels.

>>> from facemetric.data.face_parts import CLASS_NAMES
>>> CLASS_NAMES
('background', 'skin', 'hair')
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facemetric.data.image_io import read_image
from facemetric.errors import DataError

#: label value -> class name (the label maps' values are the indices)
CLASS_NAMES: tuple[str, ...] = ("background", "skin", "hair")
#: the split names ``split.csv`` may use
SPLITS: tuple[str, ...] = ("train", "val", "test")
_COLUMNS = ("split", "image", "label", "identity")


@dataclass(frozen=True)
class PartRecord:
    """One row of ``split.csv`` with absolute paths."""

    split: str
    image: Path
    label: Path
    identity: str


def read_split(root: str | os.PathLike) -> list[PartRecord]:
    """All rows of ``<root>/split.csv`` in file order (paths resolved against ``root``)."""
    root = Path(root)
    path = root / "split.csv"
    if not root.is_dir():
        raise DataError(f"{root}: LFW Part Labels folder not found")
    if not path.is_file():
        raise DataError(f"{path}: split file not found (expected columns {','.join(_COLUMNS)})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (expected a CSV file)") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or tuple(c.strip() for c in rows[0]) != _COLUMNS:
        got = ",".join(rows[0]) if rows else "nothing"
        raise DataError(f"{path}:1: expected the header {','.join(_COLUMNS)}, got {got!r}")
    records = []
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(_COLUMNS):
            raise DataError(f"{path}:{n}: expected {len(_COLUMNS)} columns, got {len(row)}")
        split, image, label, identity = (c.strip() for c in row)
        if split not in SPLITS:
            raise DataError(f"{path}:{n}: split must be one of {', '.join(SPLITS)}, got {split!r}")
        records.append(PartRecord(split, root / image, root / label, identity))
    if not records:
        raise DataError(f"{path}: no rows after the header")
    return records


def read_label_map(path: str | os.PathLike, num_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """A label PNG as uint8 ``[H, W]``; values must be below ``num_classes``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label map not found")
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P"):
                raise DataError(f"{path}: label map mode {img.mode}, expected 8-bit grey (L)")
            arr = np.array(img, dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read label map ({exc.__class__.__name__})") from None
    top = int(arr.max()) if arr.size else 0
    if top >= num_classes:
        raise DataError(f"{path}: label value {top} found, expected values 0..{num_classes - 1}")
    return arr


class FaceParts:
    """One split of LFW Part Labels in memory: ``images`` uint8 ``[N, H, W, 3]``, ``labels``
    uint8 ``[N, H, W]``, ``records`` (the ``split.csv`` rows), ``identities``.

    ``limit`` keeps the first ``limit`` rows (for tests). Every map must have its photo's size.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", limit: int | None = None):
        if split not in SPLITS:
            raise DataError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        self.root = Path(root)
        self.split = split
        rows = [r for r in read_split(self.root) if r.split == split]
        if limit is not None:
            rows = rows[: int(limit)]
        if not rows:
            raise DataError(f"{self.root / 'split.csv'}: no rows for split {split!r}")
        images, labels = [], []
        for r in rows:
            img = read_image(r.image, "RGB")
            lab = read_label_map(r.label)
            if lab.shape != img.shape[:2]:
                raise DataError(
                    f"{r.label}: label map is {lab.shape[1]}x{lab.shape[0]}, "
                    f"its photo {r.image.name} is {img.shape[1]}x{img.shape[0]}"
                )
            images.append(img)
            labels.append(lab)
        if len({a.shape for a in images}) != 1:
            raise DataError(f"{self.root}: photos of split {split!r} differ in size")
        self.records = rows
        self.images = np.stack(images)
        self.labels = np.stack(labels)

    @property
    def identities(self) -> list[str]:
        return [r.identity for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def class_shares(self) -> np.ndarray:
        """Fraction of pixels of each class (``[len(CLASS_NAMES)]``)."""
        counts = np.bincount(self.labels.ravel(), minlength=len(CLASS_NAMES))
        return counts / max(counts.sum(), 1)


__all__ = ["CLASS_NAMES", "SPLITS", "FaceParts", "PartRecord", "read_label_map", "read_split"]
