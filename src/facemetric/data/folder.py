"""A folder of identity sub-folders (``root/<identity>/<image>``), and LFW people files.

Only sub-directories of ``root`` are identities (files beside them, such as LFW's protocol
``.txt`` files or a ``README``, are ignored); identities are sorted by name and get labels
``0..K-1`` in that order; images are sorted by file name within each identity. Hidden files
(names starting with ``.``) are ignored.

What cannot be used is *skipped and counted*, never a traceback: identity folders that are
symlink loops, broken links, unreadable, not valid UTF-8 names, or a second link to a folder
already listed under another name; photos as
:func:`facemetric.data.image_io.scan_images` skips them (a directory named ``x.jpg``, symlink
loops, broken links, unreadable/empty/non-regular files, names that are not valid UTF-8).
``IdentityFolder.skip_report()`` lists them printably.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facemetric.data.image_io import (
    IMAGE_EXTENSIONS,
    Skip,
    SkipKind,
    display_path,
    file_skip,
    is_valid_name,
    scan_images,
    verify_image,
)
from facemetric.errors import DataError


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: people file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read people file ({exc.__class__.__name__})") from None


def _count(path: Path, lineno: int, line: str, what: str) -> int:
    tokens = line.split()
    if len(tokens) != 1 or not tokens[0].isdigit():
        raise DataError(f"{path.name}:{lineno}: expected {what}, got {line.strip()!r}")
    return int(tokens[0])


def read_people_sets(path: str | os.PathLike) -> list[list[str]]:
    """Names in an LFW people file, per set.

    Two formats (whitespace or tab separated):

    * View 1 (``peopleDevTrain.txt`` / ``peopleDevTest.txt``): a count ``N``, then ``N`` lines
      ``name<TAB>count`` -> one set;
    * View 2 (``people.txt``): the number of sets ``S``, then per set a count line ``N`` followed
      by ``N`` lines ``name<TAB>count`` -> ``S`` sets.

    The format is told apart by the second non-empty line (a lone count means View 2).
    Raises DataError ``"<file>:<line>: expected ..."`` when the file does not follow either.
    """
    path = Path(path)
    lines = [(i + 1, ln) for i, ln in enumerate(_read_lines(path)) if ln.strip()]
    if not lines:
        raise DataError(f"{path.name}: empty people file (expected a count on the first line)")
    first = _count(path, lines[0][0], lines[0][1], "a count (number of people or of sets)")
    pos = 1

    def read_block(n: int) -> list[str]:
        nonlocal pos
        names = []
        for _ in range(n):
            if pos >= len(lines):
                raise DataError(
                    f"{path.name}: ended early (expected {n} 'name count' lines in this block)"
                )
            lineno, line = lines[pos]
            tokens = line.split()
            if len(tokens) != 2 or not tokens[1].isdigit():
                raise DataError(f"{path.name}:{lineno}: expected 'name count', got {line.strip()!r}")
            names.append(tokens[0])
            pos += 1
        return names

    view2 = len(lines) > 1 and len(lines[1][1].split()) == 1
    if not view2:
        sets = [read_block(first)]
    else:
        sets = []
        for _ in range(first):
            if pos >= len(lines):
                raise DataError(f"{path.name}: ended early (expected {first} sets)")
            lineno, line = lines[pos]
            n = _count(path, lineno, line, "the number of people in the next set")
            pos += 1
            sets.append(read_block(n))
    if pos != len(lines):
        lineno, line = lines[pos]
        raise DataError(f"{path.name}:{lineno}: unexpected extra line {line.strip()!r}")
    return sets


def read_people_file(path: str | os.PathLike) -> list[str]:
    """All names of an LFW people file (View 1, or all sets of View 2), in file order."""
    return [name for names in read_people_sets(path) for name in names]


class IdentityFolder:
    """Labelled image paths from ``root/<identity>/<image>``.

    Args:
        root: the dataset folder.
        min_images: keep identities with at least this many (readable) images.
        identities: only these identities: a list of names or the path of an LFW people file
            (:func:`read_people_file`); every name must be a folder under ``root``.
        skip_corrupt: check every image with Pillow's fast ``verify()`` and drop the ones that
            fail (counted in ``summary()["skipped"]``, listed in ``skipped_paths``). Otherwise
            a bad image raises DataError naming the file when it is read.
        extensions: image file extensions (case-insensitive).

    Attributes: ``classes`` (names, label order), ``samples`` (``(path, label)``), ``paths``,
    ``labels`` (LongTensor), ``num_classes``, ``skipped_paths`` (skipped folders and photos, in
    listing order), ``skip_reasons`` / ``skip_kinds`` (per skipped path); ``skip_report()``
    gives them printable, ``summary()`` counts them (``skipped``, ``skipped_by_kind``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        min_images: int = 1,
        identities: Sequence[str] | str | os.PathLike | None = None,
        skip_corrupt: bool = False,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    ) -> None:
        self.root = Path(root)
        problem = file_skip(self.root)
        if problem is None or self.root.is_file():
            raise DataError(
                f"{display_path(self.root)}: expected a folder of identity sub-folders, got a file"
            )
        if problem.kind is SkipKind.MISSING:
            raise DataError(f"{display_path(self.root)}: dataset folder not found")
        if problem.kind is not SkipKind.DIRECTORY:
            raise DataError(f"{display_path(self.root)}: dataset folder: {problem.reason}")
        if isinstance(min_images, bool) or not isinstance(min_images, (int, np.integer)) or min_images < 1:
            raise DataError(f"min_images: expected a positive integer, got {min_images!r}")
        self.min_images = int(min_images)

        self.skipped_paths: list[Path] = []
        self.skip_reasons: dict[Path, str] = {}
        self.skip_kinds: dict[Path, SkipKind] = {}
        folders = self._identity_folders()
        if not folders:
            raise DataError(
                f"{display_path(self.root)}: no identity sub-folders (expected one folder of "
                f"images per identity{self._skipped_note()})"
            )
        if identities is not None:
            if isinstance(identities, (str, os.PathLike)):
                source = Path(identities).name
                wanted = read_people_file(identities)
            else:
                source = "the identity list"
                wanted = [str(n) for n in identities]
            present = set(folders)
            missing = [n for n in dict.fromkeys(wanted) if n not in present]
            if missing:
                why = self.skip_reasons.get(self.root / missing[0])
                raise DataError(
                    f"{display_path(self.root)}: {len(missing)} identities of {source} have no "
                    f"folder here (first: {missing[0]!r}{': ' + why if why else ''})"
                )
            folders = sorted(set(wanted))
        self.identity_folders = len(folders)

        kept: list[tuple[str, list[Path]]] = []
        for name in folders:
            try:
                images, bad = scan_images(self.root / name, extensions)
            except OSError as exc:  # listed a moment ago: unreadable or gone
                self._skip(self.root / name, Skip(SkipKind.UNREADABLE, f"cannot list folder ({exc.strerror or type(exc).__name__})"))
                continue
            for p, skip in bad.items():
                self._skip(p, skip)
            if skip_corrupt:
                good = []
                for p in images:
                    reason = verify_image(p)
                    if reason is None:
                        good.append(p)
                    else:
                        self._skip(p, Skip(SkipKind.UNREADABLE, reason))
                images = good
            if len(images) >= self.min_images:
                kept.append((name, images))
        if not kept:
            raise DataError(
                f"{display_path(self.root)}: no identity has at least {self.min_images} images "
                f"({len(folders)} identity folders checked, extensions {', '.join(extensions)}"
                f"{self._skipped_note()})"
            )
        self.classes: list[str] = [name for name, _ in kept]
        self.samples: list[tuple[Path, int]] = [
            (p, label) for label, (_, images) in enumerate(kept) for p in images
        ]
        self.paths: list[Path] = [p for p, _ in self.samples]
        self.labels = torch.tensor([lab for _, lab in self.samples], dtype=torch.long)

    def _skip(self, path: Path, skip: Skip) -> None:
        self.skipped_paths.append(path)
        self.skip_reasons[path] = skip.reason
        self.skip_kinds[path] = skip.kind

    def _skipped_note(self) -> str:
        if not self.skipped_paths:
            return ""
        first = self.skipped_paths[0]
        return (
            f"; {len(self.skipped_paths)} entries skipped, first: {display_path(first)}: "
            f"{self.skip_reasons[first]}"
        )

    def _identity_folders(self) -> list[str]:
        """Names of the usable identity sub-folders, sorted; the others are skipped."""
        names: list[str] = []
        real: dict[tuple[int, int], str] = {}
        with os.scandir(self.root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                st = os.stat(entry.path)
            except OSError:
                if entry.is_symlink():  # a loop or a dangling link where a folder may be meant
                    self._skip(path, file_skip(path) or Skip(SkipKind.UNREADABLE, "cannot stat"))
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue  # a file beside the identities (README, pairs.txt): not an identity
            if not is_valid_name(entry.name):
                self._skip(path, Skip(SkipKind.BAD_NAME, "identity folder name is not valid UTF-8"))
                continue
            if not os.access(entry.path, os.R_OK | os.X_OK):
                self._skip(path, Skip(SkipKind.PERMISSION, "permission denied"))
                continue
            key = (st.st_dev, st.st_ino)
            if key in real:
                self._skip(path, Skip(SkipKind.DUPLICATE, f"same folder as identity {real[key]!r}"))
                continue
            real[key] = entry.name
            names.append(entry.name)
        return names

    def skip_report(self) -> dict[str, str]:
        """``{printable path: reason}`` of every skipped folder or photo (names that are not
        valid UTF-8 shown with ``\\xNN`` escapes: safe to print, store in JSON or sqlite)."""
        return {display_path(p): self.skip_reasons[p] for p in self.skipped_paths}

    def groups(self, per_identity: int | None = None) -> list[tuple[str, list[Path]]]:
        """``(identity, its image paths)`` in label order; ``per_identity``: only the first N
        paths (by name) of each."""
        grouped: list[list[Path]] = [[] for _ in self.classes]
        for p, label in self.samples:
            grouped[label].append(p)
        return [(name, own[:per_identity] if per_identity else own)
                for name, own in zip(self.classes, grouped, strict=True)]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def summary(self) -> dict[str, Any]:
        counts = np.bincount(self.labels.numpy(), minlength=self.num_classes)
        return {
            "root": str(self.root),
            "identities": self.num_classes,
            "images": len(self.samples),
            "min_per_identity": int(counts.min()),
            "median_per_identity": float(np.median(counts)),
            "max_per_identity": int(counts.max()),
            "identities_with_2_or_more": int((counts >= 2).sum()),
            "identities_dropped": self.identity_folders - self.num_classes,
            "skipped": len(self.skipped_paths),
            "skipped_by_kind": {
                k.value: n for k in SkipKind
                if (n := sum(1 for v in self.skip_kinds.values() if v is k))
            },
        }

    def __repr__(self) -> str:
        s = self.summary()
        return f"IdentityFolder({display_path(self.root)!r}: {s['identities']} identities, {s['images']} images)"
