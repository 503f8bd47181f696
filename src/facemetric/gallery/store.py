"""A persistent face gallery: identities, their images' embeddings, and 1:N search.

Layout of a gallery directory::

    gallery.sqlite            SQLite (WAL mode): meta, identities, images, segments
    vectors-00000007.npy      float32 [rows, D], L2-normalised, immutable once written
    vectors-00000009.npy      ...
    index-00000009-ivf.faiss  optional faiss IVF index of generation 9, with its sidecar
    index-00000009-ivf.json   {"generation": 9, "num_rows": ..., "dim": ..., "fingerprint": ...}

Tables: ``identities(id, name UNIQUE, metadata JSON, created)``; ``images(id, identity_id,
source, metadata JSON, vector_row UNIQUE, created)``; ``segments(generation, file, row_offset,
rows)``; ``meta(key, value)`` with ``format``, ``model_card`` (JSON), ``fingerprint``
(:func:`facemetric.gallery.model.model_fingerprint`), ``dim``, ``generation``, ``num_rows``
and ``revision``. The vector matrix is the concatenation of the segment files in
``row_offset`` order; ``images.vector_row`` indexes it. A row that no image references is dead
(its image was removed) and is masked out of every search until :meth:`Gallery.compact`.

Commit protocol (what makes a killed process harmless)
-----------------------------------------------------
Vector files are never modified: every change to the vector set writes a *new* file, and the
SQLite commit that names it is the single commit point. A write (enrol, compact):

1. ``BEGIN IMMEDIATE`` -- takes SQLite's write lock; writers are serialised from here on.
2. Delete orphans: vector files not named in ``segments`` and temp files (no other writer can
   be mid-write while we hold the lock, so they belong to a writer that died).
3. Write ``vectors-<generation+1>.npy``: a temp file in the directory, ``fsync``,
   ``os.replace`` to its name, ``fsync`` of the directory.
4. Insert the identity/image rows, the segment row, bump ``generation``/``num_rows``/``revision``.
5. ``COMMIT`` (``synchronous=FULL``). Before it, the new file is an orphan nobody reads;
   after it, the database names a file that is already durable.
6. Compaction only: delete the superseded segment files (a crash here leaves orphans for 2.).

Removing images or identities touches only SQLite (one transaction; their rows become dead).
A reader reads ``meta``, ``segments`` and ``images`` in one read transaction (a WAL snapshot),
then loads the named files; if one is gone (a compaction committed meanwhile) it retries with
the new snapshot. So a reader sees either the state before or after any write, never a mix,
and a crash at any step leaves the old state (before 5) or the new state (after 5).

faiss IVF indexes are derived data: written (temp + replace) for one ``generation``, with a
sidecar naming it; an index whose sidecar does not match the current generation, row count,
dimension and fingerprint is stale and rebuilt, never used. The flat faiss and exact indexes
are built in memory from the vectors (an index is cached per generation; removals only
change its mask of live rows).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from facemetric.errors import DataError, FacemetricError
from facemetric.gallery.model import (
    canonical_json,
    card_similarity_threshold,
    model_fingerprint,
    model_label,
)

FORMAT = "facemetric-gallery/1"
DB_NAME = "gallery.sqlite"
UNKNOWN = "unknown"
MAX_SEGMENTS = 16  # enrolment merges the segments beyond this many (one compaction)
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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Any], None], step: str | None = None) -> None:
    """facemetric.train.checkpoint.atomic_write (temp, fsync, os.replace) + a directory fsync
    and the ``<step>:temp-written`` fault point between the fsync and the rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if step:
            _fault(f"{step}:temp-written")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _json_dump(value: Any, name: str) -> str:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise FacemetricError(f"{name}: expected a dict, got {type(value).__name__}")
    try:
        return json.dumps(dict(value), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise FacemetricError(f"{name}: not JSON-serialisable ({exc})") from None


def _check_name(identity: Any) -> None:
    if not isinstance(identity, str) or not identity.strip():
        raise FacemetricError(f"identity: expected a non-empty name, got {identity!r}")
    if identity == UNKNOWN:
        raise FacemetricError(f"identity: {UNKNOWN!r} is reserved for open-set rejections")


class Match(NamedTuple):
    """One search hit: identity name, cosine score, squared L2 distance ``2 - 2 score``."""

    identity: str
    score: float
    distance: float


class Identification(NamedTuple):
    """Open-set decision: ``identity`` is the best candidate if ``score >= threshold``, else
    :data:`UNKNOWN`; ``candidate`` is the best identity either way (None: empty gallery)."""

    identity: str
    known: bool
    candidate: str | None
    score: float
    distance: float
    threshold: float


class IdentityRecord(NamedTuple):
    name: str
    num_images: int
    metadata: dict
    created: str


class ImageRecord(NamedTuple):
    id: int
    identity: str
    source: str | None
    metadata: dict
    created: str


@dataclass
class _Snapshot:
    revision: int
    generation: int
    files: list[str]
    vectors: np.ndarray  # [num_rows, D] float32
    row_identity: np.ndarray  # [num_rows] dense identity id, -1 = dead row
    names: list[str]  # dense identity id -> name
    counts: np.ndarray  # images per dense identity

    @property
    def live(self) -> np.ndarray:
        return self.row_identity >= 0


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
    conn = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Gallery:
    """A face gallery directory (see the module docstring). Use :meth:`create` / :meth:`open`.

    One ``Gallery`` object per thread; any number of processes may open the same directory
    (SQLite serialises the writers, readers see committed snapshots).
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, index: str = "auto",
                 nprobe: int | None = None):
        from facemetric.gallery.search import INDEX_KINDS

        if index not in INDEX_KINDS:
            raise FacemetricError(f"index: expected one of {', '.join(INDEX_KINDS)}, got {index!r}")
        self.path = path
        self._conn = conn
        self.index_kind = index
        self.nprobe = nprobe
        meta = self._meta()
        if meta.get("format") != FORMAT:
            raise FacemetricError(
                f"gallery {path}: unknown format {meta.get('format')!r}; expected {FORMAT!r}"
            )
        self.card: dict[str, Any] = json.loads(meta["model_card"])
        self.fingerprint: str = meta["fingerprint"]
        self.dim: int = int(meta["dim"])
        self._snap: _Snapshot | None = None
        self._indexes: dict[tuple[int, str], Any] = {}
        self._centroids: tuple[int, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, path: str | os.PathLike, model_card: Mapping[str, Any], index: str = "auto",
               nprobe: int | None = None) -> Gallery:
        """Make a new, empty gallery directory for embeddings of the model ``model_card``.

        ``path`` must not exist or be an empty directory. Built in a temporary sibling and
        renamed into place, so a crash never leaves a half-made gallery.
        """
        path = Path(path)
        fingerprint = model_fingerprint(model_card)
        try:
            dim = int(model_card["embedding_dim"])
        except (TypeError, ValueError):
            raise FacemetricError(
                f"model card: embedding_dim must be an integer, got {model_card['embedding_dim']!r}"
            ) from None
        if dim < 1:
            raise FacemetricError(f"model card: embedding_dim must be >= 1, got {dim}")
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):
            raise FacemetricError(f"gallery {path}: already exists (open it with Gallery.open)")
        try:
            card_json = json.dumps(dict(model_card), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise FacemetricError(f"model card: not JSON-serialisable ({exc})") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent))
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
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            conn.execute("COMMIT")
            conn.close()
            os.replace(tmp, path)
        except BaseException:
            for p in sorted(tmp.glob("*"), reverse=True):
                p.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                tmp.rmdir()
            raise
        _fsync_dir(path.parent)
        return cls.open(path, index=index, nprobe=nprobe)

    @classmethod
    def open(cls, path: str | os.PathLike, index: str = "auto", nprobe: int | None = None) -> Gallery:
        """Open an existing gallery; ``index``: ``auto`` (faiss flat if importable, else exact
        chunked BLAS), ``exact``, ``faiss`` (flat, exact) or ``faiss-ivf`` (approximate,
        persisted). On a 2-core CPU ``exact`` measured faster than faiss flat for one query
        and for batches (benchmarks/bench_gallery_search.py)."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"gallery {path}: does not exist (create it with Gallery.create)")
        if not path.is_dir() or not (path / DB_NAME).is_file():
            raise DataError(f"gallery {path}: not a gallery directory (no {DB_NAME})")
        conn = None
        try:
            conn = _connect(path / DB_NAME)
            conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
            gallery = cls(path, conn, index, nprobe)
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise DataError(f"gallery {path}: {DB_NAME} is not a readable gallery database ({exc})") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        gallery._cleanup_if_idle()
        return gallery

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Gallery({str(self.path)!r}, model={model_label(self.card)!r}, dim={self.dim})"

    # ------------------------------------------------------------------ model check
    def check_model(self, card: Mapping[str, Any] | str) -> None:
        """Raise a one-line FacemetricError unless ``card`` (a model card or its fingerprint)
        is the model this gallery was built with."""
        if isinstance(card, str):
            fp, label = card, "another model"
        elif isinstance(card, Mapping):
            fp, label = model_fingerprint(card), model_label(card)
        else:
            raise FacemetricError(
                f"card: expected the querying model's card (dict) or fingerprint (str), got {type(card).__name__}"
            )
        if fp != self.fingerprint:
            raise FacemetricError(
                f"gallery {self.path} was built with model {model_label(self.card)} (fingerprint "
                f"{self.fingerprint[:12]}); the query was embedded by {label} (fingerprint {fp[:12]})"
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
        created by the write are appended (deleted again if it does not commit)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
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
            conn.execute("PRAGMA busy_timeout=60000")
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
        _atomic_write(target, lambda fh: np.save(fh, vectors, allow_pickle=False), step=op)
        _fault(f"{op}:segment-written")
        return name

    def _identity_id(self, name: str) -> int:
        row = self._conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise FacemetricError(f"identity {name!r}: not in gallery {self.path}")
        return int(row[0])

    # ------------------------------------------------------------------ writes
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
        from facemetric.gallery.search import as_embeddings

        if card is not None:
            self.check_model(card)
        _check_name(identity)
        emb = as_embeddings(embeddings, "embeddings", self.dim)
        ident_meta = None if identity_metadata is None else _json_dump(identity_metadata, "identity_metadata")
        return self._enroll_rows([identity] * emb.shape[0], emb, sources, metadata,
                                 {identity: ident_meta} if ident_meta else {})

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
        from facemetric.gallery.search import as_embeddings

        if card is not None:
            self.check_model(card)
        emb = as_embeddings(embeddings, "embeddings", self.dim)
        names = [identities] if isinstance(identities, str) else list(identities)
        if len(names) != emb.shape[0]:
            raise FacemetricError(
                f"identities: expected {emb.shape[0]} names (one per embedding), got {len(names)}"
            )
        for name in set(names):
            _check_name(name)
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
        if metadata is None or isinstance(metadata, Mapping):
            metas = [_json_dump(metadata, "metadata")] * k
        else:
            metas = [_json_dump(m, f"metadata[{i}]") for i, m in enumerate(metadata)]
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

    def remove_identity(self, name: str) -> int:
        """Remove ``name`` and all its images; returns the number of images removed."""
        with self._write("remove") as _:
            identity_id = self._identity_id(name)
            n = self._conn.execute("DELETE FROM images WHERE identity_id = ?", (identity_id,)).rowcount
            self._conn.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
            self._bump_revision()
        self._maybe_compact()
        return int(n)

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

    def snapshot(self) -> _Snapshot:
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
            self._snap = _Snapshot(
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

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    @property
    def num_identities(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM identities").fetchone()[0])

    def identities(self) -> list[IdentityRecord]:
        """Every identity with its number of images, sorted by name."""
        rows = self._conn.execute(
            "SELECT i.name, COUNT(m.id), i.metadata, i.created FROM identities i "
            "LEFT JOIN images m ON m.identity_id = i.id GROUP BY i.id ORDER BY i.name"
        ).fetchall()
        return [IdentityRecord(r[0], int(r[1]), json.loads(r[2]), r[3]) for r in rows]

    def images(self, identity: str) -> list[ImageRecord]:
        """The images of ``identity`` in enrolment order."""
        identity_id = self._identity_id(identity)
        rows = self._conn.execute(
            "SELECT id, source, metadata, created FROM images WHERE identity_id = ? ORDER BY id",
            (identity_id,),
        ).fetchall()
        return [ImageRecord(int(r[0]), identity, r[1], json.loads(r[2]), r[3]) for r in rows]

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

    # ------------------------------------------------------------------ search
    def _index(self, snap: _Snapshot, kind: str | None):
        from facemetric.gallery.search import ExactIndex, build_index, faiss_available

        kind = kind or self.index_kind
        if kind == "auto":
            kind = "faiss" if faiss_available() else "exact"
        key = (snap.generation, kind)
        index = self._indexes.get(key)
        if index is None:
            self._indexes = {k: v for k, v in self._indexes.items() if k[0] == snap.generation}
            if kind == "faiss-ivf":
                index = self._ivf_index(snap)
            elif kind == "exact":
                index = ExactIndex(snap.vectors, snap.live)
            else:
                index = build_index(snap.vectors, snap.live, kind, self.nprobe)
            self._indexes[key] = index
        index.set_live(snap.live)
        return index

    def _ivf_index(self, snap: _Snapshot):
        """Load the persisted IVF index of this generation, or build and persist it."""
        from facemetric.gallery.search import FaissIndex, build_index, faiss_available

        if not faiss_available():
            build_index(snap.vectors, None, "faiss-ivf")  # raises the one-line error
        if snap.vectors.shape[0] == 0:
            return FaissIndex.build(snap.vectors, "flat", snap.live)
        import faiss

        stem = self.path / f"index-{snap.generation:08d}-ivf"
        n, d = snap.vectors.shape
        expect = {"generation": snap.generation, "num_rows": n, "dim": d, "fingerprint": self.fingerprint}
        sidecar, file = stem.with_suffix(".json"), stem.with_suffix(".faiss")
        try:
            info = json.loads(sidecar.read_text())
            if all(info.get(k) == v for k, v in expect.items()):
                index = faiss.read_index(str(file))
                if index.ntotal == n and index.d == d:
                    return FaissIndex(index, "ivf", snap.live, self.nprobe)
        except (OSError, ValueError, RuntimeError):
            pass  # missing, partial or foreign: rebuild
        built = FaissIndex.build(snap.vectors, "ivf", snap.live, self.nprobe)
        try:
            data = faiss.serialize_index(built.index)
            _atomic_write(file, lambda fh: fh.write(data.tobytes()))
            payload = canonical_json({**expect, "nlist": int(built.index.nlist)}).encode()
            _atomic_write(sidecar, lambda fh: fh.write(payload))
        except OSError:
            pass  # read-only gallery: the in-memory index still serves
        return built

    def _query(self, queries: Any, card: Mapping[str, Any] | str) -> np.ndarray:
        from facemetric.gallery.search import as_embeddings

        self.check_model(card)
        return as_embeddings(queries, "queries", self.dim)

    def _top(self, q: np.ndarray, k: int, by: str, index: str | None):
        from facemetric.gallery.search import (
            AGGREGATIONS,
            identity_centroids,
            top_identities_max,
            top_identities_mean,
        )

        if by not in AGGREGATIONS:
            raise FacemetricError(f"by: expected one of {', '.join(AGGREGATIONS)}, got {by!r}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise FacemetricError(f"k: expected an integer >= 1, got {k!r}")
        snap = self.snapshot()
        m = len(snap.names)
        if by == "max":
            n_live = int(np.count_nonzero(snap.counts))
            return snap, *top_identities_max(self._index(snap, index), q, snap.row_identity, n_live, int(k))
        if self._centroids is None or self._centroids[0] != snap.revision:
            self._centroids = (snap.revision, *identity_centroids(snap.vectors, snap.row_identity, m))
        _, cent, counts = self._centroids
        return snap, *top_identities_mean(q, cent, counts, int(k))

    def search(self, queries: Any, k: int = 5, by: str = "max", *, card: Mapping[str, Any] | str,
               index: str | None = None) -> list[list[Match]]:
        """Top-``k`` identities for each query embedding (``[Q, D]`` or one ``[D]``).

        ``by="max"``: best cosine over the identity's images; ``"mean"``: mean cosine over
        them (see :mod:`facemetric.gallery.search`). ``card``: the querying model's card or
        fingerprint (a mismatch is refused). Each hit is ``Match(identity, score, distance)``
        with ``distance = 2 - 2 score`` (squared L2 of unit vectors; for ``mean`` the mean
        squared distance). Fewer than ``k`` hits when the gallery has fewer identities.
        """
        q = self._query(queries, card)
        snap, scores, ids = self._top(q, k, by, index)
        out = []
        for s_row, i_row in zip(scores.tolist(), ids.tolist(), strict=True):
            out.append([Match(snap.names[i], s, 2.0 - 2.0 * s) for s, i in zip(s_row, i_row, strict=True) if i >= 0])
        return out

    def resolve_threshold(self, threshold: float | None, threshold_key: str | None,
                          card: Mapping[str, Any] | str) -> float:
        """A cosine threshold: ``threshold`` as given (a float or a ThresholdCalibration), else
        the card's ``threshold_key`` distance threshold converted by
        :func:`facemetric.gallery.model.card_similarity_threshold` (the querying card's when a
        dict was passed, else the gallery's)."""
        if threshold is not None:
            try:
                t = float(threshold)
            except (TypeError, ValueError):
                raise FacemetricError(f"threshold: expected a number, got {threshold!r}") from None
            if not np.isfinite(t):
                raise FacemetricError(f"threshold: expected a finite number, got {threshold!r}")
            return t
        return card_similarity_threshold(card if isinstance(card, Mapping) else self.card, threshold_key)

    def default_threshold(self, card: Mapping[str, Any] | None = None, by: str = "max",
                          far: float = 0.01) -> tuple[float, str]:
        """``(cosine threshold, where it came from)`` for open-set decisions on this gallery:
        the stored calibration (:meth:`set_calibration`) when it was made for ``by``; else
        the model's impostor tail at open-set FAR ``far`` for this gallery's size
        (:mod:`facemetric.gallery.open_set`: enrolled images for ``max``, identities for
        ``mean``; the tail of ``card``, else of the gallery's own card); else the card's 1:1
        threshold converted to a cosine."""
        from facemetric.gallery.open_set import card_open_set_threshold

        card = self.card if card is None else card
        stored = self.calibration
        if stored is not None and stored[1] == by:
            return stored[0].threshold, f"calibrated on this gallery at FAR {stored[0].far_target:g}"
        n = max(1, len(self) if by == "max" else self.num_identities)
        # the same model (fingerprints match): the querying card's tail, else the gallery's
        t = card_open_set_threshold(card if card.get("impostor_tail") else self.card, n, far)
        if t is not None:
            unit = "images" if by == "max" else "identities"
            return t, f"model's impostor tail: FAR {far:g} against {n} {unit}"
        return card_similarity_threshold(card), "model card"

    def identify(self, queries: Any, *, card: Mapping[str, Any] | str, threshold: float | None = None,
                 threshold_key: str | None = None, by: str = "max", index: str | None = None,
                 far: float = 0.01):
        """Open-set identification: the best identity when its score ``>= threshold``, else
        :data:`UNKNOWN`. One :class:`Identification` for a 1-D query, a list for ``[Q, D]``.

        The threshold is a cosine similarity; by default :meth:`default_threshold` (a stored
        calibration, else the model's impostor tail at open-set FAR ``far`` for this gallery's
        size, else the card's 1:1 threshold converted); ``threshold_key`` picks a card
        threshold instead. A 1:N search with max-over-images accepts more impostors than 1:1
        at the same threshold as the gallery grows, hence the size-aware default.
        """
        single = np.ndim(queries) == 1
        if threshold is None and threshold_key is None:
            t = self.default_threshold(card if isinstance(card, Mapping) else None, by, far)[0]
        else:
            t = self.resolve_threshold(threshold, threshold_key, card)
        q = self._query(queries, card)
        snap, scores, ids = self._top(q, 1, by, index)
        out = []
        for s, i in zip(scores[:, 0].tolist(), ids[:, 0].tolist(), strict=True):
            cand = snap.names[i] if i >= 0 else None
            known = cand is not None and s >= t
            out.append(Identification(cand if known else UNKNOWN, known, cand, s, 2.0 - 2.0 * s, t))
        return out[0] if single else out

    def calibrate(self, queries: Any, labels: Sequence[str], *, card: Mapping[str, Any] | str,
                  far: float = 1e-3, by: str = "max"):
        """A threshold at ``far`` from labelled probes against this gallery.

        Impostor score of a probe = its best score over the identities other than its own
        label (for a probe of an identity not in the gallery: its top score), genuine score =
        its own identity's score (probes whose identity is enrolled). Returns
        :class:`ThresholdCalibration` (see :func:`calibrate_threshold`).
        """
        from facemetric.gallery.calibration import calibrate_threshold

        q = self._query(queries, card)
        labels = [str(x) for x in labels]
        if len(labels) != q.shape[0]:
            raise FacemetricError(f"labels: expected {q.shape[0]} (one per query), got {len(labels)}")
        snap, scores, ids = self._top(q, 2, by, index=None)
        dense = {name: i for i, name in enumerate(snap.names) if snap.counts[i] > 0}
        own = np.array([dense.get(x, -1) for x in labels], dtype=np.int64)
        top_is_own = ids[:, 0] == own
        impostor = np.where(top_is_own, scores[:, 1], scores[:, 0]).astype(np.float64)
        impostor = impostor[np.isfinite(impostor)]
        mated = own >= 0
        genuine = own_identity_scores(q[mated], own[mated], snap, by)
        return calibrate_threshold(genuine, impostor, far)

    def set_calibration(self, calibration: Any, by: str = "max") -> None:
        """Store a :class:`~facemetric.gallery.calibration.ThresholdCalibration` made with
        identity scores ``by`` (or ``None`` to forget it) in the gallery, in one transaction;
        :attr:`calibration` reads it back and ``facemetric identify`` uses it as its default
        threshold (for the same ``by``)."""
        from dataclasses import asdict

        if by not in ("max", "mean"):
            raise FacemetricError(f"by: expected 'max' or 'mean', got {by!r}")
        value = "" if calibration is None else json.dumps({**asdict(calibration), "by": by})
        with self._write("calibrate"):
            self._set_meta(calibration=value)

    @property
    def calibration(self) -> tuple[Any, str] | None:
        """``(ThresholdCalibration, by)`` stored by :meth:`set_calibration`, or None."""
        from facemetric.gallery.calibration import ThresholdCalibration

        raw = self._meta().get("calibration")
        if not raw:
            return None
        fields = json.loads(raw)
        by = fields.pop("by", "max")
        return ThresholdCalibration(**fields), by

    # ------------------------------------------------------------------ with an embedder
    def enroll_images(self, identity: str, images: Any, embedder: Any, *, flip: bool = False,
                      metadata: Any = None, identity_metadata: Mapping[str, Any] | None = None,
                      batch_size: int = 64) -> list[int]:
        """Embed ``images`` (paths, PIL images or arrays) with ``embedder`` (a FaceEmbedder,
        checked against the gallery's model) and enrol them; file paths become the sources."""
        self.check_model(embedder.card)
        items = [images] if isinstance(images, (str, os.PathLike, np.ndarray)) else list(images)
        emb = embedder.embed(items, batch_size=batch_size, flip=flip)
        sources = [os.fspath(x) if isinstance(x, (str, os.PathLike)) else None for x in items]
        return self.enroll(identity, emb, sources, metadata, identity_metadata, card=embedder.card)

    def search_images(self, images: Any, embedder: Any, k: int = 5, by: str = "max", *,
                      flip: bool = False, index: str | None = None) -> list[list[Match]]:
        self.check_model(embedder.card)
        return self.search(embedder.embed(images, flip=flip), k, by, card=embedder.card, index=index)

    def identify_images(self, images: Any, embedder: Any, *, threshold: float | None = None,
                        threshold_key: str | None = None, by: str = "max", flip: bool = False,
                        far: float = 0.01):
        """:meth:`identify` for images embedded with ``embedder``: one
        :class:`Identification` for one image, a list for a list."""
        self.check_model(embedder.card)
        single = isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "convert")
        res = self.identify(embedder.embed(images, flip=flip), card=embedder.card,
                            threshold=threshold, threshold_key=threshold_key, by=by, far=far)
        return res[0] if single else res


def own_identity_scores(q: np.ndarray, own: np.ndarray, snap: _Snapshot, by: str,
                        max_pairs: int = 1 << 22) -> np.ndarray:
    """Score of each query for its own dense identity ``own[i]`` (all ``>= 0``), vectorised:
    the (query, image-of-its-identity) pairs are gathered through a CSR of identity -> rows,
    their cosines computed in blocks of ``max_pairs`` and reduced per query (max or mean)."""
    if q.shape[0] == 0:
        return np.zeros(0)
    live = np.flatnonzero(snap.row_identity >= 0)
    order = live[np.argsort(snap.row_identity[live], kind="stable")]
    starts = np.zeros(len(snap.names) + 1, dtype=np.int64)
    np.cumsum(snap.counts, out=starts[1:])
    n_pairs = snap.counts[own]
    out = np.empty(q.shape[0])
    lo = 0
    while lo < q.shape[0]:
        cum = np.cumsum(n_pairs[lo:])
        hi = lo + max(1, int(np.searchsorted(cum, max_pairs, side="right")))
        cnt = n_pairs[lo:hi]
        qi = np.repeat(np.arange(lo, hi), cnt)
        first = np.repeat(np.cumsum(cnt) - cnt, cnt)
        rows = order[np.repeat(starts[own[lo:hi]], cnt) + np.arange(qi.size) - first]
        cos = np.einsum("ij,ij->i", q[qi], snap.vectors[rows], dtype=np.float64)
        seg = np.cumsum(cnt) - cnt
        if by == "max":
            out[lo:hi] = np.maximum.reduceat(cos, seg)
        else:
            out[lo:hi] = np.add.reduceat(cos, seg) / cnt
        lo = hi
    return out


__all__ = ["FORMAT", "UNKNOWN", "Gallery", "Identification", "IdentityRecord", "ImageRecord", "Match",
           "own_identity_scores"]
