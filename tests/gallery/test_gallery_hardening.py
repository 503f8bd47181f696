"""Regression tests of the gallery's hostile cases (issue 11): weights fingerprints, racing
first enrolments, lock timeouts, killed first enrolments, damaged vector files and database
pages, permissions, file modes, duplicate photos. Each failed before its fix."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import facemetric.gallery.storage as storage
from facemetric.errors import DataError, FacemetricError
from facemetric.gallery import Gallery
from facemetric.inference.artifact import load_card, load_weights
from facemetric.inference.model_card import model_fingerprint, weights_sha256
from tests.gallery.gallery_helpers import DIM, card, people, unit
from tests.toy_faces import make_toy_model

REPO = Path(__file__).resolve().parents[2]


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


def test_fingerprint_is_the_weights_not_the_save_time(tmp_path):
    a = load_card(make_toy_model(tmp_path / "a", seed=0))
    b = load_card(make_toy_model(tmp_path / "b", seed=1))  # same name, other weights
    b["created"] = a["created"]  # saved in the same second
    assert a["weights_sha256"] == weights_sha256(load_weights(tmp_path / "a"))
    assert model_fingerprint(a) != model_fingerprint(b)
    again = load_card(make_toy_model(tmp_path / "a-again", seed=0))  # the same weights re-exported
    again["created"] = "2031-01-01T00:00:00+0000"
    assert model_fingerprint(again) == model_fingerprint(a)
    with Gallery.create(tmp_path / "g", a) as g:
        g.check_model(again)
        with pytest.raises(FacemetricError) as e:
            g.check_model(b)
        assert "was built with model toy-lenets" in one_line(e)
    # a converted pretrained card keeps the sha256 of its source file
    hashed = card(source={"sha256": "ab" * 32})
    assert model_fingerprint({**hashed, "weights_sha256": "cd" * 32}) == model_fingerprint(hashed)


def test_racing_first_creations_join_the_winner(tmp_path, monkeypatch):
    path = tmp_path / "race.gallery"
    rng = np.random.default_rng(0)
    fired = []

    def winner_first(step):
        if step == "create:before-rename" and not fired:
            fired.append(step)  # another process finishes its first enrolment now
            with Gallery.create(path, card(), model_ref="toy") as w:
                w.enroll("winner", unit(rng.normal(size=(2, DIM))))

    monkeypatch.setattr(storage, "FAULT_HOOK", winner_first)
    g = Gallery.create(path, card(), populate=lambda g: g.enroll("loser", unit(rng.normal(size=(3, DIM)))))
    with g:
        assert fired and {r.name: r.num_images for r in g.identities()} == {"winner": 2, "loser": 3}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".new")]

    other = tmp_path / "other.gallery"
    fired.clear()

    def other_model_first(step):
        if step == "create:before-rename" and not fired:
            fired.append(step)
            Gallery.create(other, card("other-net", created="2030")).close()

    monkeypatch.setattr(storage, "FAULT_HOOK", other_model_first)
    with pytest.raises(FacemetricError) as e:
        Gallery.create(other, card(), populate=lambda g: g.enroll("x", unit(rng.normal(size=(1, DIM)))))
    assert "was built with model other-net" in one_line(e)
    with Gallery.open(other) as g:
        assert len(g) == 0

    plain = tmp_path / "plain"
    fired.clear()

    def a_folder_first(step):
        if step == "create:before-rename" and not fired:
            fired.append(step)
            plain.mkdir()
            (plain / "notes.txt").write_text("mine")

    monkeypatch.setattr(storage, "FAULT_HOOK", a_folder_first)
    with pytest.raises(FacemetricError) as e:
        Gallery.create(plain, card())
    assert one_line(e) == f"gallery {plain}: already exists and is not a gallery"
    assert [p.name for p in plain.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".new")]


def test_waiting_writer_gives_up_with_one_line(tmp_path, monkeypatch):
    with Gallery.create(tmp_path / "g", card()) as g:
        holder = sqlite3.connect(tmp_path / "g" / "gallery.sqlite", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        monkeypatch.setattr(storage, "LOCK_TIMEOUT_S", 0.05)
        try:
            with pytest.raises(FacemetricError) as e:
                g.enroll("a", np.ones((1, DIM)))
            assert one_line(e) == f"gallery {tmp_path / 'g'} is locked by another writer; retry"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        g.enroll("a", np.ones((1, DIM)))
        assert len(g) == 1


CHILD = r"""
import os, sys
import numpy as np
import facemetric.gallery.storage as storage
from facemetric.gallery import Gallery
from tests.gallery.gallery_helpers import card
def hook(step):
    if step == "enroll:before-commit":
        os._exit(77)
storage.FAULT_HOOK = hook
Gallery.create(sys.argv[1], card(), populate=lambda g: g.enroll("a", np.ones((2, 16))))
"""


def test_killed_first_enrolment_leaves_no_gallery(tmp_path, monkeypatch):
    path = tmp_path / "first.gallery"

    class Crash(BaseException):
        pass

    def crash(step):
        if step == "enroll:before-commit":
            raise Crash

    monkeypatch.setattr(storage, "FAULT_HOOK", crash)
    with pytest.raises(Crash):
        Gallery.create(path, card(), populate=lambda g: g.enroll("a", np.ones((2, DIM))))
    assert list(tmp_path.iterdir()) == []  # no gallery, no build folder
    monkeypatch.setattr(storage, "FAULT_HOOK", None)

    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True)
    assert proc.returncode == 77, proc.stderr
    assert not path.exists()  # killed (no cleanup ran): still no gallery at the path
    assert [p.name.endswith(".new") for p in tmp_path.iterdir()] == [True]
    Gallery.create(path, card()).close()  # the next creation sweeps the dead build folder
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("damage", ["truncated", "wrong-shape", "missing", "wrong-dtype", "nan"])
def test_damaged_vector_file_is_refused_on_open(tmp_path, damage):
    path = tmp_path / "g"
    with Gallery.create(path, card()) as g:
        g.enroll("a", unit(np.random.default_rng(0).normal(size=(5, DIM))))
    seg = next(path.glob("vectors-*.npy"))
    if damage == "truncated":
        seg.write_bytes(seg.read_bytes()[:-7])
    elif damage == "wrong-shape":
        np.save(seg, np.ones((4, DIM), np.float32))
    elif damage == "wrong-dtype":
        np.save(seg, np.ones((5, DIM), np.float64))
    elif damage == "nan":
        v = np.load(seg)
        v[3, 1] = np.nan
        np.save(seg, v)
    else:
        seg.unlink()
    with pytest.raises(DataError) as e:
        Gallery.open(path)
    msg = one_line(e)
    assert msg.startswith(f"gallery {path}: ") and seg.name in msg
    if damage == "nan":
        assert "row 3 holds NaN or inf" in msg


def test_content_key_never_opens_a_fifo(tmp_path):
    from facemetric.gallery.files import content_key

    os.mkfifo(tmp_path / "x.jpg")  # opening it for reading would block forever
    assert content_key(tmp_path / "x.jpg") is None
    (tmp_path / "a.jpg").write_bytes(b"abc")
    assert content_key(tmp_path / "a.jpg") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad:" + str((tmp_path / "a.jpg").resolve()))


def test_corrupted_database_page_is_one_line(tmp_path):
    path = tmp_path / "g"
    _, data = people(300, 2)
    names = [n for n, e in data.items() for _ in range(len(e))]
    with Gallery.create(path, card()) as g:
        g.enroll_many(names, np.concatenate(list(data.values())),
                      sources=[f"/photos/{n}/{i:04d}.jpg" for i, n in enumerate(names)])
    db = path / "gallery.sqlite"
    raw = bytearray(db.read_bytes())
    assert len(raw) > 8 * 4096
    raw[3 * 4096 :] = np.random.default_rng(1).integers(0, 256, len(raw) - 3 * 4096, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(raw))
    with pytest.raises(DataError) as e:
        with Gallery.open(path) as g:
            g.identities()
    assert "gallery.sqlite" in one_line(e)


def test_permission_errors_are_one_line(tmp_path, monkeypatch):
    path = tmp_path / "g"
    Gallery.create(path, card()).close()

    def denied(db, *a, **k):
        raise PermissionError(13, "Permission denied", str(db))

    with monkeypatch.context() as m:
        m.setattr(storage, "_connect", denied)
        with pytest.raises(DataError) as e:
            Gallery.open(path)
        assert "permission denied" in one_line(e) and "gallery.sqlite" in one_line(e)
    with Gallery.open(path) as g:
        def no_write(target, *a, **k):
            raise PermissionError(13, "Permission denied", str(target))

        monkeypatch.setattr(storage, "atomic_write", no_write)
        with pytest.raises(DataError) as e:
            g.enroll("a", np.ones((1, DIM)))
        assert "permission denied" in one_line(e)
        assert len(g) == 0


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with Gallery.create(tmp_path / "g", card(), index="exact") as g:
            g.enroll("a", np.ones((2, DIM)))
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "g") == 0o755
    assert mode(tmp_path / "g" / "gallery.sqlite") == 0o644
    assert [mode(p) for p in (tmp_path / "g").glob("vectors-*.npy")] == [0o644]


def test_missing_gallery_names_the_command(tmp_path):
    with pytest.raises(DataError) as e:
        Gallery.open(tmp_path / "nope")
    assert one_line(e) == (f"gallery {tmp_path / 'nope'} does not exist; create it with "
                           f"`facemetric enroll --gallery {tmp_path / 'nope'} ...`")


def test_duplicates_found_by_content_key_and_by_embedding(tmp_path):
    with Gallery.create(tmp_path / "g", card(), model_ref="toy") as g:
        e = unit(np.random.default_rng(0).normal(size=(3, DIM)))
        g.enroll("a", e[:2], metadata=[{"key": "k0"}, {"key": "k1"}])
        dup = g.duplicates(["a", "a", "b", "a", "a"], None, ["k0", "k9", "k0", "k9", None])
        assert dup.tolist() == [True, False, False, True, False]  # per identity; earlier rows count
        dup = g.duplicates(["a", "b", "a", "a"], e[[1, 1, 2, 2]])
        assert dup.tolist() == [True, False, False, True]
        assert g.model_reference == "toy"
