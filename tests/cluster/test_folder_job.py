"""The clustering job's threshold policy and outputs, without a model (embeddings given)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from facemetric.cluster.folder_job import Photos, cluster_photos, edge_threshold
from facemetric.errors import FacemetricError
from facemetric.eval.open_set import cluster_threshold
from facemetric.inference.model_card import card_similarity_threshold

TAIL = {"score": "cosine", "levels": [[0.1, 0.2], [0.01, 0.4], [0.001, 0.6]], "pairs": 10**6}


def test_edge_threshold_precedence():
    card = {"thresholds": {"best_accuracy": 1.0}, "impostor_tail": TAIL}
    assert edge_threshold(card, 50, 0.7) == (0.7, "--threshold")
    assert edge_threshold(card, 50) == (cluster_threshold(TAIL, 50), "model's impostor tail, 50 photos")
    plain = {"thresholds": {"best_accuracy": 1.0}}
    assert edge_threshold(plain, 50) == (card_similarity_threshold(plain), "model card")
    with pytest.raises(FacemetricError, match=r"in \[-1, 1\]"):
        edge_threshold(plain, 50, 1.5)
    with pytest.raises(FacemetricError) as e:
        edge_threshold({"thresholds": {}}, 50)
    assert str(e.value).endswith("(use --threshold, a cosine similarity)") and "\n" not in str(e.value)


def test_cluster_photos_writes_csv_metrics_and_page(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    emb = np.repeat(centres, 4, axis=0) + 0.05 * rng.normal(size=(12, 8))
    truth = [f"p{i}" for i in range(3) for _ in range(4)]
    paths = [Path(f"/nowhere/{t}/{i}.png") for i, t in enumerate(truth)]
    photos = Photos(emb.astype(np.float32), paths, truth, {"thresholds": {"best_accuracy": 1.0}},
                    {"/nowhere/bad.png": "no face found"}, Path("/nowhere"), "toy")
    r = cluster_photos(photos, tmp_path, threshold=0.9, k=5)
    with open(r.csv_path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["path"] for row in rows] == [str(p) for p in paths]
    assert len({row["cluster"] for row in rows}) == 3 and r.sizes.tolist() == [4, 4, 4]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["pairwise_f1"] == 1.0 and metrics["skipped"] == 1 and metrics["threshold"] == 0.9
    page = (tmp_path / "index.html").read_text()
    assert page.count("<figure>") == 12 and 'class="missing"' in page  # the photos are not on disk
    assert not [p for p in tmp_path.rglob(".*.tmp")]
