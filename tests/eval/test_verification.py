"""The sort-based verification evaluator against the facenet-style loop reference and by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import KFold

from facemetric.errors import FacemetricError
from facemetric.eval import (
    evaluate_verification,
    kfold_accuracy,
    pair_scores,
    roc_metrics,
    val_at_far,
)
from facemetric.eval.reference import (
    ACCURACY_THRESHOLDS,
    VAL_THRESHOLDS,
    reference_kfold_accuracy,
    reference_val_at_far,
)


def _labels_and_folds(rng, n_folds, per_fold):
    """issame with both classes in every fold, and consecutive fold ids."""
    g = rng.random(n_folds * per_fold) < 0.5
    g[::per_fold] = True
    g[1::per_fold] = False
    return g, np.repeat(np.arange(n_folds), per_fold)


def _normalised_pairs(rng, n, dim=16, noise=0.8):
    """L2-normalised embedding pairs; even pairs genuine (perturbed copies)."""
    g = np.arange(n) % 2 == 0
    a = rng.normal(size=(n, dim))
    b = rng.normal(size=(n, dim))
    b[g] = a[g] + noise * rng.normal(size=(int(g.sum()), dim))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return a, b, g


# ---- k-fold accuracy vs the reference -------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_folds=st.integers(2, 5),
    per_fold=st.integers(3, 30),
    n_cells=st.sampled_from([2, 5, 40, 390]),
)
def test_lowest_placement_equals_reference_on_cell_centres(seed, n_folds, per_fold, n_cells):
    rng = np.random.default_rng(seed)
    g, f = _labels_and_folds(rng, n_folds, per_fold)
    offset = rng.integers(0, 390 - n_cells + 1)
    cells = offset + rng.integers(0, n_cells, size=g.size)  # few cells -> many ties
    d = (cells + 0.5) * 0.01  # centres of the reference grid's cells, all < 3.99
    fast = kfold_accuracy(d, g, f, placement="lowest")
    ref = reference_kfold_accuracy(d, g, f)
    assert fast["fold_accuracies"] == ref["fold_accuracies"]
    assert fast["accuracy_mean"] == ref["accuracy_mean"]
    # the reference picks the first grid point above the last accepted distance
    np.testing.assert_allclose(fast["thresholds"], ref["thresholds"], atol=0.0051)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_folds=st.integers(2, 5),
    n_cells=st.integers(2, 30),
    extra=st.integers(2, 40),
)
def test_midpoint_placement_equals_reference_on_shared_cell_centres(seed, n_folds, n_cells, extra):
    # every fold holds every cell value, so no test distance falls strictly inside a gap between
    # training values and the midpoint accepts exactly what the reference grid accepts
    rng = np.random.default_rng(seed)
    per_fold = n_cells + extra
    g, f = _labels_and_folds(rng, n_folds, per_fold)
    cells = rng.choice(390, size=n_cells, replace=False)
    idx = rng.integers(0, n_cells, size=g.size)
    idx.reshape(n_folds, per_fold)[:, :n_cells] = rng.permuted(
        np.tile(np.arange(n_cells), (n_folds, 1)), axis=1
    )
    d = (cells[idx] + 0.5) * 0.01
    fast = kfold_accuracy(d, g, f)
    ref = reference_kfold_accuracy(d, g, f)
    assert fast["fold_accuracies"] == ref["fold_accuracies"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_on_grid_cells_equals_reference_on_raw_distances(seed):
    # the reference only sees which grid cell a distance is in, so the fast evaluator on the
    # cell index reproduces it exactly on continuous data
    rng = np.random.default_rng(seed)
    g, f = _labels_and_folds(rng, 4, 50)
    d = np.where(g, rng.normal(1.0, 0.4, g.size), rng.normal(1.6, 0.4, g.size)).clip(0, 3.9)
    cell = np.searchsorted(ACCURACY_THRESHOLDS, d, side="right") - 1
    fast = kfold_accuracy(cell, g, f, placement="lowest")
    ref = reference_kfold_accuracy(d, g, f)
    assert fast["fold_accuracies"] == ref["fold_accuracies"]


def test_accuracy_hand_example():
    d = [0.1, 0.4, 0.3, 0.8, 0.2, 0.6, 0.5, 0.9]
    issame = [1, 1, 0, 0, 1, 0, 1, 0]
    folds = [0, 0, 0, 0, 1, 1, 1, 1]
    # test fold 0, train on fold 1: sorted 0.2G 0.5G 0.6I 0.9I -> best cut after 0.5 (4/4);
    #   on fold 0 (d < 0.5+): 0.1G ok, 0.4G ok, 0.3I wrong, 0.8I ok -> 3/4
    # test fold 1, train on fold 0: sorted 0.1G 0.3I 0.4G 0.8I -> 3/4 after 0.1 and after 0.4,
    #   the smaller wins; on fold 1 (d <= 0.1): 0.2G wrong, 0.6I ok, 0.5G wrong, 0.9I ok -> 2/4
    # midpoints 0.55 and 0.2; the test pair at d = 0.2 is rejected (strict '<')
    res = kfold_accuracy(d, issame, folds)
    assert res["fold_accuracies"] == [0.75, 0.5]
    assert res["accuracy_mean"] == 0.625
    assert res["accuracy_std"] == 0.125
    np.testing.assert_allclose(res["thresholds"], [0.55, 0.2], atol=1e-12)
    low = kfold_accuracy(d, issame, folds, placement="lowest")
    assert low["fold_accuracies"] == [0.75, 0.5]
    np.testing.assert_allclose(low["thresholds"], [0.5, 0.1], atol=1e-12)
    assert low["thresholds"][0] > 0.5 and low["thresholds"][1] > 0.1  # accepts d == 0.5 / 0.1
    ref = reference_kfold_accuracy(d, issame, folds)
    assert ref["fold_accuracies"] == [0.75, 0.5]
    np.testing.assert_allclose(ref["thresholds"], [0.51, 0.11])


@pytest.mark.parametrize("placement", ["midpoint", "lowest"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_accuracy_threshold_is_best_achievable_with_ties(seed, placement):
    # brute force over every threshold a strict '<' can realise on heavily tied data
    rng = np.random.default_rng(seed)
    g, f = _labels_and_folds(rng, 3, 40)
    d = rng.integers(0, 6, size=g.size) / 5.0
    res = kfold_accuracy(d, g, f, placement=placement)
    for fid, thr in zip(range(3), res["thresholds"], strict=True):
        dt, gt = d[f != fid], g[f != fid]
        candidates = np.concatenate([[0.0], np.nextafter(np.unique(dt), np.inf)])
        accs = np.array([np.mean((dt < c) == gt) for c in candidates])
        assert np.mean((dt < thr) == gt) == accs.max()
        assert (dt < thr).sum() == (dt < candidates[np.argmax(accs)]).sum()  # smallest cut


def test_all_distances_equal_gives_majority_rate():
    g = np.tile([True] * 6 + [False] * 4, 5)
    f = np.repeat(np.arange(5), 10)
    d = np.full(g.size, 0.7)
    res = kfold_accuracy(d, g, f)
    assert res["fold_accuracies"] == [0.6] * 5
    assert all(t > 0.7 for t in res["thresholds"])  # accept everything
    out = evaluate_verification(distances=d, issame=g, folds=f)
    assert out["accuracy_mean"] == pytest.approx(0.6)
    assert out["val"] == 0.0 and out["far"] == 0.0  # FAR 0 only by accepting nothing
    assert out["auc"] == 0.5 and out["eer"] == pytest.approx(0.5)


# ---- VAL@FAR vs the reference ---------------------------------------------------------------


@pytest.mark.parametrize(("seed", "far_target"), [(0, 0.02), (1, 0.05), (2, 0.1)])
def test_val_equals_reference_on_cell_centres(seed, far_target):
    # distinct impostor distances at centres of the 0.001 grid: the reference threshold lies
    # in the cell of the (k+1)-th training impostor distance, below its centre when
    # frac(far_target * n_imp_train) < 1/2, so both accept the same test pairs
    rng = np.random.default_rng(seed)
    n_folds, per_fold = 5, 80
    g = np.tile(np.arange(per_fold) < per_fold // 2, n_folds)
    f = np.repeat(np.arange(n_folds), per_fold)
    n_imp = int((~g).sum())
    n_imp_train = n_imp - n_imp // n_folds
    assert (far_target * n_imp_train) % 1 < 0.5
    cells = np.empty(g.size, dtype=np.int64)
    cells[~g] = 1000 + rng.choice(2900, size=n_imp, replace=False)
    cells[g] = rng.integers(0, 2500, size=int(g.sum()))  # genuine: ties allowed
    d = (cells + 0.5) * 0.001
    fast = val_at_far(d, g, f, far_target)
    ref = reference_val_at_far(d, g, f, far_target)
    assert fast["fold_vals"] == ref["fold_vals"]
    assert fast["fold_fars"] == ref["fold_fars"]
    assert fast["val_mean"] == ref["val_mean"] and fast["far_mean"] == ref["far_mean"]
    np.testing.assert_allclose(fast["thresholds"], ref["thresholds"], atol=0.001)


@pytest.mark.parametrize("seed", [3])
def test_val_within_one_grid_cell_of_reference_on_raw_distances(seed):
    rng = np.random.default_rng(seed)
    g, f = _labels_and_folds(rng, 4, 100)
    d = np.where(g, rng.normal(1.0, 0.4, g.size), rng.normal(1.6, 0.4, g.size)).clip(0, 3.9)
    fast = val_at_far(d, g, f, 0.01)
    ref = reference_val_at_far(d, g, f, 0.01)
    for fid in range(4):
        tf, tr = fast["thresholds"][fid], ref["thresholds"][fid]
        lo = VAL_THRESHOLDS[np.searchsorted(VAL_THRESHOLDS, tf, side="right") - 1]
        assert lo - 1e-12 <= tr <= lo + 0.001 + 1e-12  # same grid cell
        dt, gt = d[f == fid], g[f == fid]
        in_cell = (dt >= lo) & (dt <= lo + 0.001)
        d_ta = round(abs(fast["fold_vals"][fid] - ref["fold_vals"][fid]) * gt.sum())
        d_fa = round(abs(fast["fold_fars"][fid] - ref["fold_fars"][fid]) * (~gt).sum())
        assert d_ta <= (in_cell & gt).sum() and d_fa <= (in_cell & ~gt).sum()


def test_val_hand_example():
    d = [0.1, 0.35, 0.2, 0.4, 0.6, 0.8, 0.15, 0.45, 0.3, 0.5, 0.7, 0.9]
    issame = [1, 1, 0, 0, 0, 0] * 2
    folds = [0] * 6 + [1] * 6
    # 4 training impostors, FAR 0.25 -> k = 1 -> threshold = 2nd smallest training impostor
    # fold 0: thr 0.5 (from .3 .5 .7 .9): genuine .1 .35 accepted, impostors .2 .4 -> FAR .5
    # fold 1: thr 0.4 (from .2 .4 .6 .8): genuine .15 accepted, impostor .3 -> FAR .25
    res = val_at_far(d, issame, folds, far_target=0.25)
    assert res["thresholds"] == [0.5, 0.4]
    assert res["fold_vals"] == [1.0, 0.5] and res["fold_fars"] == [0.5, 0.25]
    assert res["val_mean"] == 0.75 and res["val_std"] == 0.25 and res["far_mean"] == 0.375
    ref = reference_val_at_far(d, issame, folds, far_target=0.25)
    assert ref["fold_vals"] == [1.0, 0.5] and ref["fold_fars"] == [0.5, 0.25]


# ---- ROC metrics ----------------------------------------------------------------------------


def test_perfectly_separable():
    rng = np.random.default_rng(0)
    g = np.tile([True, False], 50)
    d = np.where(g, rng.uniform(0.0, 0.9, g.size), rng.uniform(1.1, 2.0, g.size))
    out = evaluate_verification(distances=d, issame=g)
    assert out["accuracy_mean"] == 1.0 and out["fold_accuracies"] == [1.0] * 10
    assert out["auc"] == 1.0 and out["eer"] == 0.0
    assert d[g].max() < out["eer_threshold"] <= d[~g].min()
    assert out["tar_at_far"] == {"1e-01": 1.0}


def test_auc_equals_mann_whitney():
    rng = np.random.default_rng(1)
    g = rng.random(300) < 0.4
    d = np.round(np.where(g, rng.normal(1, 0.5, 300), rng.normal(1.5, 0.5, 300)), 1)  # ties
    dg, di = d[g][:, None], d[~g][None, :]
    mw = ((dg < di).sum() + 0.5 * (dg == di).sum()) / (dg.size * di.size)
    assert roc_metrics(d, g)["auc"] == pytest.approx(mw, abs=1e-12)


def test_eer_hand_examples():
    # 0.1G 0.2I 0.3G 0.4I: accepting d <= 0.2 gives FPR = FNR = 1/2 on a ROC vertex
    res = roc_metrics([0.1, 0.2, 0.3, 0.4], [1, 0, 1, 0])
    assert res["eer"] == 0.5
    assert res["eer_threshold"] == pytest.approx(0.2)
    # 0.1I 0.2I 0.25G 0.3I: ROC (2/3, 0) -> (2/3, 1) crosses FPR = 1 - TPR at TPR = 1/3
    res = roc_metrics([0.1, 0.2, 0.25, 0.3], [0, 0, 1, 0])
    assert res["eer"] == pytest.approx(2 / 3)
    assert res["eer_threshold"] == pytest.approx(0.2 + 0.05 / 3)
    assert res["roc"]["fpr"][0] == 0.0 and res["roc"]["tpr"][-1] == 1.0
    assert all(np.isfinite(res["roc"]["thresholds"]))


@pytest.mark.parametrize("n_imp", [500, 1000])
def test_tar_at_far_brute_force_and_skipped_levels(n_imp):
    rng = np.random.default_rng(n_imp)
    n_gen = 300
    d = np.concatenate([rng.normal(1.0, 0.3, n_gen), rng.normal(1.7, 0.3, n_imp)])
    g = np.arange(d.size) < n_gen
    res = roc_metrics(d, g)
    kept = ["1e-01", "1e-02"] + (["1e-03"] if n_imp >= 1000 else [])
    assert sorted(res["tar_at_far"]) == kept
    assert res["tar_at_far_skipped"] == [k for k in ["1e-03", "1e-04"] if k not in kept]
    cuts = np.concatenate([[-np.inf], np.unique(d)])  # accept d <= cut
    tpr = np.array([(d[g] <= c).mean() for c in cuts])
    fpr = np.array([(d[~g] <= c).mean() for c in cuts])
    for key in kept:
        assert res["tar_at_far"][key] == tpr[fpr <= float(key)].max()


# ---- embeddings, defaults, output -----------------------------------------------------------


def test_pair_scores_values_and_torch_input():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    np.testing.assert_allclose(pair_scores(a, b), ((a - b) ** 2).sum(1))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(pair_scores(a, b, "cosine"), 1 - cos)
    np.testing.assert_allclose(
        pair_scores(torch.tensor(a, dtype=torch.float32), torch.tensor(b)),
        ((a - b) ** 2).sum(1),
        rtol=1e-5,
    )


def test_cosine_and_squared_l2_agree_on_normalised_embeddings():
    a, b, g = _normalised_pairs(np.random.default_rng(3), 400)
    l2 = evaluate_verification(a, b, g, distance="squared_l2")
    cos = evaluate_verification(a, b, g, distance="cosine")
    assert l2["fold_accuracies"] == cos["fold_accuracies"]
    assert l2["fold_vals"] == cos["fold_vals"]
    np.testing.assert_allclose(l2["thresholds"], 2 * np.array(cos["thresholds"]), rtol=1e-9)
    assert l2["auc"] == pytest.approx(cos["auc"])
    assert l2["distance"] == "squared_l2" and cos["distance"] == "cosine"


def test_default_folds_are_consecutive_kfold_blocks():
    rng = np.random.default_rng(4)
    n = 203
    d = rng.uniform(0, 4, n)
    g = rng.random(n) < 0.5
    f = np.empty(n, dtype=np.int64)
    for i, (_, test) in enumerate(KFold(n_splits=10, shuffle=False).split(d)):
        f[test] = i
    out = evaluate_verification(distances=d, issame=g)
    assert out["fold_accuracies"] == kfold_accuracy(d, g, f)["fold_accuracies"]
    assert out["num_folds"] == 10 and out["num_pairs"] == n


def test_result_is_json_serialisable():
    a, b, g = _normalised_pairs(np.random.default_rng(5), 200)
    out = evaluate_verification(torch.tensor(a), torch.tensor(b), torch.tensor(g), n_folds=5)
    back = json.loads(json.dumps(out, allow_nan=False))
    assert back == out
    assert out["num_genuine"] == 100 and out["num_impostor"] == 100
    for key in ("accuracy_mean", "val", "far", "auc", "eer", "eer_threshold"):
        assert type(out[key]) is float
    assert set(out["roc"]) == {"fpr", "tpr", "thresholds"}


# ---- bad input ------------------------------------------------------------------------------

_D = np.linspace(0.1, 2.0, 8)
_G = np.array([1, 0] * 4)
_F = np.repeat([0, 1], 4)
_E = np.random.default_rng(6).normal(size=(8, 4))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: kfold_accuracy(_D[:7], _G, _F), "issame"),
        (lambda: kfold_accuracy(_D, _G, _F[:7]), "folds"),
        (lambda: kfold_accuracy(np.where(_D > 1, np.nan, _D), _G, _F), "distances"),
        (lambda: kfold_accuracy(_D, np.ones(8), _F), "issame"),
        (lambda: kfold_accuracy(_D, _G * 2, _F), "issame"),
        (lambda: kfold_accuracy(_D, _G, np.zeros(8, dtype=int)), "folds"),
        (lambda: kfold_accuracy(_D, _G, _F.astype(float)), "folds"),
        (lambda: kfold_accuracy(_D, [1, 1, 1, 1, 0, 0, 0, 0], _F), "folds"),
        (lambda: kfold_accuracy(_D, _G, _F, placement="max"), "placement"),
        (lambda: val_at_far(_D, _G, _F, far_target=0.0), "far_target"),
        (lambda: roc_metrics(_D, _G, far_levels=(2.0,)), "far_levels"),
        (lambda: pair_scores(_E, _E[:7]), "emb2"),
        (lambda: pair_scores(np.where(_E > 1, np.inf, _E), _E), "emb1"),
        (lambda: pair_scores(_E, _E, distance="l1"), "distance"),
        (lambda: evaluate_verification(_E, _E, _G, distances=_D), "distances"),
        (lambda: evaluate_verification(issame=_G), "distances"),
        (lambda: evaluate_verification(distances=_D, issame=_G, n_folds=1), "n_folds"),
        (lambda: evaluate_verification(distances=_D), "issame"),
    ],
)
def test_bad_input_raises_one_line_error_naming_the_argument(call, name):
    with pytest.raises(FacemetricError) as info:
        call()
    msg = str(info.value)
    assert msg.startswith(f"{name}:"), msg
    assert "\n" not in msg


# ----------------------------------------------------------------------------- one fold splitter
@pytest.mark.parametrize("n, k", [(601, 10), (605, 10), (6000, 10), (13, 10), (29, 4), (7, 7)])
def test_one_fold_splitter_for_data_and_evaluation(n, k):
    """data.consecutive_folds is the evaluator's default split (issue 11, bug 6): sklearn
    KFold(shuffle=False) blocks, the first n % k one longer; the two used to disagree when k
    does not divide n (e.g. 605 pairs in 10 folds)."""
    from facemetric.data import consecutive_folds
    from facemetric.eval.verification import _consecutive_folds

    expected = np.empty(n, dtype=np.int64)
    for fold, (_, test) in enumerate(KFold(n_splits=k, shuffle=False).split(np.zeros(n))):
        expected[test] = fold
    np.testing.assert_array_equal(consecutive_folds(n, k), expected)
    np.testing.assert_array_equal(_consecutive_folds(n, k), expected)

    rng = np.random.default_rng(n)
    d = rng.random(n)
    g = np.tile([True, False], n)[:n]
    if n >= 2 * k:  # every fold has both classes: the default folds are exactly these
        a = evaluate_verification(distances=d, issame=g, n_folds=k)
        b = evaluate_verification(distances=d, issame=g, folds=expected)
        assert a["fold_accuracies"] == b["fold_accuracies"] and a["thresholds"] == b["thresholds"]


def test_fold_splitter_limits():
    from facemetric.data import consecutive_folds

    assert consecutive_folds(3, 10).tolist() == [0, 1, 2]  # never more folds than pairs
    assert consecutive_folds(0, 10).tolist() == []
    for bad in (0, -1, True, 2.5):
        with pytest.raises(FacemetricError, match="n_folds"):
            consecutive_folds(10, bad)
    with pytest.raises(FacemetricError, match="n_folds"):
        evaluate_verification(distances=np.arange(4.0), issame=[True, False, True, False], n_folds=5)


def test_nan_errors_name_the_row():
    """A NaN in a distance vector or an embedding matrix is reported with its position (a row
    number a user can find), not just 'contain NaN or inf'."""
    d = np.linspace(0.1, 2.0, 20)
    d[13] = np.nan
    issame = np.arange(20) % 2 == 0
    with pytest.raises(FacemetricError, match=r"^distances: pair 13 is NaN or inf$"):
        evaluate_verification(distances=d, issame=issame, n_folds=2)
    e = np.ones((6, 3))
    e[4, 1] = np.inf
    with pytest.raises(FacemetricError, match=r"^emb2: row 4 contains NaN or inf$"):
        pair_scores(np.ones((6, 3)), e)
