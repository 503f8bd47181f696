"""The demo report gives every number as mean and spread over seeds (issue 11, bug 8)."""

from __future__ import annotations

import json
import statistics

import pytest

from facemetric.demo import DEMO_SEEDS, SPREAD_KEYS, run_demo, spread


def test_spread_is_mean_and_sample_std():
    s = spread([0.9, 0.8, 0.7])
    assert s["mean"] == pytest.approx(0.8) and s["std"] == pytest.approx(0.1)
    assert (s["min"], s["max"], s["values"]) == (0.7, 0.9, [0.9, 0.8, 0.7])
    assert spread([0.5])["std"] == 0.0
    assert spread([None, float("nan"), 1.0])["values"] == [1.0]
    assert spread([])["mean"] is None


def test_demo_reports_each_number_over_several_seeds(tmp_path):
    assert len(DEMO_SEEDS) >= 3
    out = tmp_path / "demo"
    report = run_demo(out, epochs=1, variants=["softmax"], progress=False, seeds=(0, 1))
    saved = json.loads((out / "report.json").read_text())
    assert saved["seeds"] == [0, 1]
    entry = saved["losses"]["softmax"]
    for key in SPREAD_KEYS:
        s = entry["spread"][key]
        assert len(s["values"]) == 2, key
        assert entry[key] == pytest.approx(statistics.fmean(s["values"])), key
    # the seeds really differ (initial weights, batch order): a spread, not a copy
    assert entry["spread"]["auc"]["values"][0] != entry["spread"]["auc"]["values"][1]
    for seed in (0, 1):
        assert (out / "runs" / f"softmax-seed{seed}" / "config.yaml").is_file()
    assert report["pairs"]["impostor_pairs"] == 300
    html = (out / "report.html").read_text()
    a = entry["spread"]["accuracy"]
    assert f"{a['mean']:.3f} ± {a['std']:.3f}" in html and "over seeds" in html
