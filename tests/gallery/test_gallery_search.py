"""Search results against brute force: exact/faiss indexes, max/mean aggregation, chunking."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facemetric.gallery import Gallery
from facemetric.index.search import (
    ExactIndex,
    first_distinct,
    identity_centroids,
    identity_score_blocks,
    top_identities_max,
    topk_inner_product,
)
from tests.gallery.gallery_helpers import DIM, card, unit


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


KINDS = ["exact"] + (["faiss", "faiss-ivf"] if _has_faiss() else [])


def brute_force(queries, groups: dict[str, np.ndarray], by: str, k: int):
    out = []
    for q in queries:
        scores = {n: float((np.max if by == "max" else np.mean)(e.astype(np.float64) @ q)) for n, e in groups.items()}
        out.append(sorted(scores.items(), key=lambda t: -t[1])[:k])
    return out


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(40, DIM)))
    groups = {}
    path = tmp_path_factory.mktemp("search") / "g"
    g = Gallery.create(path, card())
    for i in range(40):
        n = int(rng.integers(1, 12))  # uneven: "max" needs k' doubling for some queries
        groups[f"p{i:02d}"] = unit(centres[i] + 0.5 * rng.normal(size=(n, DIM)))
        g.enroll(f"p{i:02d}", groups[f"p{i:02d}"])
    queries = unit(np.r_[centres[:10] + 0.4 * rng.normal(size=(10, DIM)), rng.normal(size=(5, DIM))])
    yield g, groups, queries
    g.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("by", ["max", "mean"])
def test_search_matches_brute_force(filled, kind, by):
    g, groups, queries = filled
    if kind == "faiss-ivf":
        g.nprobe = 10_000  # all lists visited: exact
    res = g.search(queries, k=7, by=by, card=card(), index=kind)
    ref = brute_force(queries, groups, by, 7)
    for got, want in zip(res, ref, strict=True):
        assert [m.identity for m in got] == [n for n, _ in want]
        np.testing.assert_allclose([m.score for m in got], [s for _, s in want], atol=1e-5)
        np.testing.assert_allclose([m.distance for m in got], [2 - 2 * s for _, s in want], atol=1e-5)
    g.nprobe = None


def test_k_larger_than_identities(filled):
    g, groups, queries = filled
    res = g.search(queries[:2], k=100, card=card(), index="exact")
    assert all(len(r) == len(groups) for r in res)
    assert all(len({m.identity for m in r}) == len(groups) for r in res)


def test_topk_chunk_merging_and_mask():
    rng = np.random.default_rng(2)
    x = unit(rng.normal(size=(1000, 8)))
    q = unit(rng.normal(size=(37, 8)))
    live = rng.random(1000) > 0.3
    bias = np.where(live, 0, -np.inf).astype(np.float32)
    s, r = topk_inner_product(q, x, 9, bias, chunk_elements=500)  # many tiny blocks
    full = q @ x.T
    full[:, ~live] = -np.inf
    ref = np.argsort(-full, axis=1, kind="stable")[:, :9]
    np.testing.assert_allclose(s, np.take_along_axis(full, ref, 1), atol=1e-6)
    assert live[r].all()
    s, r = topk_inner_product(q, x[:3], 5)  # fewer rows than k: padded
    assert (r[:, 3:] == -1).all() and np.isneginf(s[:, 3:]).all()


def test_first_distinct():
    ids = np.array([[3, 3, 1, -1, 2, 1], [5, 5, 5, 5, 5, 5], [-1, -1, -1, 0, 1, 0]])
    pos, count = first_distinct(ids, 2)
    np.testing.assert_array_equal(pos, [[0, 2], [0, -1], [3, 4]])
    np.testing.assert_array_equal(count, [3, 1, 2])


def test_max_and_mean_scores_without_python_loops_agree_with_blocks():
    rng = np.random.default_rng(4)
    x = unit(rng.normal(size=(300, DIM)))
    row_id = rng.integers(0, 25, size=300)
    row_id[:20] = -1  # dead rows
    q = unit(rng.normal(size=(11, DIM)))
    s_max, i_max = top_identities_max(ExactIndex(x, row_id >= 0), q, row_id, 25, 4)
    cent, counts = identity_centroids(x, row_id, 25)
    blocks = list(identity_score_blocks(q, x, row_id, 25, "max", chunk_elements=64))
    assert len(blocks) > 1 and [b[0] for b in blocks] == list(range(0, 11, 2))
    full_max = np.concatenate([b[1] for b in blocks])
    ((_, full_mean),) = identity_score_blocks(q, x, row_id, 25, "mean")
    assert np.isneginf(full_max[:, counts == 0]).all()
    for c in range(25):
        rows = (row_id == c)
        if rows.any():
            np.testing.assert_allclose(full_max[:, c], (q @ x[rows].T).max(1), atol=1e-6)
            np.testing.assert_allclose(full_mean[:, c], (q @ x[rows].T).mean(1), atol=1e-6)
            np.testing.assert_allclose(cent[c], x[rows].mean(0), atol=1e-6)
    np.testing.assert_allclose(s_max, -np.sort(-full_max, 1)[:, :4], atol=1e-6)


@pytest.mark.skipif(not _has_faiss(), reason="faiss not importable")
def test_ivf_index_persisted_and_stale_one_rebuilt(tmp_path):
    rng = np.random.default_rng(0)
    g = Gallery.create(tmp_path / "g", card(), index="faiss-ivf")
    g.enroll("a", rng.normal(size=(400, DIM)))
    g.enroll("b", rng.normal(size=(400, DIM)))
    q = unit(rng.normal(size=(3, DIM)))
    g.search(q, card=card())
    gen = int(g._meta()["generation"])
    side = json.loads((tmp_path / "g" / f"index-{gen:08d}-ivf.json").read_text())
    assert side["generation"] == gen and side["num_rows"] == 800 and side["dim"] == DIM
    # a new generation: the old index is stale, a new one is built, the old one cleaned up
    g.enroll("c", rng.normal(size=(5, DIM)))
    hits = g.search(q, k=3, card=card())
    assert len(hits[0]) == 3
    g2 = Gallery.open(tmp_path / "g", index="faiss-ivf")
    g2.enroll("d", rng.normal(size=(1, DIM)))  # a write cleans stale index files
    names = sorted(p.name for p in (tmp_path / "g").glob("index-*"))
    assert all(f"{gen:08d}" not in n for n in names)
    # a sidecar that lies about the rows: the index is rebuilt, never used
    gen = int(g2._meta()["generation"])
    g2.search(q, card=card())
    sidecar = tmp_path / "g" / f"index-{gen:08d}-ivf.json"
    info = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**info, "num_rows": 5}))
    (tmp_path / "g" / f"index-{gen:08d}-ivf.faiss").write_bytes(b"garbage")
    g3 = Gallery.open(tmp_path / "g", index="faiss-ivf", nprobe=10_000)
    exact = g3.search(q, k=4, card=card(), index="exact")
    ivf = g3.search(q, k=4, card=card())
    assert [[m.identity for m in r] for r in ivf] == [[m.identity for m in r] for r in exact]
    assert json.loads(sidecar.read_text())["num_rows"] == 806
    for x in (g, g2, g3):
        x.close()


def test_without_faiss(tmp_path, monkeypatch):
    import sys

    from facemetric.cluster import cluster_embeddings
    from facemetric.errors import FacemetricError
    from facemetric.index.search import faiss_available

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    assert not faiss_available()
    rng = np.random.default_rng(0)
    with Gallery.create(tmp_path / "g", card()) as g:
        g.enroll("a", rng.normal(size=(3, DIM)))
        g.enroll("b", rng.normal(size=(3, DIM)))
        assert len(g.search(rng.normal(size=DIM), k=2, card=card())[0]) == 2  # auto -> exact
        assert g._vector_index.index_for(g.snapshot()).kind == "exact"
        for kind in ("faiss", "faiss-ivf"):
            with pytest.raises(FacemetricError) as e:
                g.search(rng.normal(size=DIM), card=card(), index=kind)
            assert "needs faiss" in str(e.value) and "\n" not in str(e.value)
    labels = cluster_embeddings(unit(rng.normal(size=(30, DIM))), threshold=0.5, k=5)
    assert labels.shape == (30,)
    with pytest.raises(FacemetricError):
        cluster_embeddings(unit(rng.normal(size=(30, DIM))), threshold=0.5, backend="faiss")
