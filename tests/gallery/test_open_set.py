"""Open-set thresholds from an impostor tail: the tail against a brute-force count, the 1:N rule
against a simulated gallery, and the precedence of Gallery.default_threshold."""

from __future__ import annotations

import numpy as np
import pytest

from facemetric.errors import FacemetricError
from facemetric.eval.open_set import (
    cluster_threshold,
    impostor_tail,
    tail_threshold,
    threshold_at_rate,
)
from facemetric.gallery import Gallery, calibrate_threshold
from tests.gallery.gallery_helpers import DIM, card, people, unit


def test_tail_equals_a_brute_force_count():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 40, size=400)
    x = unit(rng.normal(size=(400, 8)) + 1.5 * unit(rng.normal(size=(40, 8)))[y])
    bins = 20_000
    tail = impostor_tail(x, y, rates=(0.2, 0.05, 1e-2, 1e-3, 1e-4, 1e-6), bins=bins, block=64)
    s = x.astype(np.float64) @ x.T.astype(np.float64)
    i, j = np.triu_indices(400, 1)
    imp = s[i, j][y[i] != y[j]]
    assert tail["pairs"] == imp.size and tail["resolution"] == 2 / bins
    assert [r for r, _ in tail["levels"]] == [0.2, 0.05, 1e-2, 1e-3, 1e-4]  # 1e-6 < 1 / pairs: left out
    res = 2 / bins
    for rate, t in tail["levels"]:
        assert np.mean(imp >= t - 1e-6) >= rate
        assert np.mean(imp >= t + res + 1e-6) < rate


def test_rule_predicts_the_open_set_false_accept_rate():
    """Independent random faces: the threshold for FAR 5% against n enrolled images gives
    5% of strangers accepted (binomial noise aside)."""
    rng = np.random.default_rng(1)
    dim = 24
    ref = unit(rng.normal(size=(3000, dim)))
    tail = impostor_tail(ref, np.arange(3000), rates=(1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6))
    for n in (10, 200):
        gallery = unit(rng.normal(size=(n, dim)))
        strangers = unit(rng.normal(size=(4000, dim)))
        t = tail_threshold(tail, n, far=0.05)
        far = np.mean((strangers @ gallery.T).max(axis=1) >= t)
        assert 0.035 <= far <= 0.065, (n, t, far)


def test_threshold_interpolation_and_limits():
    tail = {"levels": [[1e-2, 0.90], [1e-4, 0.94], [1e-3, 0.92]]}
    assert threshold_at_rate(tail, 1e-3) == pytest.approx(0.92)
    assert threshold_at_rate(tail, 10 ** -3.5) == pytest.approx(0.93)
    assert threshold_at_rate(tail, 1e-9) == pytest.approx(0.94)  # clamped to the table
    assert threshold_at_rate(tail, 0.5) == pytest.approx(0.90)
    assert tail_threshold(tail, 1, far=0.01) == pytest.approx(0.90)
    ts = [tail_threshold(tail, n, 0.01) for n in (1, 10, 100, 1000)]
    assert ts == sorted(ts) and ts[1] == pytest.approx(0.92, abs=1e-4)  # p = 1 - 0.99^(1/10) ~ 1e-3
    assert cluster_threshold(tail, 101) == pytest.approx(0.92)  # 0.1 impostor edges / 100 photos
    with pytest.raises(FacemetricError, match="far"):
        tail_threshold(tail, 10, far=0)
    with pytest.raises(FacemetricError, match="impostor_tail"):
        tail_threshold({"levels": [[0, 1]]}, 10)
    with pytest.raises(FacemetricError, match="two identities"):
        impostor_tail(unit(np.ones((3, 4))), [1, 1, 1])


def test_gallery_default_threshold_precedence(tmp_path):
    _, data = people(5, 3)
    tail = {"levels": [[1e-2, 0.5], [1e-4, 0.7]]}
    with Gallery.create(tmp_path / "g", card(impostor_tail=tail)) as g:
        for name, emb in data.items():
            g.enroll(name, emb)
        t, source = g.default_threshold()
        assert t == pytest.approx(tail_threshold(tail, 15)) and source.endswith("against 15 images")
        t_mean, _ = g.default_threshold(by="mean")
        assert t_mean == pytest.approx(tail_threshold(tail, 5))
        probe = data["id001"][0]
        assert g.identify(probe, card=card()).threshold == pytest.approx(tail_threshold(tail, 15))
        cal = calibrate_threshold([0.9, 0.8], np.linspace(0, 0.6, 200), far=0.05)
        g.set_calibration(cal, by="max")
        assert g.default_threshold() == (cal.threshold, "calibrated on this gallery at FAR 0.05")
        assert g.default_threshold(by="mean")[0] == pytest.approx(t_mean)  # not calibrated for mean
        assert g.identify(probe, card=card()).threshold == cal.threshold
    with Gallery.create(tmp_path / "plain", card()) as g:  # no tail: the card's 1:1 threshold
        g.enroll("a", data["id000"])
        assert g.default_threshold() == (pytest.approx(0.5), "model card")  # squared L2 1.0
    assert DIM == 16
