"""EmbeddingSet: embedding an identity folder with filters, atomic save/load round trip, model
check; identification_report on it equals the metrics computed by hand on the same split."""

from __future__ import annotations

import numpy as np
import pytest

import facemetric
from facemetric.errors import DataError, FacemetricError
from facemetric.eval.embedding_set import EmbeddingSet, embed_identity_folder
from facemetric.eval.identification import (
    evaluate_identification,
    gallery_probe_split,
    identification_report,
)
from tests.toy_faces import make_toy_folder, make_toy_model


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return make_toy_model(root / "model"), make_toy_folder(root / "faces")


def test_embeds_the_folder_with_filters(toy, monkeypatch):
    model, folder = toy
    monkeypatch.chdir(folder.parent)
    s = embed_identity_folder(model, folder.name, progress=False)  # a relative folder
    assert len(s) == 20 and s.num_identities == 7 and s.dim == 8
    embedder = facemetric.load_model(model)
    np.testing.assert_allclose(s.embeddings, embedder.embed(list(s.paths)), atol=1e-6)
    assert [p.split("/")[-2] for p in s.paths] == s.identities.tolist()
    assert all(p.startswith("/") for p in s.paths)  # absolute: usable from any directory
    assert s.summary()["identities_with_2_or_more"] == 5

    two = embed_identity_folder(model, folder, min_images=3, per_identity=2, progress=False)
    assert two.identities.tolist() == ["anna", "anna", "bert", "bert", "carl", "carl", "dora", "dora"]
    assert [p.rsplit("/", 1)[1] for p in two.paths] == ["00.png", "01.png"] * 4
    some = embed_identity_folder(model, folder, people=["bert", "gina"], progress=False)
    assert sorted(set(some.identities.tolist())) == ["bert", "gina"] and len(some) == 6


def test_save_load_round_trip_and_model_check(toy, tmp_path):
    model, folder = toy
    out = tmp_path / "sub" / "emb.npz"
    s = embed_identity_folder(model, folder, flip=True, out=out, progress=False)
    assert out.is_file() and not [p for p in out.parent.iterdir() if p.name != "emb.npz"]  # no temp file
    t = EmbeddingSet.load(out)
    assert np.array_equal(t.embeddings, s.embeddings) and np.array_equal(t.norms, s.norms)
    assert t.identities.tolist() == s.identities.tolist() and t.paths.tolist() == s.paths.tolist()
    assert t.meta["flip"] is True and t.meta["fingerprint"] == s.meta["fingerprint"]
    t.check_model(facemetric.load_model(model).card)
    other = make_toy_model(tmp_path / "other", name="other-toy", seed=1)
    with pytest.raises(FacemetricError, match="made by model toy-lenets"):
        t.check_model(facemetric.load_model(other).card)

    with pytest.raises(DataError, match="not found"):
        EmbeddingSet.load(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a facemetric embeddings file"):
        EmbeddingSet.load(bad)


def test_identification_report_equals_the_split_by_hand(toy):
    model, folder = toy
    s = embed_identity_folder(model, folder, progress=False)
    r = identification_report(s, n_enrol=1, seed=3, ranks=(1, 2))
    split = gallery_probe_split(s.identities, seed=3, n_enrol=1)
    u = s.embeddings / np.linalg.norm(s.embeddings, axis=1, keepdims=True)
    direct = evaluate_identification(u[split.gallery], s.identities[split.gallery], u[split.probes],
                                     s.identities[split.probes], ranks=(1, 2), max_rank=50)
    for key in ("rank_1", "rank_2", "cmc", "num_mated", "num_non_mated"):
        assert r[key] == pytest.approx(direct[key])
    assert r["protocol"]["enrolled_identities"] == 5 and r["protocol"]["non_mated_probes"] == 2
    assert r["protocol"]["mated_probes"] == 13 and r["data"]["images"] == 20

    many = identification_report(s, n_enrol=1, seed=0, repeats=4, ranks=(1,))
    singles = [identification_report(s, n_enrol=1, seed=k, ranks=(1,))["rank_1"] for k in range(4)]
    assert many["rank_1"] == pytest.approx(np.mean(singles)) and many["rank_1_std"] == pytest.approx(np.std(singles))
    assert [run["seed"] for run in many["runs"]] == [0, 1, 2, 3]
    with pytest.raises(FacemetricError, match="repeats"):
        identification_report(s, repeats=0)


def test_select_by_people_and_min_images(toy, tmp_path):
    model, folder = toy
    s = embed_identity_folder(model, folder, progress=False)
    people = tmp_path / "people.txt"
    people.write_text("3\nanna\t4\ncarl\t3\nfred\t1\n")
    sub = s.select(people)
    assert sorted(set(sub.identities.tolist())) == ["anna", "carl", "fred"] and len(sub) == 8
    np.testing.assert_array_equal(sub.embeddings, s.embeddings[np.isin(s.identities, ["anna", "carl", "fred"])])
    assert sorted(set(s.select(min_images=4).identities.tolist())) == ["anna", "bert", "dora"]
    assert len(s.select(["anna", "fred"], min_images=2)) == 4
    with pytest.raises(FacemetricError, match="no identity left"):
        s.select(["nobody"])


def test_nothing_embedded_is_an_error_not_an_empty_file(toy, tmp_path):
    model, _ = toy
    small = tmp_path / "small" / "x"
    small.mkdir(parents=True)
    (small / "a.png").write_bytes(b"not a png")
    out = tmp_path / "e.npz"
    with pytest.raises(DataError, match=r"none of its 1 photos could be embedded \(first: .*a.png: "):
        embed_identity_folder(model, small.parent, out=out, progress=False)
    assert not out.exists()


def test_report_gives_the_size_aware_default_threshold(toy):
    from facemetric.eval.identification import identification_scores
    from facemetric.eval.open_set import tail_threshold

    model, folder = toy
    s = embed_identity_folder(model, folder, progress=False)
    assert "default_threshold" not in identification_report(s)  # the toy card has no tail
    tail = {"levels": [[1e-1, 0.2], [1e-2, 0.6], [1e-3, 0.9]]}
    s.meta["card"]["impostor_tail"] = tail
    r = identification_report(s, seed=2, default_far=0.05)
    split = gallery_probe_split(s.identities, seed=2)
    t = tail_threshold(tail, split.gallery.size, 0.05)
    u = s.unit()
    sc = identification_scores(u[split.gallery], s.identities[split.gallery], u[split.probes], s.identities[split.probes])
    m = sc["mated"]
    assert r["default_threshold"]["threshold"] == pytest.approx(t)
    assert r["default_threshold"]["far"] == pytest.approx(np.mean(sc["top_score"][~m] >= t))
    hits = (sc["rank"] == 1) & m & (sc["true_score"] >= t)
    assert r["default_threshold"]["dir"] == pytest.approx(hits.sum() / m.sum())
    assert r["default_threshold"]["far_target"] == 0.05
    many = identification_report(s, repeats=3, default_far=0.05)
    assert set(many["default_threshold"]) == {"threshold", "far", "dir", "far_target"}
