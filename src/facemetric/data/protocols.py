"""Verification pair protocols: LFW ``pairs.txt`` files, generated folder pairs, insightface ``.bin``.

LFW pair files (tab or space separated):

* View 2 ``pairs.txt``: header ``10 300``; then per fold 300 matched lines ``name n1 n2`` followed
  by 300 mismatched lines ``name1 n1 name2 n2``. Fold ``k`` is the ``k``-th block of 600 lines.
* View 1 ``pairsDevTrain.txt`` / ``pairsDevTest.txt``: header ``N``; then ``N`` matched lines and
  ``N`` mismatched lines, with no folds. So that the 10-fold protocol still runs, each half is
  split into 10 consecutive chunks by :func:`consecutive_folds` (``min(10, N)`` chunks, the
  first ``N % 10`` one longer) and chunk ``k`` of both halves is fold ``k``.

Image numbers are 1-based: ``name 3`` is ``<root>/name/name_0003.<ext>``, with any image
extension the loaders accept (:data:`~facemetric.data.image_io.IMAGE_EXTENSIONS`, any case):
one directory listing per identity finds ``name_0003.jpg``, ``.png``, ``.pgm``, ...; when
several exist, ``.jpg`` is preferred, then the order of ``IMAGE_EXTENSIONS``. (ORL's
``s1/1.pgm`` layout does not follow LFW naming, so a pairs file cannot name its photos.)
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemetric.data.image_io import IMAGE_EXTENSIONS, decode_image_bytes, file_skip
from facemetric.data.pairs import generate_pairs
from facemetric.errors import ConfigError, DataError
from facemetric.io import atomic_write_bytes

_LINE_FORMS = "expected 'name n1 n2' or 'name1 n1 name2 n2'"
_IMAGE_NAME = re.compile(r"^(?P<name>.+)_(?P<num>\d{4,})\.(?P<ext>[A-Za-z0-9]+)$")


@dataclass
class PairSet:
    """Verification pairs of image files.

    ``paths1[i]``, ``paths2[i]``: the two images; ``issame[i]``: genuine pair; ``fold[i]``: the
    cross-validation fold (0-based); ``names[i]``: ``(name1, name2)`` when known; ``skipped``:
    pairs dropped because an image was missing (``on_missing="skip"``).
    """

    paths1: list[str]
    paths2: list[str]
    issame: np.ndarray
    fold: np.ndarray
    names: list[tuple[str, str]] | None = None
    skipped: int = 0
    skipped_paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.paths1 = [os.fspath(p) for p in self.paths1]
        self.paths2 = [os.fspath(p) for p in self.paths2]
        self.issame = np.asarray(self.issame, dtype=bool)
        self.fold = np.asarray(self.fold, dtype=np.int64)
        n = len(self.paths1)
        if len(self.paths2) != n or self.issame.shape != (n,) or self.fold.shape != (n,):
            raise DataError(
                f"pairs: paths1, paths2, issame and fold must have the same length, got "
                f"{n}, {len(self.paths2)}, {self.issame.shape}, {self.fold.shape}"
            )
        if self.names is not None and len(self.names) != n:
            raise DataError(f"pairs: names has {len(self.names)} entries for {n} pairs")

    def __len__(self) -> int:
        return len(self.paths1)

    @property
    def num_folds(self) -> int:
        return int(self.fold.max()) + 1 if len(self) else 0

    def unique_paths(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(paths, first, second)``: each image once, and the pairs as indices into it."""
        index: dict[str, int] = {}
        for p in (*self.paths1, *self.paths2):
            index.setdefault(p, len(index))
        first = np.array([index[p] for p in self.paths1], dtype=np.int64)
        second = np.array([index[p] for p in self.paths2], dtype=np.int64)
        return list(index), first, second


def _image_path(root: Path, name: str, num: int, ext: str) -> str:
    return os.fspath(root / name / f"{name}_{num:04d}.{ext}")


class _PhotoFinder:
    """``<root>/<name>/<name>_NNNN.<any image extension>``: one listing per identity, cached."""

    def __init__(self, root: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS):
        self.root = root
        exts = [e.lower() for e in extensions]
        # .jpg first (LFW's own), then the order of ``extensions``
        self.rank = {e: i for i, e in enumerate(sorted(exts, key=lambda e: (e != ".jpg", exts.index(e))))}
        self.listings: dict[str, dict[str, str]] = {}

    def _listing(self, name: str) -> dict[str, str]:
        found = self.listings.get(name)
        if found is None:
            best: dict[str, tuple[int, str]] = {}
            try:
                with os.scandir(self.root / name) as it:
                    for entry in it:
                        stem, ext = os.path.splitext(entry.name)
                        rank = self.rank.get(ext.lower())
                        if rank is not None and (stem not in best or rank < best[stem][0]):
                            if file_skip(entry.path) is None:
                                best[stem] = (rank, entry.path)
            except OSError:  # no such identity folder (or not a readable one)
                pass
            found = self.listings[name] = {stem: path for stem, (_, path) in best.items()}
        return found

    def __call__(self, name: str, num: int) -> tuple[str, bool]:
        """``(path, found)``: the photo, or ``<root>/<name>/<name>_NNNN.*`` when none."""
        stem = f"{name}_{num:04d}"
        path = self._listing(name).get(stem)
        return (path, True) if path is not None else (os.fspath(self.root / name / stem) + ".*", False)


def _parse_pair_line(fname: str, lineno: int, line: str) -> tuple[str, int, str, int]:
    tokens = line.split()
    try:
        if len(tokens) == 3:
            name1, name2, n1, n2 = tokens[0], tokens[0], int(tokens[1]), int(tokens[2])
        elif len(tokens) == 4:
            name1, n1, name2, n2 = tokens[0], int(tokens[1]), tokens[2], int(tokens[3])
        else:
            raise ValueError
        if n1 < 1 or n2 < 1:
            raise ValueError
    except ValueError:
        raise DataError(f"{fname}:{lineno}: {_LINE_FORMS}, got {line.strip()!r}") from None
    return name1, n1, name2, n2


def read_lfw_pairs(
    pairs_file: str | os.PathLike,
    root: str | os.PathLike,
    ext: str | None = None,
    on_missing: str = "error",
) -> PairSet:
    """Parse an LFW pair file (View 2 ``pairs.txt`` or View 1 ``pairsDev*.txt``; see module doc).

    ``ext=None``: each photo ``<name>_NNNN`` is found with any accepted image extension (see
    the module docstring); ``ext="png"``: only that exact name is used.
    ``on_missing="error"``: any image not found under ``root`` raises a DataError naming how
    many are missing and the first one; ``"skip"``: pairs with a missing image are dropped and
    counted in ``PairSet.skipped``.
    """
    if on_missing not in ("error", "skip"):
        raise ConfigError(f"on_missing: expected 'error' or 'skip', got {on_missing!r}")
    pairs_file, root = Path(pairs_file), Path(root)
    fname = pairs_file.name
    try:
        raw = pairs_file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{pairs_file}: pair file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{pairs_file}: cannot read pair file ({exc.__class__.__name__})") from None
    lines = [(i + 1, ln) for i, ln in enumerate(raw) if ln.strip()]
    if not lines:
        raise DataError(f"{fname}: empty (expected a header 'folds pairs_per_half' or 'N')")
    head_no, head = lines[0]
    tokens = head.split()
    if len(tokens) in (1, 2) and all(t.isdigit() and int(t) > 0 for t in tokens):
        view1 = len(tokens) == 1
        n_folds, half = (1, int(tokens[0])) if view1 else (int(tokens[0]), int(tokens[1]))
    else:
        raise DataError(
            f"{fname}:{head_no}: expected a header 'folds pairs_per_half' (View 2, e.g. '10 300') "
            f"or 'N' (View 1), got {head.strip()!r}"
        )
    body = lines[1:]
    expected = n_folds * 2 * half
    if len(body) != expected:
        raise DataError(
            f"{fname}: the header {head.strip()!r} announces {expected} pair lines, "
            f"found {len(body)}"
        )
    paths1, paths2, issame, folds, names = [], [], [], [], []
    exists: dict[str, bool] = {}
    find = _PhotoFinder(root)
    view1_folds = consecutive_folds(half, 10) if view1 else None
    for k, (lineno, line) in enumerate(body):
        name1, n1, name2, n2 = _parse_pair_line(fname, lineno, line)
        fold, pos = divmod(k, 2 * half)
        matched = pos < half
        if matched != (len(line.split()) == 3):
            want = "a matched pair 'name n1 n2'" if matched else "a mismatched pair 'name1 n1 name2 n2'"
            raise DataError(
                f"{fname}:{lineno}: expected {want} (each block of {2 * half} lines has {half} "
                f"matched then {half} mismatched), got {line.strip()!r}"
            )
        if view1:
            fold = int(view1_folds[pos if matched else pos - half])
        for (name, num), paths in (((name1, n1), paths1), ((name2, n2), paths2)):
            if ext is None:
                path, ok = find(name, num)
            else:
                path = _image_path(root, name, num, ext)
                ok = exists[path] if path in exists else file_skip(path) is None
            exists.setdefault(path, ok)  # file order, so "first" missing is the first named
            paths.append(path)
        issame.append(matched)
        folds.append(fold)
        names.append((name1, name2))

    missing = [p for p, ok in exists.items() if not ok]
    keep = list(range(len(paths1)))
    if missing:
        if on_missing == "error":
            raise DataError(
                f"{fname}: {len(missing)} of the {len(exists)} images it names are missing under "
                f"{root} (first: {missing[0]})"
            )
        keep = [i for i in keep if exists[paths1[i]] and exists[paths2[i]]]
    return PairSet(
        paths1=[paths1[i] for i in keep],
        paths2=[paths2[i] for i in keep],
        issame=np.array([issame[i] for i in keep], dtype=bool),
        fold=np.array([folds[i] for i in keep], dtype=np.int64),
        names=[names[i] for i in keep],
        skipped=len(paths1) - len(keep),
        skipped_paths=missing,
    )


def _name_and_number(path: str, root: Path) -> tuple[str, int]:
    p = Path(path)
    try:
        rel = p.relative_to(root)
    except ValueError:
        rel = None
    m = _IMAGE_NAME.match(p.name)
    if rel is None or len(rel.parts) != 2 or m is None or m.group("name") != rel.parts[0]:
        raise DataError(
            f"{path}: expected the LFW layout <root>/<name>/<name>_NNNN.<ext> under {root}"
        )
    return m.group("name"), int(m.group("num"))


def write_lfw_pairs(path: str | os.PathLike, pairs: PairSet, root: str | os.PathLike) -> None:
    """Write ``pairs`` as a View 2 style LFW pair file (atomically).

    Header ``folds pairs_per_half``; then per fold its genuine pairs (``name n1 n2``) followed
    by its impostor pairs (``name1 n1 name2 n2``), tab-separated, in their order in ``pairs``.
    Every fold must hold the same number of genuine and of impostor pairs, and every path must
    follow ``<root>/<name>/<name>_NNNN.<ext>``. :func:`read_lfw_pairs` reads it back.
    """
    root = Path(root)
    if len(pairs) == 0:
        raise DataError(f"{path}: no pairs to write")
    folds = np.unique(pairs.fold)
    if folds[0] != 0 or folds[-1] != len(folds) - 1:
        raise DataError(f"{path}: folds must be numbered 0..K-1, got {folds.tolist()}")
    half = int((pairs.issame & (pairs.fold == 0)).sum())
    for f in folds:
        in_fold = pairs.fold == f
        n_same, n_diff = int(pairs.issame[in_fold].sum()), int((~pairs.issame[in_fold]).sum())
        if n_same != half or n_diff != half:
            raise DataError(
                f"{path}: every fold needs the same number of genuine and impostor pairs "
                f"({half} + {half} in fold 0), fold {f} has {n_same} + {n_diff}"
            )
    out = [f"{len(folds)}\t{half}"]
    for f in folds:
        for same in (True, False):
            for i in np.flatnonzero((pairs.fold == f) & (pairs.issame == same)):
                name1, n1 = _name_and_number(pairs.paths1[i], root)
                name2, n2 = _name_and_number(pairs.paths2[i], root)
                if same:
                    if name1 != name2:
                        raise DataError(
                            f"{path}: pair {i} is marked genuine but joins {name1} and {name2}"
                        )
                    out.append(f"{name1}\t{n1}\t{n2}")
                else:
                    out.append(f"{name1}\t{n1}\t{name2}\t{n2}")
    atomic_write_bytes(path, ("\n".join(out) + "\n").encode("utf-8"))


def generate_folder_pairs(
    folder: Any, pairs_per_fold: int = 600, n_folds: int = 10, seed: int = 0
) -> PairSet:
    """Seeded balanced pairs of an :class:`~facemetric.data.folder.IdentityFolder`
    (:func:`facemetric.data.pairs.generate_pairs` on ``folder.labels``)."""
    labels = folder.labels.numpy() if hasattr(folder.labels, "numpy") else np.asarray(folder.labels)
    pl = generate_pairs(labels, pairs_per_fold=pairs_per_fold, n_folds=n_folds, seed=seed)
    paths = [os.fspath(p) for p in folder.paths]
    classes = folder.classes
    return PairSet(
        paths1=[paths[i] for i in pl.first],
        paths2=[paths[i] for i in pl.second],
        issame=pl.issame,
        fold=pl.fold,
        names=[(classes[labels[a]], classes[labels[b]]) for a, b in zip(pl.first, pl.second, strict=True)],
    )


# ------------------------------------------------------------------------ insightface .bin
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("__builtin__", "bytearray"),
    ("builtins", "bytearray"),
    ("__builtin__", "set"),
    ("builtins", "set"),
}


class _BinUnpickler(pickle.Unpickler):
    """Only the few globals a ``.bin`` set needs (lists of bytes / numpy arrays, bools):
    unpickling an arbitrary file would otherwise run arbitrary code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _as_bytes(item: Any) -> bytes | None:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    if isinstance(item, np.ndarray) and item.dtype.kind == "S":
        return bytes(item.item())
    return None


def consecutive_folds(n_pairs: int, n_folds: int = 10) -> np.ndarray:
    """Fold ids ``[n_pairs]`` (int64) of ``k = min(n_folds, n_pairs)`` consecutive blocks, the
    sizes of scikit-learn's ``KFold(k, shuffle=False)`` (facenet's and insightface's split):
    the first ``n_pairs % k`` blocks hold ``n_pairs // k + 1`` pairs, the others
    ``n_pairs // k``. The one fold splitter: the evaluator's default folds
    (:func:`facemetric.eval.verification.evaluate_verification`) and LFW View 1 use it."""
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs < 0:
        raise ConfigError(f"n_pairs: expected an integer >= 0, got {n_pairs!r}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 1:
        raise ConfigError(f"n_folds: expected an integer >= 1, got {n_folds!r}")
    k = max(1, min(int(n_folds), int(n_pairs)))
    sizes = np.full(k, int(n_pairs) // k, dtype=np.int64)
    sizes[: int(n_pairs) % k] += 1
    return np.repeat(np.arange(k, dtype=np.int64), sizes)


def read_bin_pairs(path: str | os.PathLike) -> tuple[list[np.ndarray], np.ndarray]:
    """An insightface ``.bin`` verification set (lfw.bin, cfp_fp.bin, agedb_30.bin, ...).

    The file is a pickle of ``(bins, issame_list)``: ``bins`` the encoded images (JPEG/PNG
    bytes), pair ``i`` is images ``(2i, 2i+1)``. Returns the decoded uint8 ``[H, W, 3]`` images
    and ``issame [N]``. The protocol uses 10 folds of consecutive pairs:
    ``consecutive_folds(len(issame))``. No mxnet needed; only plain data is unpickled.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = _BinUnpickler(fh, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: .bin file not found") from None
    except Exception as exc:
        raise DataError(
            f"{path}: not an insightface .bin verification set ({' '.join(str(exc).split())})"
        ) from None
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise DataError(f"{path}: expected a pickled (bins, issame_list) pair")
    bins, issame_list = data
    issame = np.asarray(issame_list).astype(bool).reshape(-1)
    if len(bins) != 2 * len(issame):
        raise DataError(
            f"{path}: expected 2 images per pair ({2 * len(issame)} for {len(issame)} pairs), "
            f"got {len(bins)}"
        )
    images = []
    for i, item in enumerate(bins):
        raw = _as_bytes(item)
        if raw is None:
            raise DataError(f"{path}: image {i}: expected encoded image bytes, got {type(item).__name__}")
        images.append(decode_image_bytes(raw, "RGB", name=f"{path}: image {i}"))
    return images, issame
