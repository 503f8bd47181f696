"""Gallery persistence: the SQLite database, the append-only vector segment files, the write
lock and the crash-safe commit protocol. No search and no inference here (see
:mod:`facemetric.gallery.store` for the :class:`~facemetric.gallery.Gallery` facade).

Layout of a gallery directory::

    gallery.sqlite            SQLite (WAL mode): meta, identities, images, segments
    vectors-00000007.npy      float32 [rows, D], L2-normalised, immutable once written
    vectors-00000009.npy      ...
    index-00000009-ivf.faiss  optional faiss IVF index of generation 9, with its sidecar
    index-00000009-ivf.json   (derived data, :mod:`facemetric.gallery.vector_index`)

Tables: ``identities(id, name UNIQUE, metadata JSON, created)``; ``images(id, identity_id,
source, metadata JSON, vector_row UNIQUE, created)``; ``segments(generation, file, row_offset,
rows)``; ``meta(key, value)`` with ``format``, ``model_card`` (JSON), ``fingerprint``
(:func:`facemetric.inference.model_card.model_fingerprint`), ``model_ref`` (how the model was
named at creation: a pretrained name or an absolute artifact path; may be absent), ``dim``,
``generation``, ``num_rows``, ``revision`` and ``calibration``. The vector matrix is the
concatenation of the segment files in ``row_offset`` order; ``images.vector_row`` indexes it. A
row that no image references is dead (its image was removed) and is masked out of every search
until :meth:`GalleryStorage.compact`.

Creation (:meth:`GalleryStorage.create`)
----------------------------------------
The directory is built complete -- database, and optionally the first enrolment -- in a
temporary sibling ``.<name>.<pid>.<random>.new`` and renamed into place, so there is never a
half-made or empty gallery at ``path``: a first enrolment killed part-way leaves no gallery at
all (its temporary sibling is removed by the next creation once its process is gone). When two
processes create the same gallery at once, the rename of the second fails; it then opens the
winner's gallery if the model matches (else a one-line error) and enrols into it. Files and
folders get the modes the umask gives (:func:`facemetric.io.default_file_mode`), not 0600/0700.

Commit protocol (what makes a killed process harmless)
-----------------------------------------------------
Vector files are never modified: every change to the vector set writes a *new* file, and the
SQLite commit that names it is the single commit point. A write (enrol, compact):

1. ``BEGIN IMMEDIATE`` -- takes SQLite's write lock; writers are serialised from here on. A
   writer waiting more than :data:`LOCK_TIMEOUT_S` seconds gives up with a one-line error.
2. Delete orphans: vector files not named in ``segments`` and temp files (no other writer can
   be mid-write while we hold the lock, so they belong to a writer that died).
3. Write ``vectors-<generation+1>.npy`` with :func:`facemetric.io.atomic_write` (temp file in
   the directory, ``fsync``, ``os.replace``, ``fsync`` of the directory).
4. Insert the identity/image rows, the segment row, bump ``generation``/``num_rows``/``revision``.
5. ``COMMIT`` (``synchronous=FULL``). Before it, the new file is an orphan nobody reads;
   after it, the database names a file that is already durable.
6. Compaction only: delete the superseded segment files (a crash here leaves orphans for 2.).

Removing images or identities touches only SQLite (one transaction; their rows become dead).
A reader reads ``meta``, ``segments`` and ``images`` in one read transaction (a WAL snapshot),
then loads the named files; if one is gone (a compaction committed meanwhile) it retries with
the new snapshot. So a reader sees either the state before or after any write, never a mix,
and a crash at any step leaves the old state (before 5) or the new state (after 5).

Opening checks every segment file against the database (exists, ``.npy`` header float32
``[rows, D]``, file size = header + ``rows * D * 4`` bytes, finite values) and refuses a
gallery whose vectors are missing, truncated, of the wrong shape or hold NaN with one line
naming the file; a corrupted
database page, a database that is not a gallery and a permission error are one line too.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from facemetric.errors import DataError, FacemetricError
from facemetric.eval.open_set import ThresholdCalibration
from facemetric.gallery.files import MissingSegment, remove_stale_new_dirs, verify_segment_files
from facemetric.gallery.records import (
    UNKNOWN,
    IdentityRecord,
    ImageRecord,
    Snapshot,
    check_name,
    check_utf8,
    json_dump,
)
from facemetric.index.search import as_embeddings
from facemetric.inference.model_card import model_fingerprint, model_label
from facemetric.io import atomic_write, fsync_dir

FORMAT = "facemetric-gallery/1"
DB_NAME = "gallery.sqlite"
MAX_SEGMENTS = 16  # enrolment merges the segments beyond this many (one compaction)
#: Seconds a writer waits for another writer's lock before a one-line "locked" error.
LOCK_TIMEOUT_S = 60.0
_SEGMENT = re.compile(r"^vectors-(\d+)\.npy$")
_INDEX = re.compile(r"^index-(\d+)-(\w+)\.(faiss|json)$")

#: Test hook: called with the name of each step of a write (``"enroll:segment-written"``, ...).
#: A test sets it to raise or to ``os._exit`` to simulate a crash at that step.
FAULT_HOOK: Callable[[str], None] | None = None


def _fault(step: str) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(step)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE identities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    metadata TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL
);
CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity_id INTEGER NOT NULL REFERENCES identities(id),
    source TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    vector_row INTEGER NOT NULL UNIQUE,
    created TEXT NOT NULL
);
CREATE INDEX images_identity ON images(identity_id);
CREATE TABLE segments (
    generation INTEGER PRIMARY KEY,
    file TEXT NOT NULL,
    row_offset INTEGER NOT NULL,
    rows INTEGER NOT NULL
);
"""


def _connect(db: Path) -> sqlite3.Connection:
    uri = db.resolve().as_uri() + "?mode=rw"
    conn = sqlite3.connect(uri, uri=True, timeout=LOCK_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class GalleryLockedError(FacemetricError):
    """Another writer held the gallery's write lock longer than the wait allowed (a service
    answers it with 503 + Retry-After)."""


def _db_errors(method: Callable) -> Callable:
    """Turn a database or permission failure inside a public method into one line."""

    @functools.wraps(method)
    def wrapper(self: GalleryStorage, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise GalleryLockedError(f"gallery {self.path} is locked by another writer; retry") from None
            raise DataError(f"gallery {self.path}: database error ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise DataError(f"gallery {self.path}: {DB_NAME} is damaged ({exc}) (corrupt gallery)") from None
        except PermissionError as exc:
            raise DataError(f"gallery {self.path}: permission denied on {exc.filename or 'a gallery file'} "
                            "(owned by another user?)") from None

    return wrapper


class GalleryStorage:
    """The persistent part of a gallery (see the module docstring): create/open, the write
    transaction, enrol/remove/compact, committed snapshots and the records.

    One object per thread; any number of processes may open the same directory (SQLite
    serialises the writers, readers see committed snapshots).
    """

    #: Seconds this object's writes wait for another writer's lock (None: :data:`LOCK_TIMEOUT_S`).
    lock_timeout_s: float | None = None

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn
        meta = self._meta()
        if meta.get("format") != FORMAT:
            raise FacemetricError(
                f"gallery {path}: unknown format {meta.get('format')!r}; expected {FORMAT!r}"
            )
        self.card: dict[str, Any] = json.loads(meta["model_card"])
        self.fingerprint: str = meta["fingerprint"]
        self.dim: int = int(meta["dim"])
        self._snap: Snapshot | None = None

    # ------------------------------------------------------------------ create / open
    @classmethod
    def _card_fields(cls, model_card: Mapping[str, Any]) -> tuple[str, int, str]:
        fingerprint = model_fingerprint(model_card)
        try:
            dim = int(model_card["embedding_dim"])
        except (TypeError, ValueError):
            raise FacemetricError(
                f"model card: embedding_dim must be an integer, got {model_card['embedding_dim']!r}"
            ) from None
        if dim < 1:
            raise FacemetricError(f"model card: embedding_dim must be >= 1, got {dim}")
        try:
            card_json = json.dumps(dict(model_card), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise FacemetricError(f"model card: not JSON-serialisable ({exc})") from None
        return fingerprint, dim, card_json

    @classmethod
    def create(cls, path: str | os.PathLike, model_card: Mapping[str, Any], *, model_ref: str | None = None,
               populate: Callable[[Any], None] | None = None, exist_ok: bool = False, **open_kw: Any):
        """Make a new gallery directory for embeddings of the model ``model_card``.

        ``path`` must not exist or be an empty directory (else: ``exist_ok`` opens it, checking
        the model; without it, a one-line error). ``model_ref``: how the model was named (kept
        in ``meta`` so commands can default to it). ``populate(gallery)`` runs on the new
        gallery *before* it appears at ``path`` (a first enrolment: all or nothing). Built in a
        temporary sibling and renamed into place (see the module docstring); when another
        process creates ``path`` first, its gallery is opened (model checked) and
        ``populate`` runs on it instead. ``open_kw`` go to :meth:`open`.
        """
        path = Path(path)
        fingerprint, dim, card_json = cls._card_fields(model_card)
        if model_ref is not None:
            check_utf8(model_ref, "model_ref")
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):
            if exist_ok:
                return cls._join(path, model_card, populate, open_kw)
            raise FacemetricError(f"gallery {path}: already exists (open it with Gallery.open)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_new_dirs(path.parent, path.name)
            tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new"
            os.mkdir(tmp)  # 0o777 & ~umask
        except PermissionError as exc:
            raise DataError(f"gallery {path}: cannot create it here: permission denied ({exc.filename})") from None
        try:
            conn = sqlite3.connect(tmp / DB_NAME, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            meta = {
                "format": FORMAT,
                "model_card": card_json,
                "fingerprint": fingerprint,
                "dim": str(dim),
                "generation": "0",
                "num_rows": "0",
                "revision": "0",
                "created": _now(),
            }
            if model_ref is not None:
                meta["model_ref"] = model_ref
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            conn.execute("COMMIT")
            conn.close()
            if populate is not None:
                with cls.open(tmp, **open_kw) as g:
                    populate(g)
            _fault("create:before-rename")
            try:
                os.replace(tmp, path)
            except OSError as exc:
                if (path / DB_NAME).is_file():
                    lost = True  # another process created the gallery meanwhile
                elif exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise FacemetricError(f"gallery {path}: already exists and is not a gallery") from None
                else:
                    raise
            else:
                lost = False
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if lost:
            shutil.rmtree(tmp, ignore_errors=True)
            return cls._join(path, model_card, populate, open_kw)
        fsync_dir(path.parent)
        return cls.open(path, **open_kw)

    @classmethod
    def _join(cls, path: Path, model_card: Mapping[str, Any], populate: Callable | None, open_kw: dict):
        g = cls.open(path, **open_kw)
        try:
            g.check_model(model_card)
            if populate is not None:
                populate(g)
        except BaseException:
            g.close()
            raise
        return g

    @classmethod
    def open(cls, path: str | os.PathLike, **kwargs: Any):
        """Open an existing gallery (``kwargs`` go to the class's constructor); refuses with one
        line a missing path, a folder that is not a gallery, a damaged or foreign database,
        unreadable files and vector files that disagree with the database."""
        path = Path(path)
        try:
            if not path.exists():
                raise DataError(
                    f"gallery {path} does not exist; create it with `facemetric enroll --gallery {path} ...`"
                )
            if not path.is_dir() or not (path / DB_NAME).is_file():
                raise DataError(f"gallery {path}: not a gallery directory (no {DB_NAME})")
        except PermissionError as exc:
            raise DataError(f"gallery {path}: permission denied on {exc.filename or path}") from None
        conn = None
        try:
            conn = _connect(path / DB_NAME)
            conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
            gallery = cls(path, conn, **kwargs)
            gallery.verify_segments()
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise DataError(f"gallery {path}: {DB_NAME} is not a readable gallery database ({exc})") from None
        except PermissionError as exc:
            if conn is not None:
                conn.close()
            raise DataError(f"gallery {path}: permission denied on {exc.filename or path / DB_NAME} "
                            "(owned by another user?)") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        gallery._cleanup_if_idle()
        return gallery

    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, model={model_label(self.card)!r}, dim={self.dim})"

    # ------------------------------------------------------------------ model
    @property
    def model_reference(self) -> str | None:
        """How to load this gallery's model: the ``model_ref`` recorded at creation (a
        pretrained name or an absolute artifact path), else the card's ``name``."""
        ref = self._meta().get("model_ref")
        return ref or self.card.get("name") or None

    def check_model(self, card: Mapping[str, Any] | str) -> None:
        """Raise a one-line FacemetricError unless ``card`` (a model card or its fingerprint)
        is the model this gallery was built with; the message names the model to use."""
        if isinstance(card, str):
            fp, label = card, "another model"
        elif isinstance(card, Mapping):
            fp, label = model_fingerprint(card), model_label(card)
        else:
            raise FacemetricError(
                f"card: expected the querying model's card (dict) or fingerprint (str), got {type(card).__name__}"
            )
        if fp != self.fingerprint:
            ref = self.model_reference
            hint = f"; use --model {ref}" if ref else ""
            raise FacemetricError(
                f"gallery {self.path} was built with model {model_label(self.card)} (fingerprint "
                f"{self.fingerprint[:12]}); the query was embedded by {label} (fingerprint {fp[:12]}){hint}"
            )

    # ------------------------------------------------------------------ low level
    def _meta(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def _set_meta(self, **values: Any) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in values.items()]
        )

    @contextlib.contextmanager
    def _write(self, op: str) -> Iterator[list[Path]]:
        """A write transaction holding SQLite's write lock; yields a list to which the files
        created by the write are appended (deleted again if it does not commit). Waiting more
        than :attr:`lock_timeout_s` (default :data:`LOCK_TIMEOUT_S`) for the lock is a one-line
        :class:`GalleryLockedError`."""
        conn = self._conn
        wait = LOCK_TIMEOUT_S if self.lock_timeout_s is None else self.lock_timeout_s
        conn.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise GalleryLockedError(f"gallery {self.path} is locked by another writer; retry") from None
            raise
        created: list[Path] = []
        try:
            _fault(f"{op}:begin")
            self._cleanup_locked()
            yield created
            _fault(f"{op}:before-commit")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for p in created:
                p.unlink(missing_ok=True)
            raise
        _fault(f"{op}:committed")

    def _cleanup_locked(self) -> None:
        """Delete orphaned vector files, temp files and stale index files (write lock held)."""
        referenced = {r[0] for r in self._conn.execute("SELECT file FROM segments")}
        generation = int(self._meta()["generation"])
        now = time.time()
        for p in self.path.iterdir():
            name = p.name
            m = _INDEX.match(name)
            try:
                if _SEGMENT.match(name) and name not in referenced:
                    p.unlink()
                elif name.startswith(".vectors-") and name.endswith(".tmp"):
                    p.unlink()
                elif m and int(m.group(1)) != generation:
                    p.unlink()
                elif name.startswith(".index-") and now - p.stat().st_mtime > 600:
                    p.unlink()  # an index temp file of a reader that died long ago
            except FileNotFoundError:
                pass

    def _cleanup_if_idle(self) -> None:
        """Orphan cleanup at open, only if no writer is active (else that writer's job)."""
        conn = self._conn
        try:
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # busy (another writer) or read-only
            return
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(LOCK_TIMEOUT_S * 1000)}")
        try:
            self._cleanup_locked()
        except OSError:
            pass
        finally:
            conn.execute("ROLLBACK")

    def _write_segment(self, generation: int, vectors: np.ndarray, created: list[Path], op: str) -> str:
        name = f"vectors-{generation:08d}.npy"
        target = self.path / name
        created.append(target)

        def write(fh: Any) -> None:
            np.save(fh, vectors, allow_pickle=False)
            fh.flush()
            _fault(f"{op}:temp-written")

        atomic_write(target, write)
        _fault(f"{op}:segment-written")
        return name

    def _identity_id(self, name: str) -> int:
        row = self._conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise FacemetricError(f"identity {name!r}: not in gallery {self.path}")
        return int(row[0])

    # ------------------------------------------------------------------ integrity
    @_db_errors
    def verify_segments(self) -> None:
        """Check every segment file against the database: it exists, its ``.npy`` header says
        float32 ``[rows, dim]`` (C order), its size is exactly the header plus the data, the
        segments tile ``0 .. num_rows`` and every image points inside. One-line
        :class:`~facemetric.errors.DataError` naming the file otherwise. (A file deleted by a
        compaction committed meanwhile is not an error: the check reruns on the new state.)"""
        conn = self._conn
        for _ in range(5):
            conn.execute("BEGIN")
            try:
                meta = self._meta()
                segs = conn.execute("SELECT file, row_offset, rows FROM segments ORDER BY row_offset").fetchall()
                top = conn.execute("SELECT MAX(vector_row), MIN(vector_row) FROM images").fetchone()
            finally:
                conn.execute("COMMIT")
            try:
                verify_segment_files(self.path, self.dim, segs, int(meta["num_rows"]), top)
                return
            except MissingSegment as missing:
                if self._revision() != int(meta["revision"]):
                    continue
                raise DataError(f"gallery {self.path}: vectors file missing: {missing.file} "
                                "(corrupt gallery)") from None
        raise FacemetricError(f"gallery {self.path}: changing too fast to check consistently; retry")

    # ------------------------------------------------------------------ writes
    @_db_errors
    def enroll(
        self,
        identity: str,
        embeddings: Any,
        sources: Sequence[str | os.PathLike | None] | None = None,
        metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        identity_metadata: Mapping[str, Any] | None = None,
        card: Mapping[str, Any] | str | None = None,
    ) -> list[int]:
        """Add ``embeddings`` ``[K, D]`` (or one ``[D]``) as images of ``identity`` (created if
        new) and return their image ids. Vectors are stored L2-normalised.

        ``sources``: one source (path or string) per image; ``metadata``: one JSON dict per
        image or one dict for all; ``identity_metadata`` is set (merged) on the identity;
        ``card``: when given, the embedding model is checked against the gallery's.
        """
        if card is not None:
            self.check_model(card)
        check_name(identity)
        emb = as_embeddings(embeddings, "embeddings", self.dim)
        ident_meta = None if identity_metadata is None else json_dump(identity_metadata, "identity_metadata")
        return self._enroll_rows([identity] * emb.shape[0], emb, sources, metadata,
                                 {identity: ident_meta} if ident_meta else {})

    @_db_errors
    def enroll_many(
        self,
        identities: Sequence[str],
        embeddings: Any,
        sources: Sequence[str | os.PathLike | None] | None = None,
        metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        card: Mapping[str, Any] | str | None = None,
    ) -> list[int]:
        """Bulk enrolment in one transaction: ``embeddings[i]`` is an image of
        ``identities[i]`` (one name per row; new names are created). Returns the image ids in
        row order. Use this to import a dataset: one vector file and one commit, not N."""
        if card is not None:
            self.check_model(card)
        emb = as_embeddings(embeddings, "embeddings", self.dim)
        names = [identities] if isinstance(identities, str) else list(identities)
        if len(names) != emb.shape[0]:
            raise FacemetricError(
                f"identities: expected {emb.shape[0]} names (one per embedding), got {len(names)}"
            )
        for name in set(names):
            check_name(name)
        return self._enroll_rows(names, emb, sources, metadata, {})

    def _enroll_rows(self, names: list[str], emb: np.ndarray, sources: Any, metadata: Any,
                     ident_meta: dict[str, str]) -> list[int]:
        k = emb.shape[0]
        if sources is None:
            srcs: list[str | None] = [None] * k
        else:
            if isinstance(sources, (str, os.PathLike)):
                sources = [sources]
            srcs = [None if s is None else os.fspath(s) for s in sources]
            if len(srcs) != k:
                raise FacemetricError(f"sources: expected {k} (one per embedding), got {len(srcs)}")
            for i, s in enumerate(srcs):
                check_utf8(s, f"sources[{i}]")
        if metadata is None or isinstance(metadata, Mapping):
            metas = [json_dump(metadata, "metadata")] * k
        else:
            metas = [json_dump(m, f"metadata[{i}]") for i, m in enumerate(metadata)]
            if len(metas) != k:
                raise FacemetricError(f"metadata: expected {k} dicts (one per embedding), got {len(metas)}")
        now = _now()
        with self._write("enroll") as created:
            meta = self._meta()
            generation, num_rows = int(meta["generation"]), int(meta["num_rows"])
            new_gen = generation + 1
            segment = self._write_segment(new_gen, emb, created, "enroll")
            conn = self._conn
            ids_of: dict[str, int] = {}
            for name in dict.fromkeys(names):  # first-appearance order
                row = conn.execute("SELECT id, metadata FROM identities WHERE name = ?", (name,)).fetchone()
                extra = ident_meta.get(name)
                if row is None:
                    cur = conn.execute(
                        "INSERT INTO identities (name, metadata, created) VALUES (?, ?, ?)",
                        (name, extra or "{}", now),
                    )
                    ids_of[name] = int(cur.lastrowid)
                else:
                    ids_of[name] = int(row[0])
                    if extra is not None:
                        merged = {**json.loads(row[1]), **json.loads(extra)}
                        conn.execute("UPDATE identities SET metadata = ? WHERE id = ?",
                                     (json.dumps(merged, sort_keys=True), ids_of[name]))
            conn.executemany(
                "INSERT INTO images (identity_id, source, metadata, vector_row, created) "
                "VALUES (?, ?, ?, ?, ?)",
                [(ids_of[names[i]], srcs[i], metas[i], num_rows + i, now) for i in range(k)],
            )
            conn.execute("INSERT INTO segments VALUES (?, ?, ?, ?)", (new_gen, segment, num_rows, k))
            self._set_meta(generation=new_gen, num_rows=num_rows + k,
                           revision=int(meta["revision"]) + 1)
            ids = [int(r[0]) for r in conn.execute(
                "SELECT id FROM images WHERE vector_row >= ? ORDER BY vector_row", (num_rows,))]
        if self._num_segments() > MAX_SEGMENTS:
            self.compact()
        return ids

    @_db_errors
    def remove_identity(self, name: str) -> int:
        """Remove ``name`` and all its images; returns the number of images removed."""
        with self._write("remove") as _:
            identity_id = self._identity_id(name)
            n = self._conn.execute("DELETE FROM images WHERE identity_id = ?", (identity_id,)).rowcount
            self._conn.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
            self._bump_revision()
        self._maybe_compact()
        return int(n)

    @_db_errors
    def remove_images(self, ids: Sequence[int]) -> int:
        """Remove the images ``ids`` (their identities stay, possibly with no image)."""
        ids = [int(i) for i in np.atleast_1d(np.asarray(ids, dtype=np.int64))]
        if not ids:
            return 0
        with self._write("remove") as _:
            conn = self._conn
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS _rm (id INTEGER PRIMARY KEY)")
            conn.execute("DELETE FROM _rm")
            conn.executemany("INSERT OR IGNORE INTO _rm VALUES (?)", [(i,) for i in ids])
            missing = conn.execute(
                "SELECT id FROM _rm WHERE id NOT IN (SELECT id FROM images) ORDER BY id LIMIT 1"
            ).fetchone()
            if missing is not None:
                raise FacemetricError(f"image {missing[0]}: not in gallery {self.path}")
            n = conn.execute("DELETE FROM images WHERE id IN (SELECT id FROM _rm)").rowcount
            conn.execute("DELETE FROM _rm")
            self._bump_revision()
        self._maybe_compact()
        return int(n)

    def _bump_revision(self) -> None:
        rev = int(self._conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])
        self._set_meta(revision=rev + 1)

    def _num_segments(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0])

    def _maybe_compact(self) -> None:
        meta = self._meta()
        live = int(self._conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
        if int(meta["num_rows"]) - live > max(1024, live):  # more dead rows than live ones
            self.compact()

    @_db_errors
    def compact(self) -> None:
        """Rewrite the vectors as one segment holding only live rows (removed images' vectors
        are then physically gone) and renumber ``vector_row``; same commit protocol."""
        with self._write("compact") as created:
            conn = self._conn
            meta = self._meta()
            generation = int(meta["generation"])
            segs = conn.execute("SELECT file, rows FROM segments ORDER BY row_offset").fetchall()
            rows = conn.execute("SELECT id, vector_row FROM images ORDER BY vector_row").fetchall()
            old = self._load_vectors([s[0] for s in segs], [s[1] for s in segs])
            keep = np.array([r[1] for r in rows], dtype=np.int64)
            new_gen = generation + 1
            conn.execute("DELETE FROM segments")
            if keep.size:
                name = self._write_segment(new_gen, np.ascontiguousarray(old[keep]), created, "compact")
                conn.execute("INSERT INTO segments VALUES (?, ?, 0, ?)", (new_gen, name, int(keep.size)))
            # ascending renumbering: row i moves to i <= its old row, never onto a live row
            conn.executemany("UPDATE images SET vector_row = ? WHERE id = ?",
                             [(i, r[0]) for i, r in enumerate(rows)])
            self._set_meta(generation=new_gen, num_rows=int(keep.size),
                           revision=int(meta["revision"]) + 1)
        _fault("compact:before-delete-old")
        for file, _ in segs:
            (self.path / file).unlink(missing_ok=True)

    # ------------------------------------------------------------------ calibration
    @_db_errors
    def set_calibration(self, calibration: ThresholdCalibration | None, by: str = "max") -> None:
        """Store a :class:`~facemetric.eval.open_set.ThresholdCalibration` made with identity
        scores ``by`` (or ``None`` to forget it) in the gallery, in one transaction;
        :attr:`calibration` reads it back and ``facemetric identify`` uses it as its default
        threshold (for the same ``by``)."""
        if by not in ("max", "mean"):
            raise FacemetricError(f"by: expected 'max' or 'mean', got {by!r}")
        value = "" if calibration is None else json.dumps({**asdict(calibration), "by": by})
        with self._write("calibrate"):
            self._set_meta(calibration=value)

    @property
    def calibration(self) -> tuple[ThresholdCalibration, str] | None:
        """``(ThresholdCalibration, by)`` stored by :meth:`set_calibration`, or None."""
        raw = self._meta().get("calibration")
        if not raw:
            return None
        fields = json.loads(raw)
        by = fields.pop("by", "max")
        return ThresholdCalibration(**fields), by

    # ------------------------------------------------------------------ reads
    def _load_vectors(self, files: list[str], rows: list[int]) -> np.ndarray:
        parts = []
        for file, n in zip(files, rows, strict=True):
            try:
                a = np.load(self.path / file, allow_pickle=False)
            except FileNotFoundError:
                raise  # the caller decides: superseded (retry) or corrupt
            except (OSError, ValueError) as exc:
                raise DataError(f"gallery {self.path}: {file} is unreadable ({exc}) (corrupt gallery)") from None
            if a.dtype != np.float32 or a.shape != (n, self.dim):
                raise DataError(
                    f"gallery {self.path}: {file} holds {a.dtype} {a.shape}, expected float32 "
                    f"({n}, {self.dim}) (corrupt gallery)"
                )
            parts.append(a)
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _revision(self) -> int:
        return int(self._conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])

    @_db_errors
    def snapshot(self) -> Snapshot:
        """The current committed state (reloaded only when the revision changed)."""
        if self._snap is not None and self._snap.revision == self._revision():
            return self._snap
        conn = self._conn
        last_error: Exception | None = None
        for _ in range(20):
            conn.execute("BEGIN")
            try:
                meta = self._meta()
                segs = conn.execute("SELECT file, rows FROM segments ORDER BY row_offset").fetchall()
                img = np.array(conn.execute("SELECT vector_row, identity_id FROM images").fetchall(),
                               dtype=np.int64).reshape(-1, 2)
                idents = conn.execute("SELECT id, name FROM identities ORDER BY id").fetchall()
            finally:
                conn.execute("COMMIT")
            files, rows = [s[0] for s in segs], [int(s[1]) for s in segs]
            try:
                vectors = self._vectors_for(files, rows)
            except FileNotFoundError as exc:  # superseded by a compaction meanwhile: retry
                last_error = exc
                if self._revision() == int(meta["revision"]):
                    break
                continue
            num_rows = int(meta["num_rows"])
            if vectors.shape[0] != num_rows:
                raise DataError(f"gallery {self.path}: segments hold {vectors.shape[0]} rows, "
                                f"meta says {num_rows} (corrupt gallery)")
            db_ids = np.array([i[0] for i in idents], dtype=np.int64)
            row_identity = np.full(num_rows, -1, dtype=np.int64)
            if img.size:
                if img[:, 0].max() >= num_rows or img[:, 0].min() < 0:
                    raise DataError(f"gallery {self.path}: an image points past the vectors (corrupt gallery)")
                row_identity[img[:, 0]] = np.searchsorted(db_ids, img[:, 1])
            self._snap = Snapshot(
                revision=int(meta["revision"]),
                generation=int(meta["generation"]),
                files=files,
                vectors=vectors,
                row_identity=row_identity,
                names=[i[1] for i in idents],
                counts=np.bincount(row_identity[row_identity >= 0], minlength=len(idents)),
            )
            return self._snap
        raise DataError(f"gallery {self.path}: vectors file missing ({last_error}) (corrupt gallery)")

    def _vectors_for(self, files: list[str], rows: list[int]) -> np.ndarray:
        old = self._snap
        if old is not None and files[: len(old.files)] == old.files and len(files) > len(old.files):
            k = len(old.files)
            new = self._load_vectors(files[k:], rows[k:])
            return np.concatenate([old.vectors, new])
        if old is not None and files == old.files:
            return old.vectors
        return self._load_vectors(files, rows)

    @_db_errors
    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    @property
    @_db_errors
    def num_identities(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM identities").fetchone()[0])

    @_db_errors
    def identities(self) -> list[IdentityRecord]:
        """Every identity with its number of images, sorted by name."""
        rows = self._conn.execute(
            "SELECT i.name, COUNT(m.id), i.metadata, i.created FROM identities i "
            "LEFT JOIN images m ON m.identity_id = i.id GROUP BY i.id ORDER BY i.name"
        ).fetchall()
        return [IdentityRecord(r[0], int(r[1]), json.loads(r[2]), r[3]) for r in rows]

    @_db_errors
    def images(self, identity: str) -> list[ImageRecord]:
        """The images of ``identity`` in enrolment order."""
        identity_id = self._identity_id(identity)
        rows = self._conn.execute(
            "SELECT id, source, metadata, created FROM images WHERE identity_id = ? ORDER BY id",
            (identity_id,),
        ).fetchall()
        return [ImageRecord(int(r[0]), identity, r[1], json.loads(r[2]), r[3]) for r in rows]

    @_db_errors
    def embeddings(self, identity: str) -> np.ndarray:
        """The stored (normalised) vectors of ``identity``'s images, in :meth:`images` order."""
        identity_id = self._identity_id(identity)
        for _ in range(5):
            snap = self.snapshot()
            rows = [r[0] for r in self._conn.execute(
                "SELECT vector_row FROM images WHERE identity_id = ? ORDER BY id", (identity_id,))]
            if self._revision() == snap.revision:
                return snap.vectors[np.asarray(rows, dtype=np.int64)].copy()
        raise FacemetricError(f"gallery {self.path}: changing too fast to read consistently; retry")

    # ------------------------------------------------------------------ duplicates
    @_db_errors
    def duplicates(self, names: Sequence[str], embeddings: Any | None = None,
                   keys: Sequence[str | None] | None = None) -> np.ndarray:
        """Which of the candidate images are already enrolled: ``dup[i]`` is True when an image
        of identity ``names[i]`` -- stored, or an earlier candidate -- has the same content key
        ``keys[i]`` (``metadata["key"]``: see :func:`content_key`) or the same L2-normalised
        embedding bit for bit (``embeddings[i]``, compared as float32 bytes)."""
        n = len(names)
        dup = np.zeros(n, dtype=bool)
        if n == 0:
            return dup
        emb = None if embeddings is None else as_embeddings(embeddings, "embeddings", self.dim)
        wanted = sorted(set(names))
        conn = self._conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _names (name TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM _names")
        conn.executemany("INSERT OR IGNORE INTO _names VALUES (?)", [(x,) for x in wanted])
        rows = conn.execute(
            "SELECT i.name, json_extract(m.metadata, '$.key'), m.vector_row FROM images m "
            "JOIN identities i ON i.id = m.identity_id WHERE i.name IN (SELECT name FROM _names)"
        ).fetchall()
        conn.execute("DELETE FROM _names")
        seen_keys = {(r[0], r[1]) for r in rows if r[1]}
        seen_vecs: set[tuple[str, bytes]] = set()
        if emb is not None and rows:
            snap = self.snapshot()
            seen_vecs = {(r[0], snap.vectors[r[2]].tobytes()) for r in rows if r[2] < snap.vectors.shape[0]}
        for i, name in enumerate(names):
            key = None if keys is None else keys[i]
            vec = None if emb is None else emb[i].tobytes()
            if (key and (name, key) in seen_keys) or (vec is not None and (name, vec) in seen_vecs):
                dup[i] = True
                continue
            if key:
                seen_keys.add((name, key))
            if vec is not None:
                seen_vecs.add((name, vec))
        return dup


__all__ = [
    "DB_NAME",
    "FORMAT",
    "LOCK_TIMEOUT_S",
    "UNKNOWN",
    "GalleryStorage",
    "IdentityRecord",
    "ImageRecord",
    "Snapshot",
]
