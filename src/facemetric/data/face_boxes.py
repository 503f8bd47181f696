"""Reader of LFW-5590's ``annotations.csv``: one labelled face box and 5 landmarks per photo.

The file (see ``../shared/data/lfw-5590/SOURCE.md``) has the header::

    split,path,width,height,x1,y1,x2,y2,lx1,ly1,...,lx5,ly5,identity

with the box corners ``(x1, y1, x2, y2)`` = (left, top, right, bottom) and the landmarks
(1 left eye, 2 right eye, 3 nose tip, 4 left mouth corner, 5 right mouth corner; image
left/right) in the pixels of the stored image of size ``width`` x ``height``.

:func:`read_face_boxes` returns :class:`FaceBoxRecord` rows (pixel coordinates, float32
numpy arrays) and refuses a bad row with one :class:`~facemetric.errors.DataError` line that
names the file, the line number and the field. :meth:`FaceBoxRecord.relative_box` gives the
box relative to the image (0..1), the convention of :mod:`facemetric.detect`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facemetric.errors import DataError

__all__ = ["ANNOTATION_COLUMNS", "FaceBoxRecord", "read_face_boxes", "SPLITS"]

SPLITS = ("train", "test")
_BOX = ("x1", "y1", "x2", "y2")
_LANDMARKS = tuple(f"l{axis}{i}" for i in range(1, 6) for axis in ("x", "y"))
ANNOTATION_COLUMNS = ("split", "path", "width", "height", *_BOX, *_LANDMARKS, "identity")


@dataclass(frozen=True)
class FaceBoxRecord:
    """One labelled photo: ``box`` (4,) and ``landmarks`` (5, 2) in pixels of the stored image."""

    split: str
    path: Path  #: absolute path of the photo
    relpath: str  #: path as written in the file (relative to its folder)
    width: int
    height: int
    box: np.ndarray
    landmarks: np.ndarray
    identity: str

    def relative_box(self) -> np.ndarray:
        """The box as ``(xmin, ymin, xmax, ymax)`` relative to the image size (0..1)."""
        scale = np.array([self.width, self.height, self.width, self.height], dtype=np.float32)
        return (self.box / scale).astype(np.float32)

    def relative_landmarks(self) -> np.ndarray:
        """Landmarks (5, 2) relative to the image size (0..1)."""
        return (self.landmarks / np.array([self.width, self.height], dtype=np.float32)).astype(np.float32)


def _number(text: str, where: str, field: str, integer: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: field {field!r} is {text!r}, expected a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: field {field!r} is {text!r}, expected a finite number")
    if integer and (value != int(value) or value <= 0):
        raise DataError(f"{where}: field {field!r} is {text!r}, expected a positive integer")
    return value


def read_face_boxes(
    csv_path: str | Path,
    split: str | Sequence[str] | None = None,
    check_files: bool = True,
) -> list[FaceBoxRecord]:
    """Read ``annotations.csv`` (rows in file order), optionally only ``split`` (a name or names).

    Each row must have every column of :data:`ANNOTATION_COLUMNS`, a split in :data:`SPLITS`,
    a positive integer size, a non-empty box ``0 <= x1 < x2 <= width`` (same for y) and
    finite landmarks. With ``check_files`` every photo must exist next to the file.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: annotation file not found (expected lfw-5590's annotations.csv)")
    wanted: set[str] | None
    if split is None:
        wanted = None
    else:
        wanted = {split} if isinstance(split, str) else set(split)
        unknown = sorted(wanted - set(SPLITS))
        if unknown:
            raise DataError(f"{csv_path}: unknown split {unknown[0]!r}, expected one of {', '.join(SPLITS)}")
    root = csv_path.parent
    records: list[FaceBoxRecord] = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in ANNOTATION_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{csv_path}: header lacks column {missing[0]!r} (expected {','.join(ANNOTATION_COLUMNS)})")
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            if None in row or any(row.get(c) is None for c in ANNOTATION_COLUMNS):
                raise DataError(f"{where}: expected {len(header)} comma-separated fields")
            row_split = row["split"].strip()
            if row_split not in SPLITS:
                raise DataError(f"{where}: field 'split' is {row_split!r}, expected one of {', '.join(SPLITS)}")
            if wanted is not None and row_split not in wanted:
                continue
            width = int(_number(row["width"], where, "width", integer=True))
            height = int(_number(row["height"], where, "height", integer=True))
            box = np.array([_number(row[c], where, c) for c in _BOX], dtype=np.float32)
            x1, y1, x2, y2 = (float(v) for v in box)
            if not (0 <= x1 < x2 <= width):
                raise DataError(f"{where}: box x1={x1:g}, x2={x2:g}: expected 0 <= x1 < x2 <= width={width}")
            if not (0 <= y1 < y2 <= height):
                raise DataError(f"{where}: box y1={y1:g}, y2={y2:g}: expected 0 <= y1 < y2 <= height={height}")
            marks = np.array([_number(row[c], where, c) for c in _LANDMARKS], dtype=np.float32).reshape(5, 2)
            relpath = row["path"].strip()
            if not relpath:
                raise DataError(f"{where}: field 'path' is empty, expected a photo path")
            path = root / relpath
            if check_files and not path.is_file():
                raise DataError(f"{where}: photo {relpath!r} not found under {root}")
            records.append(
                FaceBoxRecord(row_split, path, relpath, width, height, box, marks, row["identity"].strip())
            )
    return records
