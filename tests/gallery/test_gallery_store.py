"""Gallery: enrolment, listing, removal, persistence, model checks and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facemetric.errors import DataError, FacemetricError
from facemetric.gallery import (
    UNKNOWN,
    Gallery,
    calibrate_threshold,
    card_similarity_threshold,
    model_fingerprint,
)
from tests.gallery.gallery_helpers import DIM, card, people, unit


@pytest.fixture
def gallery(tmp_path):
    g = Gallery.create(tmp_path / "g", card(), index="exact")
    yield g
    g.close()


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_create_enroll_list_and_reopen(tmp_path):
    _, data = people(4, 3)
    with Gallery.create(tmp_path / "g", card()) as g:
        ids = g.enroll("id000", data["id000"], sources=["a.jpg", "b.jpg", "c.jpg"],
                       metadata={"camera": 1}, identity_metadata={"dept": "x"})
        assert len(ids) == 3 and ids == sorted(ids)
        g.enroll("id001", data["id001"][:2])
        g.enroll("id000", data["id000"][:1] * 5.0, metadata=[{"k": 7}])  # raw scale: normalised
        assert len(g) == 6 and g.num_identities == 2
    files = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert "gallery.sqlite" in files and sum(f.startswith("vectors-") for f in files) == 3
    with Gallery.open(tmp_path / "g") as g:
        idents = g.identities()
        assert [(r.name, r.num_images) for r in idents] == [("id000", 4), ("id001", 2)]
        assert idents[0].metadata == {"dept": "x"}
        imgs = g.images("id000")
        assert [i.source for i in imgs] == ["a.jpg", "b.jpg", "c.jpg", None]
        assert imgs[0].metadata == {"camera": 1} and imgs[3].metadata == {"k": 7}
        emb = g.embeddings("id000")
        np.testing.assert_allclose(emb, unit(np.r_[data["id000"], data["id000"][:1]]), atol=1e-6)
        assert g.fingerprint == model_fingerprint(card())


def test_remove_identity_images_and_compact(gallery):
    _, data = people(5, 4)
    for name, e in data.items():
        gallery.enroll(name, e)
    q = data["id002"][0]
    assert gallery.search(q, k=1, card=card())[0][0].identity == "id002"
    assert gallery.remove_identity("id002") == 4
    assert "id002" not in [m.identity for m in gallery.search(q, k=5, card=card())[0]]
    drop = [i.id for i in gallery.images("id003")[:3]]
    assert gallery.remove_images(drop) == 3
    assert [(r.name, r.num_images) for r in gallery.identities()][2] == ("id003", 1)
    before = gallery.search(unit(np.stack(list(data.values()))[:, 0]), k=4, card=card())
    rows_before = int(gallery._meta()["num_rows"])
    gallery.compact()
    assert int(gallery._meta()["num_rows"]) == len(gallery) == 13 < rows_before
    assert len(list(gallery.path.glob("vectors-*.npy"))) == 1
    after = gallery.search(unit(np.stack(list(data.values()))[:, 0]), k=4, card=card())
    for a, b in zip(before, after, strict=True):
        assert [m.identity for m in a] == [m.identity for m in b]
        np.testing.assert_allclose([m.score for m in a], [m.score for m in b], atol=1e-6)
    np.testing.assert_allclose(gallery.embeddings("id003"), data["id003"][3:], atol=1e-6)
    # an identity whose images were all removed stays listed, with 0 images, and is never found
    gallery.remove_images([gallery.images("id003")[0].id])
    assert ("id003", 0) in [(r.name, r.num_images) for r in gallery.identities()]
    hits = gallery.search(data["id003"][3], k=10, card=card(), by="mean")[0]
    assert "id003" not in [m.identity for m in hits] and len(hits) == 3


def test_many_enrolments_merge_segments(gallery):
    rng = np.random.default_rng(1)
    for i in range(20):
        gallery.enroll(f"p{i}", rng.normal(size=(2, DIM)))
    assert len(list(gallery.path.glob("vectors-*.npy"))) <= 17
    assert len(gallery) == 40
    assert {r.num_images for r in gallery.identities()} == {2}


def test_fingerprint_fields():
    base = model_fingerprint(card())
    assert model_fingerprint(card(thresholds={"best_accuracy": 0.3}, metrics={"x": 1})) == base
    assert model_fingerprint(card(preprocessing={"input_size": [96, 96]})) != base
    assert model_fingerprint(card(alignment={"template": "dlib-150"})) != base
    assert model_fingerprint(card(created="2025-01-01")) != base  # another training run
    hashed = card(source={"sha256": "ab" * 32})
    assert model_fingerprint({**hashed, "created": "other", "name": "x"}) == model_fingerprint(hashed)


def test_card_threshold_conversion():
    rng = np.random.default_rng(0)
    a, b = unit(rng.normal(size=(2000, 8))).astype(np.float64), unit(rng.normal(size=(2000, 8))).astype(np.float64)
    cos = np.sum(a * b, 1)
    d2 = np.sum((a - b) ** 2, 1)
    for t in (0.5, 1.0, 1.3):
        s = card_similarity_threshold(card(thresholds={"best_accuracy": t}))
        assert s == pytest.approx(1 - t / 2)
        away = np.abs(d2 - t) > 1e-9
        np.testing.assert_array_equal((cos >= s)[away], (d2 < t)[away])
        s = card_similarity_threshold(card(distance="euclidean", thresholds={"best_accuracy": t}))
        away = np.abs(np.sqrt(d2) - t) > 1e-9
        np.testing.assert_array_equal((cos >= s)[away], (np.sqrt(d2) < t)[away])
        assert s == pytest.approx(1 - t * t / 2)
    assert card_similarity_threshold(card(distance="cosine", thresholds={"x": 0.4}), "x") == pytest.approx(0.6)
    assert card_similarity_threshold(card(), "far_1e-03") == pytest.approx(0.6)
    assert card_similarity_threshold(card(default_threshold="far_1e-03")) == pytest.approx(0.6)
    assert card_similarity_threshold(card()) == np.nextafter(0.5, 1.0)  # keeps d < t strict
    with pytest.raises(FacemetricError) as e:
        card_similarity_threshold(card(distance="euclidean", normalize_embeddings=False,
                                       thresholds={"dlib_default": 0.6}, default_threshold="dlib_default"))
    assert "no cosine equivalent" in one_line(e)
    with pytest.raises(FacemetricError) as e:
        card_similarity_threshold(card(), "nope")
    assert "nope" in one_line(e)


def test_identify_open_set(gallery):
    centres, data = people(7, 3, noise=0.2)
    data.pop("id006")  # a face never enrolled
    for name, e in data.items():
        gallery.enroll(name, e)
    probe = unit(centres[1] + 0.2 * np.random.default_rng(5).normal(size=DIM))
    res = gallery.identify(probe, card=card())
    assert res.identity == "id001" and res.known and res.threshold == pytest.approx(0.5)
    assert res.distance == pytest.approx(2 - 2 * res.score)
    stranger = unit(np.random.default_rng(9).normal(size=DIM))
    res = gallery.identify(stranger, card=card(), threshold=0.99)
    assert res.identity == UNKNOWN and not res.known and res.candidate in data
    both = gallery.identify(np.stack([probe, stranger]), card=card(), threshold=0.99)
    assert isinstance(both, list) and len(both) == 2
    # calibration on labelled probes: impostors = the best score among other identities
    rng = np.random.default_rng(3)
    probes = unit(centres[np.arange(600) % 7] + 0.15 * rng.normal(size=(600, DIM)))
    labels = [f"id{i % 7:03d}" for i in range(600)]  # "id006" is not enrolled: non-mated
    for by in ("max", "mean"):
        cal = gallery.calibrate(probes, labels, card=card(), far=0.01, by=by)
        genuine, impostor = [], []
        for p, lab in zip(probes, labels, strict=True):
            s = {n: (np.max if by == "max" else np.mean)(e @ p) for n, e in data.items()}
            if lab in s:
                genuine.append(s[lab])
            impostor.append(max(v for n, v in s.items() if n != lab))
        ref = calibrate_threshold(genuine, impostor, far=0.01)
        assert cal.threshold == pytest.approx(ref.threshold, abs=1e-6)
        assert cal.tar == pytest.approx(ref.tar, abs=2 / 600) and cal.far <= 0.01
        assert cal.num_impostor == 600 and cal.num_genuine == sum(x != "id006" for x in labels)
    assert cal.tar > 0.8
    res = gallery.identify(probes, card=card(), threshold=cal)
    assert all(r.score >= float(cal) for r in res if r.known)


def test_empty_gallery_search(gallery):
    assert gallery.search(np.ones(DIM), k=3, card=card()) == [[]]
    res = gallery.identify(np.ones(DIM), card=card())
    assert res.identity == UNKNOWN and res.candidate is None


def test_enroll_images_with_an_embedder(gallery):
    class FakeEmbedder:
        def __init__(self, c):
            self.card = c

        def embed(self, images, batch_size=64, flip=False):
            items = [images] if isinstance(images, str) else list(images)
            return unit(np.stack([np.random.default_rng(len(s)).normal(size=DIM) for s in items]))

    emb = FakeEmbedder(card())
    gallery.enroll_images("ann", ["x.jpg", "xyz.jpg"], emb)
    assert [i.source for i in gallery.images("ann")] == ["x.jpg", "xyz.jpg"]
    assert gallery.identify_images("x.jpg", emb).identity == "ann"
    assert gallery.search_images(["xyz.jpg"], emb, k=1)[0][0].score == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(FacemetricError) as e:
        gallery.enroll_images("bob", ["x.jpg"], FakeEmbedder(card("other", created="x")))
    assert "was built with model toy" in one_line(e)


def test_errors_are_one_line(tmp_path, gallery):
    with pytest.raises(DataError) as e:
        Gallery.open(tmp_path / "missing")
    assert "does not exist" in one_line(e)
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError) as e:
        Gallery.open(tmp_path / "plain")
    assert "not a gallery" in one_line(e)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "gallery.sqlite").write_text("not sqlite at all" * 100)
    with pytest.raises(DataError) as e:
        Gallery.open(tmp_path / "bad")
    one_line(e)
    with pytest.raises(FacemetricError) as e:
        Gallery.create(gallery.path, card())
    assert "already exists" in one_line(e)

    gallery.enroll("a", np.ones((1, DIM)))
    with pytest.raises(FacemetricError) as e:
        gallery.enroll("a", np.ones((2, DIM + 1)))
    assert f"expected dimension {DIM}" in one_line(e)
    bad = np.ones((3, DIM))
    bad[1, 2] = np.nan
    with pytest.raises(FacemetricError) as e:
        gallery.enroll("a", bad)
    assert "row 1 contains NaN" in one_line(e)
    with pytest.raises(FacemetricError) as e:
        gallery.search(np.full(DIM, np.inf), card=card())
    one_line(e)
    with pytest.raises(FacemetricError) as e:
        gallery.enroll("a", np.zeros((1, DIM)))
    assert "zero vector" in one_line(e)
    with pytest.raises(FacemetricError) as e:
        gallery.remove_identity("nobody")
    assert "identity 'nobody': not in gallery" in one_line(e)
    with pytest.raises(FacemetricError) as e:
        gallery.images("nobody")
    one_line(e)
    with pytest.raises(FacemetricError) as e:
        gallery.remove_images([999])
    assert "image 999" in one_line(e)
    with pytest.raises(FacemetricError) as e:
        gallery.enroll(UNKNOWN, np.ones((1, DIM)))
    one_line(e)
    with pytest.raises(FacemetricError) as e:
        gallery.enroll("b", np.ones((2, DIM)), sources=["only-one"])
    one_line(e)
    with pytest.raises(FacemetricError) as e:
        gallery.search(np.ones(DIM), card=card(), by="median")
    one_line(e)
    other = card("resnet-b", created="2024-02-02")
    with pytest.raises(FacemetricError) as e:
        gallery.search(np.ones(DIM), card=other)
    msg = one_line(e)
    assert msg.startswith(f"gallery {gallery.path} was built with model toy (fingerprint ")
    assert "the query was embedded by resnet-b" in msg
    with pytest.raises(FacemetricError) as e:
        gallery.identify(np.ones(DIM), card="0" * 64)
    assert "another model" in one_line(e)
    gallery.check_model(gallery.fingerprint)
    with pytest.raises(FacemetricError) as e:
        gallery.enroll("c", np.ones((1, DIM)), card=other)
    one_line(e)
    assert [r.name for r in gallery.identities()] == ["a"]  # failed writes changed nothing
    assert len(gallery) == 1
    with pytest.raises(FacemetricError) as e:
        gallery.enroll("c", np.ones((1, DIM)), metadata={"x": object()})
    assert "JSON" in one_line(e)


def test_stored_card_and_meta(gallery):
    meta = gallery._meta()
    assert json.loads(meta["model_card"])["name"] == "toy"
    assert meta["fingerprint"] == model_fingerprint(card())
    mode = gallery._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"


def test_enroll_many_bulk(gallery):
    _, data = people(5, 3)
    names = [n for n, e in data.items() for _ in range(len(e))]
    emb = np.concatenate(list(data.values()))
    ids = gallery.enroll_many(names, emb, sources=[f"{n}.jpg" for n in names])
    assert len(ids) == 15 and len(list(gallery.path.glob("vectors-*.npy"))) == 1
    assert [(r.name, r.num_images) for r in gallery.identities()] == [(n, 3) for n in data]
    gallery.enroll_many(["id000", "new"], emb[:2])
    assert [r.num_images for r in gallery.identities()] == [4, 3, 3, 3, 3, 1]
    np.testing.assert_allclose(gallery.embeddings("new"), emb[1:2], atol=1e-6)
    with pytest.raises(FacemetricError) as e:
        gallery.enroll_many(["a"], emb[:2])
    assert "one per embedding" in one_line(e)
    with pytest.raises(FacemetricError):
        gallery.enroll_many(["a", UNKNOWN], emb[:2])


def test_corrupt_vectors_and_foreign_database_are_one_line_errors(tmp_path):
    import sqlite3

    with Gallery.create(tmp_path / "g", card()) as g:
        g.enroll("a", np.ones((2, DIM)))
    seg = next((tmp_path / "g").glob("vectors-*.npy"))
    seg.write_bytes(b"not numpy")
    with pytest.raises(DataError) as e:  # refused when opened, naming the file
        Gallery.open(tmp_path / "g")
    assert "corrupt gallery" in one_line(e) and seg.name in one_line(e)
    seg.unlink()
    with pytest.raises(DataError) as e:
        Gallery.open(tmp_path / "g")
    assert f"vectors file missing: {seg.name}" in one_line(e)
    (tmp_path / "other").mkdir()
    sqlite3.connect(tmp_path / "other" / "gallery.sqlite").execute("CREATE TABLE x (y)").connection.close()
    with pytest.raises(DataError) as e:
        Gallery.open(tmp_path / "other")
    assert "not a readable gallery database" in one_line(e)
