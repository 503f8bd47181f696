"""Crash safety of gallery writes: a crash at any step leaves the old or the new state.

Every write step has a named fault point (``facemetric.gallery.storage.FAULT_HOOK``). We crash
at each of them -- in-process by raising (the error path: rollback + cleanup run), and in a
child process by ``os._exit`` (a real kill: nothing runs, the WAL holds uncommitted frames,
temp and orphan files stay on disk) -- and also make ``os.replace`` and the SQLite ``COMMIT``
fail. Then a fresh ``Gallery.open`` must show a consistent gallery (every image row points to
a vector of the loaded generation, vector files on disk = the files the database names) whose
content equals exactly the state before the write (crash before the commit) or after it
(crash after the commit). Readers on another connection, polled at every step of a write,
must also see one of the two states.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import facemetric.gallery.storage as store
from facemetric.errors import DataError
from facemetric.gallery import Gallery
from tests.gallery.gallery_helpers import DIM, card, unit

REPO = Path(__file__).resolve().parents[2]

STEPS = {
    "enroll": ["enroll:begin", "enroll:temp-written", "enroll:segment-written",
               "enroll:before-commit", "enroll:committed"],
    "compact": ["compact:begin", "compact:temp-written", "compact:segment-written",
                "compact:before-commit", "compact:committed", "compact:before-delete-old"],
    "remove": ["remove:begin", "remove:before-commit", "remove:committed"],
}
COMMITTED = {"enroll:committed", "compact:committed", "compact:before-delete-old", "remove:committed"}
NEW = unit(np.random.default_rng(99).normal(size=(3, DIM)))


class SimulatedCrash(BaseException):
    pass


def build_template(path: Path) -> None:
    """4 identities over several segments, one removed (dead rows to compact)."""
    rng = np.random.default_rng(0)
    with Gallery.create(path, card(), index="exact") as g:
        for i in range(4):
            g.enroll(f"id{i}", unit(rng.normal(size=(2 + i, DIM))))
        g.remove_images([g.images("id2")[0].id])


def read_state(path: Path) -> dict[str, np.ndarray]:
    """Open fresh, check consistency, return ``{identity: vectors}``."""
    with Gallery.open(path, index="exact") as g:
        snap = g.snapshot()
        rows = [r[0] for r in g._conn.execute("SELECT vector_row FROM images")]
        assert len(set(rows)) == len(rows)
        assert all(0 <= r < snap.vectors.shape[0] for r in rows)
        on_disk = sorted(p.name for p in path.glob("vectors-*.npy"))
        assert on_disk == sorted(snap.files), "orphan or missing vector files after open"
        assert not list(path.glob(".vectors-*")), "temp files left after open"
        state = {r.name: g.embeddings(r.name) for r in g.identities()}
        for name, vecs in state.items():  # every image finds its own identity at score 1
            if len(vecs):
                hit = g.search(vecs[:1], k=1, card=card())[0][0]
                assert hit.identity == name and hit.score == pytest.approx(1.0, abs=1e-5)
    return state


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and np.allclose(a[k], b[k], atol=1e-6) for k in a
    )


def apply(g: Gallery, op: str) -> None:
    if op == "enroll":
        g.enroll("new", NEW)
    elif op == "compact":
        g.compact()
    else:
        g.remove_identity("id1")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    base = tmp_path_factory.mktemp("atomic")
    build_template(base / "template")
    old = read_state(base / "template")
    new = {}
    for op in STEPS:
        shutil.copytree(base / "template", base / f"ref-{op}")
        with Gallery.open(base / f"ref-{op}") as g:
            seen: list[str] = []
            store.FAULT_HOOK = seen.append
            try:
                apply(g, op)
            finally:
                store.FAULT_HOOK = None
            assert [s for s in seen if s.startswith(op)] == STEPS[op], "fault points moved"
        new[op] = read_state(base / f"ref-{op}")
        assert not same(new[op], old) or op == "compact"
    return base, old, new


def expect(step: str, old: dict, new: dict, op: str) -> dict:
    return new[op] if step in COMMITTED else old


@pytest.mark.parametrize("op", list(STEPS))
def test_crash_in_process_at_every_step(template, op):
    base, old, new = template
    for step in STEPS[op]:
        work = base / f"inproc-{op}-{step.split(':')[1]}"
        shutil.copytree(base / "template", work)
        g = Gallery.open(work)

        def hook(s, step=step):
            if s == step:
                raise SimulatedCrash(step)

        store.FAULT_HOOK = hook
        try:
            with pytest.raises(SimulatedCrash):
                apply(g, op)
        finally:
            store.FAULT_HOOK = None
        # the crashed object is abandoned; a new process-equivalent opens the directory
        assert same(read_state(work), expect(step, old, new, op)), step
        g.close()


CHILD = r"""
import os, sys
import numpy as np
import facemetric.gallery.storage as store
from facemetric.gallery import Gallery
path, op, step = sys.argv[1], sys.argv[2], sys.argv[3]
def hook(s):
    if s == step:
        os._exit(77)  # killed: no cleanup, no rollback, no close
store.FAULT_HOOK = hook
g = Gallery.open(path)
if op == "enroll":
    g.enroll("new", np.load(sys.argv[4]))
elif op == "compact":
    g.compact()
else:
    g.remove_identity("id1")
os._exit(0)
"""


@pytest.mark.parametrize("op", ["enroll", "compact"])
def test_killed_process_at_every_step(template, op):
    base, old, new = template
    np.save(base / "new.npy", NEW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    for step in STEPS[op]:
        work = base / f"kill-{op}-{step.split(':')[1]}"
        shutil.copytree(base / "template", work)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(work), op, step, str(base / "new.npy")],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 77, proc.stderr
        if step == "enroll:segment-written":  # the kill left an uncommitted file behind
            assert len(list(work.glob("vectors-*.npy"))) > len(list((base / "template").glob("vectors-*.npy")))
        assert same(read_state(work), expect(step, old, new, op)), step


def test_failing_replace_and_commit_leave_old_state(template, monkeypatch):
    base, old, _ = template
    work = base / "replace-fails"
    shutil.copytree(base / "template", work)
    g = Gallery.open(work)
    real_replace = os.replace

    def bad_replace(src, dst):
        if Path(dst).name.startswith("vectors-"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", bad_replace)
    with pytest.raises(OSError):
        g.enroll("new", NEW)
    monkeypatch.setattr(os, "replace", real_replace)
    assert same(read_state(work), old)
    assert not list(work.glob(".vectors-*"))  # the temp file was removed on the error path

    class FailingCommit:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            return self.conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.conn, name)

    for op in STEPS:
        work = base / f"commit-fails-{op}"
        shutil.copytree(base / "template", work)
        g = Gallery.open(work)
        real = g._conn
        g._conn = FailingCommit(real)
        with pytest.raises(DataError, match="database error \\(disk I/O error\\)"):  # one line, old state
            apply(g, op)
        g._conn = real
        g.close()
        assert same(read_state(work), old), op


def test_readers_see_old_or_new_state_during_writes(template):
    base, old, new = template
    for op in STEPS:
        work = base / f"readers-{op}"
        shutil.copytree(base / "template", work)
        writer = Gallery.open(work, index="exact")
        reader = Gallery.open(work, index="exact")
        seen = []

        def poll(step, reader=reader, seen=seen, op=op):
            if not step.startswith(op):
                return
            snap = reader.snapshot()
            state = {
                name: snap.vectors[np.flatnonzero(snap.row_identity == i)]
                for i, name in enumerate(snap.names)
            }
            seen.append((step, state))

        store.FAULT_HOOK = poll
        try:
            apply(writer, op)
        finally:
            store.FAULT_HOOK = None
        assert [s for s, _ in seen] == STEPS[op]
        for step, state in seen:
            assert same(state, expect(step, old, new, op)), (op, step)
        writer.close()
        reader.close()


def test_reader_retries_when_compaction_removes_its_files(template):
    base, _, new = template
    work = base / "reader-retry"
    shutil.copytree(base / "template", work)
    reader = Gallery.open(work, index="exact")
    writer = Gallery.open(work, index="exact")
    real = reader._vectors_for
    calls = []

    def racing(files, rows):
        if not calls:  # between reading the database and loading the files: compact
            writer.compact()
        calls.append(files)
        return real(files, rows)

    reader._vectors_for = racing
    snap = reader.snapshot()
    assert len(calls) == 2 and calls[0] != calls[1]  # first try hit a deleted file, retried
    state = {name: snap.vectors[np.flatnonzero(snap.row_identity == i)] for i, name in enumerate(snap.names)}
    assert same(state, new["compact"])
    reader.close()
    writer.close()
