"""Feature norm as face quality: correlations, error-versus-reject curves, norms from a model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

import facemetric
from facemetric.cli.main import main
from facemetric.errors import FacemetricError
from facemetric.eval import quality_analysis

# ---- synthetic data --------------------------------------------------------------------------


def _noisy_low_norm_pairs(seed=0, n=600, dim=32):
    """Even pairs genuine; each side = identity direction + noise of scale 3 / norm.

    The norms are drawn independently of everything else, so low-norm pairs are exactly the
    noisy ones: rejecting them should help, rejecting at random should not.
    """
    rng = np.random.default_rng(seed)
    g = np.arange(n) % 2 == 0
    ident = rng.normal(size=(n, dim))
    ident /= np.linalg.norm(ident, axis=1, keepdims=True)
    other = rng.normal(size=(n, dim))
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    n1 = rng.uniform(1.0, 10.0, n)
    n2 = rng.uniform(1.0, 10.0, n)

    def noise(norms):
        return (3.0 / norms)[:, None] * rng.normal(size=(n, dim)) / np.sqrt(dim)

    a = ident + noise(n1)
    b = np.where(g[:, None], ident, other) + noise(n2)
    return a, b, g, n1, n2


def _unit_pairs_at(distances):
    """2-D unit vectors whose cosine distance is ``distances`` (each in [0, 2])."""
    theta = np.arccos(1.0 - np.asarray(distances, dtype=np.float64))
    a = np.tile([1.0, 0.0], (len(theta), 1))
    b = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return a, b


# ---- (a) rejecting low-norm pairs helps, random rejection does not ---------------------------


def test_rejecting_low_norm_pairs_beats_random_rejection():
    a, b, g, n1, n2 = _noisy_low_norm_pairs()
    r = quality_analysis(a, b, g, n1, n2)
    json.dumps(r, allow_nan=False)  # strict JSON
    curve = {p["reject_fraction"]: p for p in r["curve"]}
    base = curve[0.0]["norm"]["accuracy"]
    assert curve[0.0]["random"]["accuracy"] == pytest.approx(base)  # nothing rejected
    assert base < 0.95  # there are errors to remove
    for frac in (0.2, 0.3, 0.4, 0.5):
        by_norm, rand = curve[frac]["norm"]["accuracy"], curve[frac]["random"]["accuracy"]
        assert by_norm >= base + 0.04, (frac, base, by_norm)
        assert abs(rand - base) < 0.02, (frac, base, rand)
        assert by_norm > rand + 0.03
    # FNMR at FMR 1e-2 (300 impostors) drops with norm rejection only; 1e-3 needs >= 1000
    assert curve[0.5]["norm"]["fnmr"]["1e-02"] < 0.5 * curve[0.5]["random"]["fnmr"]["1e-02"]
    assert curve[0.0]["norm"]["fnmr"]["1e-03"] is None
    assert r["spearman"] > 0.1 and r["point_biserial"] > 0.1
    assert r["mean_quality_correct"] > r["mean_quality_wrong"]
    assert r["quality"]["min"] == pytest.approx(np.minimum(n1, n2).min())


def test_plot_is_written(tmp_path):
    from facemetric.report.plots import error_reject_plot

    a, b, g, n1, n2 = _noisy_low_norm_pairs(n=200)
    error_reject_plot(quality_analysis(a, b, g, n1, n2), tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 5000


# ---- (b) the curve against a plain loop ------------------------------------------------------


def _loop_kfold_accuracy(d, g, f):
    """facenet-style: per test fold, try every cut of the training distances, keep the best."""
    accs = []
    for fold in sorted(set(f.tolist())):
        tr, te = f != fold, f == fold
        s = np.sort(d[tr])
        cands = [-np.inf] + [lo + (hi - lo) / 2 for lo, hi in zip(s[:-1], s[1:], strict=True)]
        cands.append(np.nextafter(s[-1], np.inf))
        best_t, best_acc = None, -1.0
        for t in cands:  # ascending, so ties keep the smallest threshold
            acc = np.mean((d[tr] < t) == g[tr])
            if acc > best_acc:
                best_t, best_acc = t, acc
        accs.append(np.mean((d[te] < best_t) == g[te]))
    return float(np.mean(accs))


def _loop_fnmr(d, g, fmr):
    """Lowest FNMR over all thresholds t (a pair accepted when d < t) with FMR(t) <= fmr."""
    best = 1.0
    for t in [*sorted(d), np.inf]:
        if np.mean(d[~g] < t) <= fmr:
            best = min(best, float(np.mean(d[g] >= t)))
    return best


def test_curve_matches_a_loop_reference():
    rng = np.random.default_rng(1)
    n = 300
    a, b, g, n1, n2 = _noisy_low_norm_pairs(seed=1, n=n)
    folds = rng.integers(0, 6, n)  # shuffled fold ids, not blocks
    fracs = (0.0, 0.1, 0.25, 0.5)
    r = quality_analysis(a, b, g, n1, n2, folds=folds, reject_fractions=fracs, n_random=2, seed=7)
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    d = np.clip(1.0 - cos, 0.0, 2.0)
    q = [min(x, y) for x, y in zip(n1, n2, strict=True)]
    by_quality = sorted(range(n), key=lambda i: (q[i], i))  # lowest quality first
    for frac, point in zip(fracs, r["curve"], strict=True):
        k = int(frac * n)
        keep = np.array(sorted(by_quality[k:]))
        assert point["num_rejected"] == k and point["num_kept"] == n - k
        assert point["norm"]["quality_threshold"] == q[by_quality[k]]
        dk, gk, fk = d[keep], g[keep], folds[keep]
        assert point["norm"]["accuracy"] == pytest.approx(_loop_kfold_accuracy(dk, gk, fk))
        if np.count_nonzero(~gk) >= 100:  # FMR 1e-2 needs at least 100 impostors
            assert point["norm"]["fnmr"]["1e-02"] == pytest.approx(_loop_fnmr(dk, gk, 1e-2))
        else:
            assert point["norm"]["fnmr"]["1e-02"] is None
        assert point["norm"]["fnmr"]["1e-03"] is None
        rand = []
        for i in range(2):
            drop = set(np.random.default_rng([7, i]).permutation(n)[:k].tolist())
            kr = np.array([j for j in range(n) if j not in drop])
            rand.append(_loop_kfold_accuracy(d[kr], g[kr], folds[kr]))
        assert point["random"]["accuracy"] == pytest.approx(np.mean(rand))


# ---- (c) correlations ------------------------------------------------------------------------


def test_correlations_equal_scipy_on_a_hand_made_case():
    # 10 folds of 4 pairs; genuine at d=0.1, impostors at d=0.9, except pair 3 (a genuine at
    # d=1.5) and pair 6 (an impostor at d=0.05): those two are wrong at every fold's threshold.
    n = 40
    g = np.array([True, True, False, False] * 10)
    g[3], g[6] = True, False
    d = np.where(g, 0.1, 0.9)
    d[3], d[6] = 1.5, 0.05
    a, b = _unit_pairs_at(d)
    n1 = np.linspace(5.0, 9.0, n)
    n2 = np.full(n, 7.0)
    n1[3], n1[6] = 1.0, 2.0
    folds = np.repeat(np.arange(10), 4)
    r = quality_analysis(a, b, g, n1, n2, folds=folds, reject_fractions=(0.0,))
    correct = np.ones(n, dtype=bool)
    correct[[3, 6]] = False
    q = np.minimum(n1, n2)
    assert r["num_wrong"] == 2 and r["accuracy"] == pytest.approx(38 / 40)
    assert r["spearman"] == pytest.approx(stats.spearmanr(q, correct).statistic)
    assert r["spearman_p"] == pytest.approx(stats.spearmanr(q, correct).pvalue)
    assert r["point_biserial"] == pytest.approx(np.corrcoef(q, correct)[0, 1])
    # point-biserial by hand: (M1 - M0) / s * sqrt(p (1 - p)), s the population std
    p = correct.mean()
    hand = (q[correct].mean() - q[~correct].mean()) / q.std() * np.sqrt(p * (1 - p))
    assert r["point_biserial"] == pytest.approx(hand)
    assert r["mean_quality_wrong"] == pytest.approx(1.5)
    assert r["mean_quality_correct"] == pytest.approx(q[correct].mean())
    assert r["norms"]["mean"] == pytest.approx(np.concatenate([n1, n2]).mean())

    mean_q = quality_analysis(a, b, g, n1, n2, folds=folds, pair_quality="mean")
    assert mean_q["quality"]["mean"] == pytest.approx(((n1 + n2) / 2).mean())
    prod_q = quality_analysis(a, b, g, n1, n2, folds=folds, pair_quality="product")
    assert prod_q["quality"]["max"] == pytest.approx((n1 * n2).max())

    # all pairs right: correlation with a constant is undefined -> None (still strict JSON)
    d_ok = np.where(g, 0.1, 0.9)
    perfect = quality_analysis(*_unit_pairs_at(d_ok), g, n1, n2, folds=folds)
    assert perfect["spearman"] is None and perfect["point_biserial"] is None
    assert perfect["mean_quality_wrong"] is None
    json.dumps(perfect, allow_nan=False)


# ---- (d) bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,msg",
    [
        ({"norms1": np.ones(39)}, "norms1: length 39 does not match the 40 pairs"),
        ({"norms2": np.r_[np.ones(39), np.nan]}, "norms2: entry 39 is NaN or inf"),
        ({"norms1": np.r_[np.inf, np.ones(39)]}, "norms1: entry 0 is NaN or inf"),
        ({"norms1": -np.ones(40)}, "norms1: entry 0 is negative"),
        ({"norms2": np.ones((40, 1))}, "norms2: expected a 1-D array"),
        ({"issame": np.ones(41, dtype=bool)}, "issame: length 41"),
        ({"emb2": np.ones((39, 2))}, "emb2: shape"),
        (
            {"reject_fractions": (0.0, 0.98)},
            "reject_fractions: rejecting 0.98 (lowest quality) leaves 1 pair(s); need at least 2",
        ),
        ({"reject_fractions": (1.0,)}, "reject_fractions: expected numbers in [0, 1)"),
        ({"reject_fractions": ()}, "reject_fractions: expected at least one"),
        ({"pair_quality": "max"}, "pair_quality: expected one of min, mean, product"),
        ({"far_target": 0}, "far_target: expected a number in (0, 1)"),
        ({"n_random": 0}, "n_random: expected an integer >= 1"),
    ],
)
def test_bad_input_is_a_one_line_error(change, msg):
    rng = np.random.default_rng(0)
    n = 40
    g = np.arange(n) % 2 == 0
    args = {
        "emb1": rng.normal(size=(n, 2)),
        "emb2": rng.normal(size=(n, 2)),
        "issame": g,
        "norms1": rng.uniform(1, 2, n),
        "norms2": rng.uniform(1, 2, n),
        "folds": np.arange(n) % 4,
        **change,
    }
    with pytest.raises(FacemetricError) as info:
        quality_analysis(**args)
    assert msg in str(info.value)
    assert "\n" not in str(info.value)


def test_a_fraction_that_leaves_one_class_names_reject_fractions():
    n = 40
    g = np.arange(n) % 2 == 0
    q = np.where(g, 1.0, 2.0)  # every genuine pair has the lowest quality
    a, b = _unit_pairs_at(np.where(g, 0.1, 0.9))
    with pytest.raises(FacemetricError, match=r"reject_fractions: after rejecting 0.5 \(lowest"):
        quality_analysis(a, b, g, q, q, folds=np.arange(n) % 4, reject_fractions=(0.5,))


# ---- (e) norms from a model and the CLI ------------------------------------------------------


@pytest.fixture
def tiny_model_and_faces(tmp_path, monkeypatch):
    """An untrained LeNets++ artifact (16x16 grey) and an LFW-style folder of 8 people x 4
    synthetic JPEGs (a per-person pattern plus noise) with a View-1 pair file of 20 + 20 pairs."""
    from PIL import Image

    from facemetric.inference.artifact import save_artifact
    from facemetric.models import build_model
    from facemetric.train import run_dir

    monkeypatch.setattr(run_dir, "git_revision", lambda *a, **k: {"revision": None, "dirty": None})
    torch.manual_seed(0)
    options = {"embedding_dim": 8, "in_channels": 1, "input_size": 16, "widths": [4, 8, 8]}
    card = {
        "name": "tiny",
        "backbone": {"name": "lenets++", "options": options},
        "embedding_dim": 8,
        "preprocessing": {"input_size": [16, 16], "color": "L"},
    }
    model_dir = save_artifact(tmp_path / "model", build_model("lenets++", **options), card)

    rng = np.random.default_rng(0)
    root = tmp_path / "faces"
    people = [f"person{i}" for i in range(8)]
    for name in people:
        (root / name).mkdir(parents=True)
        pattern = rng.uniform(0, 255, (24, 24))
        for k in range(1, 5):
            img = np.clip(pattern + rng.normal(0, 20 * k, (24, 24)), 0, 255).astype(np.uint8)
            Image.fromarray(img, "L").save(root / name / f"{name}_{k:04d}.jpg")
    matched = [f"{people[i % 8]}\t{1 + i % 4}\t{1 + (i + 1) % 4}" for i in range(20)]
    mismatched = [
        f"{people[i % 8]}\t{1 + i % 4}\t{people[(i + 3) % 8]}\t{1 + (i + 2) % 4}" for i in range(20)
    ]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("20\n" + "\n".join(matched + mismatched) + "\n")
    return model_dir, root, pairs


def test_embed_with_norms_matches_embed(tiny_model_and_faces):
    model_dir, root, _ = tiny_model_and_faces
    embedder = facemetric.load_model(model_dir)
    paths = sorted(str(p) for p in root.rglob("*.jpg"))[:6]
    for flip in (False, True):
        emb, norms = embedder.embed_with_norms(paths, batch_size=4, flip=flip)
        assert np.array_equal(emb, embedder.embed(paths, batch_size=4, flip=flip))
        raw = embedder.embed(paths, flip=flip, normalize=False)
        np.testing.assert_allclose(norms, np.linalg.norm(raw.astype(np.float64), axis=1), rtol=1e-6)
    # flip: the norm of the summed raw features of the image and its mirror
    x = embedder.preprocess(paths)
    with torch.no_grad():
        summed = embedder.model(x) + embedder.model(torch.flip(x, dims=[3]))
    _, norms = embedder.embed_with_norms(paths, flip=True)
    np.testing.assert_allclose(norms, summed.double().norm(dim=1).numpy(), rtol=1e-5)


def test_evaluate_quality_writes_the_section_and_the_plot(tiny_model_and_faces, tmp_path, capsys):
    from facemetric.eval.evaluate_model import evaluate_model

    model_dir, root, pairs = tiny_model_and_faces
    out = tmp_path / "eval" / "report.json"
    main(
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--data",
            str(root),
            "--pairs",
            str(pairs),
            "--out",
            str(out),
            "--quality",
            "--quiet",
        ]
    )
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("quality:")]
    assert len(line) == 1 and "spearman(norm, correct)=" in line[0] and "(random: " in line[0]
    assert "after rejecting 20% lowest-norm pairs" in line[0]

    report = json.loads(out.read_text())
    q = report["quality"]
    assert q["num_pairs"] == 40 and q["distance"] == "squared_l2"
    assert [p["reject_fraction"] for p in q["curve"]][:3] == [0.0, 0.05, 0.1]
    assert q["curve"][0]["norm"]["accuracy"] == pytest.approx(report["accuracy_mean"])
    assert q["thresholds"] == report["thresholds"]  # correctness at the report's thresholds
    assert q["figure"] == "report-quality.png"
    assert (out.parent / "report-quality.png").stat().st_size > 5000
    assert (out.parent / "report-roc.png").is_file()

    # the image norms are those of the un-normalised embeddings
    embedder = facemetric.load_model(model_dir)
    paths = sorted({str(p) for p in root.rglob("*.jpg")})
    raw = np.linalg.norm(embedder.embed(paths, normalize=False).astype(np.float64), axis=1)
    assert q["image_norms"]["min"] == pytest.approx(raw.min(), rel=1e-6)
    assert q["lowest_norm_images"][0]["norm"] == pytest.approx(raw.min(), rel=1e-6)

    # --quality changes nothing else; without out no file is written
    plain = evaluate_model(model_dir, root, pairs, progress=False)
    assert "quality" not in plain
    assert {k: v for k, v in report.items() if k != "quality"} == json.loads(json.dumps(plain))
    again = evaluate_model(model_dir, root, pairs, progress=False, quality=True)
    assert "figure" not in again["quality"]
