"""Parsing metrics by hand, the BSDS one-to-one matching against an assignment solver, ODS/OIS/AP
by hand, and the evaluation of a tiny trained model end to end."""

import json

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from facemetric.eval.dense import (
    confusion_matrix,
    evaluate_dense,
    match_counts,
    match_pixels,
    max_distance,
    parsing_metrics,
    pr_summary,
)
from facemetric.inference import load_model
from tests.dense.synthetic_parts import trained_root, trained_run


def test_parsing_metrics_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 0]])
    m = confusion_matrix(truth, pred, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]  # the ignored pixel is left out
    r = parsing_metrics(m, ["bg", "skin", "hair"])
    assert r["pixel_accuracy"] == pytest.approx(5 / 7)
    # IoU: bg 1 / (2 + 2 - 1), skin 2 / (2 + 3 - 2), hair 2 / (3 + 2 - 2)
    assert r["iou"] == pytest.approx({"bg": 1 / 3, "skin": 2 / 3, "hair": 2 / 3})
    assert r["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert r["f1"]["bg"] == pytest.approx(2 * 1 / (2 + 2))


def test_matching_is_one_to_one_within_the_radius():
    truth = np.zeros((20, 20), bool)
    truth[10, 10] = True
    pred = np.zeros((20, 20), bool)
    pred[10, 11] = pred[9, 10] = True  # two candidates for one true pixel: one match
    pred[3, 3] = True  # far away
    mp, mt = match_pixels(pred, truth, 1.5)
    assert mt.sum() == 1 and mp.sum() == 1 and not mp[3, 3]
    assert max_distance((150, 150)) == pytest.approx(0.0075 * 150 * np.sqrt(2))


def test_matching_is_maximum_like_an_assignment_solver():
    rng = np.random.default_rng(0)
    for _ in range(5):
        truth = rng.random((24, 24)) < 0.15
        pred = rng.random((24, 24)) < 0.15
        mp, mt = match_pixels(pred, truth, 1.59)
        assert mp.sum() == mt.sum()
        py, px = np.nonzero(pred)
        ty, tx = np.nonzero(truth)
        d = np.hypot(py[:, None] - ty[None], px[:, None] - tx[None])
        cost = np.where(d <= 1.59, 0, 1)
        r, c = linear_sum_assignment(cost)
        assert mp.sum() == int((cost[r, c] == 0).sum())


def test_ods_ois_ap_by_hand():
    t = (0.25, 0.75)
    # counts [cntR, sumR, cntP, sumP] per threshold for two images
    a = np.array([[8, 10, 8, 16], [4, 10, 4, 4]])  # t=.25: P .5 R .8; t=.75: P 1 R .4
    b = np.array([[10, 10, 10, 10], [5, 10, 5, 5]])  # t=.25: P 1 R 1; t=.75: P 1 R .5
    s = pr_summary([a, b], t)
    # dataset scale: t=.25: P 18/26 R 18/20; t=.75: P 1 R 9/20
    f25 = 2 * (18 / 26) * (18 / 20) / (18 / 26 + 18 / 20)
    f75 = 2 * 1 * (9 / 20) / (1 + 9 / 20)
    assert s["ods"] == pytest.approx(max(f25, f75)) and s["ods_threshold"] == 0.25
    # per image best: a at .25 (F .615) vs .75 (F .571) -> .25; b at .25 (F 1)
    assert s["ois"] == pytest.approx(f25)
    # AP: recall .45 at precision 1, then recall .9 at precision 18/26
    assert s["ap"] == pytest.approx(0.45 * 1 + 0.45 * 18 / 26)


def test_perfect_and_shifted_maps():
    truth = np.zeros((40, 40), np.uint8)
    truth[20, 5:35] = 1
    c = match_counts(truth.astype(float), truth, (0.5,))
    assert c[0].tolist() == [30, 30, 30, 30]
    shifted = np.roll(truth, 3, axis=0).astype(float)  # 3 px > 0.0075 x diagonal
    assert match_counts(shifted, truth, (0.5,))[0, 0] == 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory.mktemp("dense"))


def test_evaluate_dense_end_to_end(run, tmp_path):
    model = load_model(run)
    out = tmp_path / "eval.json"
    rep = evaluate_dense(model, trained_root(), "test", num_thresholds=5, out=out, figure=tmp_path / "grid.png")
    saved = json.loads(out.read_text())
    assert saved["parsing"]["mean_iou"] == pytest.approx(rep["parsing"]["mean_iou"])
    assert set(saved["boundaries"]["rows"]) == {"hed_fuse", "hed_side1", "hed_side2", "hed_side3",
                                               "fcn_label_boundaries", "sobel_baseline"}
    assert set(saved["skeletons"]["rows"]) == {"fsds_fuse", "fsds_side1", "fsds_side2", "hed_skeleton_fuse"}
    for row in saved["boundaries"]["rows"].values():
        assert 0 <= row["ods"] <= 1 and row["ois"] >= row["ods"] - 1e-9
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_skin_fraction_counts_skin_inside_the_centred_chip(tmp_path):
    from PIL import Image

    from facemetric.eval.skin_quality import chip_box, skin_fractions

    assert chip_box((250, 250), (150, 128)) == (slice(50, 200), slice(61, 189))
    assert chip_box((100, 80), (150, 128)) == (slice(0, 100), slice(0, 80))

    class Fake:  # labels: skin in the left quarter of the photo
        def predict_arrays(self, arrays, batch_size=16):
            out = []
            for a in arrays:
                lab = np.zeros(a.shape[:2], np.uint8)
                lab[:, : a.shape[1] // 4] = 1
                out.append({"labels": lab})
            return out

    p = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
    # skin = columns 0..9; chip 40x40: 10/40; chip 20x10 (columns 15..24): 0; chip 10x30 (5..34): 5/30
    assert skin_fractions(Fake(), [str(p)], (40, 40))[0] == pytest.approx(0.25)
    assert skin_fractions(Fake(), [str(p)], (20, 10))[0] == 0
    assert skin_fractions(Fake(), [str(p)], (10, 30))[0] == pytest.approx(5 / 30)


def test_nms_keeps_the_ridge_of_a_blurred_edge():
    from facemetric.eval.dense import edge_nms

    y = np.arange(40)[:, None]
    prob = np.exp(-((y - 20) ** 2) / 8.0) * np.ones((40, 40))  # a soft horizontal edge at row 20
    out = edge_nms(prob)
    inner = out[:, 8:-8]
    assert (inner[20] > 0.99).all() and inner[[17, 18, 19, 21, 22, 23]].max() == 0
    # a steep diagonal edge: the kept pixels lie on the diagonal
    yy, xx = np.mgrid[0:40, 0:40]
    diag = np.exp(-((yy - xx) ** 2) / 4.0)
    kept = np.argwhere(edge_nms(diag)[8:-8, 8:-8] > 0.5)
    assert len(kept) and np.abs(kept[:, 0] - kept[:, 1]).max() == 0
