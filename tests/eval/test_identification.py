"""1:N identification metrics against a straightforward loop reference; gallery/probe splits."""

from __future__ import annotations

import numpy as np
import pytest

from facemetric.errors import FacemetricError
from facemetric.eval.identification import (
    evaluate_identification,
    gallery_probe_split,
    identification_scores,
)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_set(n_ids=30, seed=0, dim=12, noise=1.0):
    """Labelled embeddings, 1..6 images per identity (some single-image identities)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 7, size=n_ids)
    y = np.repeat(np.arange(n_ids), counts)
    centres = unit(rng.normal(size=(n_ids, dim)))
    x = unit(centres[y] + noise * rng.normal(size=(y.size, dim)) / np.sqrt(dim))
    return x.astype(np.float32), y


def reference(g, gl, p, pl, by, far_levels):
    """Plain loops: per probe, per identity, per image."""
    ids = sorted(set(gl.tolist()))
    ranks, true_scores, tops, mated = [], [], [], []
    for q, lab in zip(p, pl, strict=True):
        score = {}
        for c in ids:
            vals = [float(np.dot(q.astype(np.float64), g[i])) for i in range(len(gl)) if gl[i] == c]
            score[c] = max(vals) if by == "max" else sum(vals) / len(vals)
        tops.append(max(score.values()))
        if lab in score:
            mated.append(True)
            true_scores.append(score[lab])
            ranks.append(1 + sum(v > score[lab] for c, v in score.items() if c != lab))
        else:
            mated.append(False)
            true_scores.append(np.nan)
            ranks.append(0)
    mated = np.array(mated)
    n_m = mated.sum()
    cmc = [sum(1 for r, m in zip(ranks, mated, strict=True) if m and r <= k) / n_m for k in range(1, len(ids) + 1)]
    dirs = {}
    non = sorted((t for t, m in zip(tops, mated, strict=True) if not m), reverse=True)
    for a in far_levels:
        if len(non) * a < 1:
            continue
        k = int(np.floor(a * len(non) + 1e-9))
        # lowest threshold accepting at most k non-mated probes: just above the (k+1)-th best
        t = np.nextafter(non[k], np.inf)
        far = sum(s >= t for s in non) / len(non)
        det = sum(1 for r, s, m in zip(ranks, true_scores, mated, strict=True) if m and r == 1 and s >= t)
        dirs[f"{a:.0e}"] = (det / n_m, far, t)
    return cmc, dirs


@pytest.mark.parametrize("by", ["max", "mean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_against_loop_reference(by, seed):
    x, y = make_set(seed=seed)
    split = gallery_probe_split(y, seed=seed, n_enrol=2, impostor_fraction=0.3)
    g, gl = x[split.gallery], y[split.gallery]
    p, pl = x[split.probes], y[split.probes]
    levels = (0.05, 0.1, 0.3)
    res = evaluate_identification(g, gl, p, pl, by=by, ranks=(1, 5), far_levels=levels)
    cmc, dirs = reference(g, gl, p, pl, by, levels)
    np.testing.assert_allclose(res["cmc"], cmc, atol=1e-12)
    assert res["rank_1"] == pytest.approx(cmc[0]) and res["rank_5"] == pytest.approx(cmc[4])
    assert res["num_mated"] == split.num_mated and res["num_non_mated"] == split.num_non_mated
    assert set(res["dir_at_far"]) == set(dirs)
    for key, (d, far, t) in dirs.items():
        assert res["dir_at_far"][key] == pytest.approx(d)
        assert res["far_at_threshold"][key] == pytest.approx(far)
        assert res["threshold_at_far"][key] == pytest.approx(t, abs=1e-6)
    assert 0 < res["rank_1"] < 1  # nontrivial data


def test_scores_and_ranks_detail():
    x, y = make_set(seed=3)
    split = gallery_probe_split(y, seed=0)
    r = identification_scores(x[split.gallery], y[split.gallery], x[split.probes], y[split.probes])
    assert (r["rank"][r["mated"]] >= 1).all() and (r["rank"][~r["mated"]] == 0).all()
    np.testing.assert_array_equal(r["mated"], split.mated)
    top1 = r["mated"] & (r["rank"] == 1)
    np.testing.assert_array_equal(r["identities"][r["top_identity"][top1]], y[split.probes][top1])
    assert np.isnan(r["true_score"][~r["mated"]]).all()


def test_far_levels_skipped_without_enough_non_mated():
    x, y = make_set(n_ids=60, seed=0)
    split = gallery_probe_split(y, seed=0)
    res = evaluate_identification(x[split.gallery], y[split.gallery], x[split.probes], y[split.probes])
    n_non = res["num_non_mated"]
    assert 10 <= n_non < 100
    assert res["dir_at_far_skipped"] == ["1e-03", "1e-02"] and list(res["dir_at_far"]) == ["1e-01"]


def test_gallery_probe_split():
    # LFW-like: many identities with one image (impostors), some with several
    y = np.array([f"solo{i}" for i in range(10)] + ["a"] * 4 + ["b"] * 2 + ["c"] * 3)
    s = gallery_probe_split(y, seed=5)
    assert sorted(y[s.gallery]) == ["a", "b", "c"]
    assert np.intersect1d(s.gallery, s.probes).size == 0
    assert np.union1d(s.gallery, s.probes).size == y.size
    np.testing.assert_array_equal(s.mated, ~np.char.startswith(y[s.probes], "solo"))
    assert s.num_mated == 6 and s.num_non_mated == 10
    s2 = gallery_probe_split(y, seed=5)
    np.testing.assert_array_equal(s.gallery, s2.gallery)
    picks = {tuple(gallery_probe_split(y, seed=k).gallery) for k in range(10)}
    assert len(picks) > 1  # the enrolled image is random
    s = gallery_probe_split(y, seed=0, n_enrol=2)
    assert sorted(y[s.gallery]) == ["a", "a", "c", "c"]  # b has only 2 images: impostor
    held = gallery_probe_split(np.repeat(np.arange(20), 3), seed=1, impostor_fraction=0.25)
    assert np.unique(np.repeat(np.arange(20), 3)[held.gallery]).size == 15
    assert held.num_non_mated == 15 and held.num_mated == 30
    for bad in (dict(n_enrol=0), dict(impostor_fraction=1.0), dict(impostor_fraction="x")):
        with pytest.raises(FacemetricError):
            gallery_probe_split(y, **bad)
    with pytest.raises(FacemetricError):
        gallery_probe_split(np.arange(5))  # nobody has 2 images


def test_input_errors():
    x, y = make_set(seed=0)
    with pytest.raises(FacemetricError):
        evaluate_identification(x, y[:-1], x, y)
    with pytest.raises(FacemetricError):
        evaluate_identification(x, y, x[:, :5], y)
    with pytest.raises(FacemetricError):
        evaluate_identification(x, y, x, y, by="median")
    with pytest.raises(FacemetricError):
        evaluate_identification(x, y, x, y, far_levels=(2.0,))
