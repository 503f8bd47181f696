"""``facemetric embed / identification / cluster --embeddings / enroll / identify`` on a
synthetic identity folder with a tiny model artifact (no dlib, no real faces needed), and a
real SIGKILL of ``facemetric enroll`` at many moments: the gallery is always as before or as
after the whole enrolment."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facemetric.gallery import Gallery
from tests.cli.cli_helpers import cli
from tests.toy_faces import make_toy_folder, make_toy_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return make_toy_model(root / "model"), make_toy_folder(root / "faces")


def test_embed_then_identification_and_cluster(toy, tmp_path, capsys):
    model, folder = toy
    emb = tmp_path / "emb.npz"
    code, out, err = cli(capsys, "embed", "--model", model, "--data", folder, "--out", emb, "--quiet")
    assert code == 0, err
    assert out.strip() == f"20 photos of 7 identities embedded (8-D, 0 skipped) -> {emb}"

    report = tmp_path / "ident.json"
    code, out, err = cli(capsys, "identification", "-e", emb, "--out", report, "--seed", 1)
    assert code == 0, err
    assert out.splitlines()[0] == "5 identities enrolled (5 photos), 13 mated and 2 non-mated probes; by max"
    assert "DIR@FAR skipped at 1e-03, 1e-02, 1e-01: too few non-mated probes" in out
    r = json.loads(report.read_text())
    assert r["embeddings"] == str(emb) and r["protocol"]["seed"] == 1 and len(r["cmc"]) == 5
    assert r["cmc"][-1] == 1.0 and 0.0 <= r["rank_1"] <= r["rank_5"] <= 1.0
    assert report.with_name("ident-cmc.png").stat().st_size > 0

    # the same numbers straight from the model (one command, no file in between)
    code, out2, err = cli(capsys, "identification", "--model", model, "--data", folder, "--seed", 1, "--quiet")
    assert code == 0, err
    assert out2.splitlines()[:2] == out.splitlines()[:2]

    clusters = tmp_path / "clusters"
    code, out, err = cli(capsys, "cluster", "-e", emb, "--out", clusters, "--threshold", 0.9)
    assert code == 0, err
    with open(clusters / "clusters.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20
    metrics = json.loads((clusters / "metrics.json").read_text())
    assert metrics["num_classes"] == 7 and metrics["threshold"] == 0.9
    page = (clusters / "index.html").read_text()
    assert page.count("<figure>") == 20 and "anna/00.png" in page and 'class="missing"' not in page


def test_enroll_identify_with_any_artifact(toy, tmp_path, capsys):
    model, folder = toy
    g = tmp_path / "toy.gallery"
    code, out, err = cli(capsys, "enroll", "-g", g, "--folder", folder, "--min-images", 3,
                         "--per-identity", 2, "--model", model, "--quiet")
    assert code == 0, err
    assert "8 images of 4 identities enrolled, 0 skipped; 4 identities, 8 images in all" in out
    probe = folder / "bert" / "04.png"
    code, out, err = cli(capsys, "identify", "-g", g, probe, "--model", model, "--json", "--threshold", 0.5)
    assert code == 0, err
    row = json.loads(out)
    assert row["matches"][0]["identity"] == row["identity"] == "bert"


def test_one_line_errors(toy, tmp_path, capsys):
    model, folder = toy
    code, _, err = cli(capsys, "identification", "-e", tmp_path / "none.npz")
    assert code == 2 and err.strip() == f"error: {tmp_path / 'none.npz'}: embeddings file not found"
    code, _, err = cli(capsys, "identification", "-e", tmp_path / "x.npz", "--model", model, "--data", folder)
    assert code == 2 and "either --embeddings FILE or --model with --data" in err
    code, _, err = cli(capsys, "identification")
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "identification", "--model", model, "--data", folder, "--by", "median")
    assert code == 2 and err.strip() == "error: --by: expected max or mean, got 'median'"
    code, _, err = cli(capsys, "embed", "--model", model, "--data", tmp_path / "nowhere")
    assert code == 2 and err.strip() == f"error: {tmp_path / 'nowhere'}: dataset folder not found"
    code, _, err = cli(capsys, "cluster", "--out", tmp_path / "c")
    assert code == 2 and err.strip() == "error: cluster: give a FOLDER of photos or --embeddings FILE"
    code, _, err = cli(capsys, "enroll", "-g", tmp_path / "g", "--identity", "x", folder / "anna" / "00.png",
                       "--min-images", 2, "--model", model)
    assert code == 2 and "go with --folder" in err


def _state(path: Path) -> dict[str, int]:
    with Gallery.open(path, index="exact") as g:
        return {r.name: r.num_images for r in g.identities()}


def test_sigkill_during_enrolment_loses_nothing(toy, tmp_path):
    """Kill ``facemetric enroll --folder`` (a separate process, SIGKILL) at increasing delays:
    after every kill a fresh open shows the gallery exactly as before the command or with the
    whole folder; then an uninterrupted run completes it."""
    model, _ = toy
    folder = make_toy_folder(tmp_path / "many", counts={f"p{i:02d}": 12 for i in range(25)}, seed=5)
    g = tmp_path / "kill.gallery"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "facemetric.cli.main", "enroll", "-g", str(g), "--model", str(model), "--quiet"]
    subprocess.run([*cmd, "--identity", "first", str(folder / "p00" / "00.png")], check=True, env=env,
                   capture_output=True)
    before = {"first": 1}
    after = {"first": 1, **{f"p{i:02d}": 12 for i in range(25)}}
    assert _state(g) == before
    killed, finished = 0, False
    for delay in np.linspace(0.3, 6.0, 12):
        proc = subprocess.Popen([*cmd, "--folder", str(folder)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(float(delay))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed += 1
            assert _state(g) in (before, after), f"inconsistent gallery after a kill at {delay:.2f} s"
            if _state(g) == after:
                finished = True
                break
        else:
            assert proc.returncode == 0
            finished = True
            break
    assert killed >= 1, "no run was interrupted: the kill test proved nothing"
    if not finished:
        subprocess.run([*cmd, "--folder", str(folder)], check=True, env=env, capture_output=True)
    assert _state(g) == after


def test_calibrate_stores_the_threshold_identify_uses(toy, tmp_path, capsys):
    model, folder = toy
    g = tmp_path / "cal.gallery"
    code, _, err = cli(capsys, "enroll", "-g", g, "--folder", folder, "--min-images", 3, "--per-identity", 2,
                       "--model", model, "--quiet")
    assert code == 0, err
    code, out, err = cli(capsys, "gallery", "calibrate", "-g", g, "--folder", folder, "--far", 0.1,
                         "--model", model, "--quiet")
    assert code == 0, err
    assert "impostor scores), TAR" in out and f"stored in {g}" in out
    with Gallery.open(g) as gal:
        cal, by = gal.calibration
    assert by == "max" and cal.far <= 0.1 and cal.num_impostor == 20 and cal.far_target == 0.1
    code, out, err = cli(capsys, "identify", "-g", g, folder / "anna" / "03.png", "--model", model)
    assert code == 0, err
    assert f"threshold {cal.threshold:.4f} (calibrated on this gallery at FAR 0.1), by max" in out
    code, out, err = cli(capsys, "identify", "-g", g, folder / "anna" / "03.png", "--model", model, "--by", "mean")
    assert code == 0 and "(model card), by mean" in out  # calibrated for max, not for mean
    code, _, err = cli(capsys, "gallery", "calibrate", "-g", g, "--folder", folder, "--far", 1e-3, "--model", model,
                       "--quiet")
    assert code == 2 and err.strip() == "error: impostor_scores: FAR 0.001 needs at least 1000 impostor scores, got 20"
    with Gallery.open(g) as gal:
        assert gal.calibration[0] == cal  # a failed calibration keeps the stored one
        gal.set_calibration(None)
        assert gal.calibration is None


def test_bad_photos_and_another_model(toy, tmp_path, capsys):
    model, folder = toy
    g = tmp_path / "errs.gallery"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"JFIF? no")
    good = folder / "carl" / "00.png"
    code, out, err = cli(capsys, "enroll", "-g", g, "--identity", "carl", good, broken, tmp_path / "gone.png",
                         "--model", model, "--quiet")
    assert code == 0, err
    assert f"skipped {broken}: " in out and f"skipped {tmp_path / 'gone.png'}: file not found" in out
    assert "1 images of 1 identities enrolled, 2 skipped" in out
    code, out, err = cli(capsys, "identify", "-g", g, broken, "--model", model)
    assert code == 0 and out.startswith(f"{broken}: skipped (")
    other = make_toy_model(tmp_path / "other-model", name="other-toy", seed=7)
    code, _, err = cli(capsys, "identify", "-g", g, good, "--model", other)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: gallery {g} was built with model toy-lenets")
    code, _, err = cli(capsys, "gallery", "remove", "-g", g, "--identity", "zed")
    assert code == 2 and err.strip() == f"error: gallery {g}: no identity 'zed'"


def test_enrolling_the_same_photos_twice_skips_them(toy, tmp_path, capsys):
    model, folder = toy
    g = tmp_path / "dup.gallery"
    photos = [folder / "anna" / "00.png", folder / "anna" / "01.png"]
    code, out, err = cli(capsys, "enroll", "-g", g, "-i", "anna", *photos, photos[0], "--model", model, "--quiet")
    assert code == 0, err
    assert "2 images of 1 identities enrolled, 0 skipped, 1 skipped as already enrolled" in out
    code, out, err = cli(capsys, "enroll", "-g", g, "--folder", folder, "--model", model, "--quiet")
    assert code == 0, err
    assert "18 images of 7 identities enrolled, 0 skipped, 2 skipped as already enrolled; 7 identities, 20 images" in out
    code, out, err = cli(capsys, "enroll", "-g", g, "-i", "anna", photos[0], "--model", model, "--allow-duplicates", "--quiet")
    assert code == 0 and "1 images of 1 identities enrolled" in out
    with Gallery.open(g) as gal:
        anna = gal.images("anna")
        assert len(gal) == 21 and len(anna) == 5 and anna[0].metadata["key"] == anna[-1].metadata["key"]
        assert anna[0].metadata["key"].endswith(f":{photos[0].resolve()}")


def test_identify_and_calibrate_default_to_the_gallerys_model(toy, tmp_path, capsys):
    model, folder = toy
    g = tmp_path / "own.gallery"
    code, _, err = cli(capsys, "enroll", "-g", g, "--folder", folder, "--min-images", 3, "--per-identity", 2,
                       "--model", model, "--quiet")
    assert code == 0, err
    with Gallery.open(g) as gal:
        assert gal.model_reference == str(Path(model).resolve())
    probe = folder / "bert" / "04.png"
    code, out, err = cli(capsys, "identify", "-g", g, probe, "--threshold", 0.5)  # no --model
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith(f"{probe}: bert (cosine similarity ") and ">= threshold 0.5000)" in first
    assert "  1. bert" in out and " cosine " in out.splitlines()[1]
    code, out, err = cli(capsys, "identify", "-g", g, probe, "--threshold", 0.9999)
    assert code == 0 and "< threshold 0.9999)" in out.splitlines()[0] and ": unknown (" in out.splitlines()[0]
    code, out, err = cli(capsys, "gallery", "calibrate", "-g", g, "--folder", folder, "--far", 0.1, "--quiet")
    assert code == 0, err
    assert out.splitlines()[-1].startswith("cosine threshold ")
    other = make_toy_model(tmp_path / "other-model", name="other-toy", seed=7)
    code, _, err = cli(capsys, "identify", "-g", g, probe, "--model", other)
    assert code == 2 and err.strip().endswith(f"; use --model {Path(model).resolve()}")


def test_first_enrolment_interrupted_leaves_no_gallery(toy, tmp_path, capsys, monkeypatch):
    import facemetric.gallery.storage as storage

    model, folder = toy

    class Interrupted(BaseException):
        pass

    def stop(step):
        if step == "enroll:before-commit":
            raise Interrupted

    monkeypatch.setattr(storage, "FAULT_HOOK", stop)
    g = tmp_path / "new.gallery"
    with pytest.raises(Interrupted):
        cli(capsys, "enroll", "-g", g, "--folder", folder, "--model", model, "--quiet")
    assert list(tmp_path.iterdir()) == []  # as it was before: no gallery at all


def test_damaged_vectors_refused_by_list_and_enroll(toy, tmp_path, capsys):
    model, folder = toy
    g = tmp_path / "dmg.gallery"
    code, _, err = cli(capsys, "enroll", "-g", g, "-i", "anna", folder / "anna" / "00.png", "--model", model, "--quiet")
    assert code == 0, err
    seg = next(g.glob("vectors-*.npy"))
    seg.write_bytes(seg.read_bytes()[:-5])
    for args in (("gallery", "list", "-g", g), ("enroll", "-g", g, "-i", "bert", folder / "bert" / "00.png",
                                                "--model", model, "--quiet")):
        code, out, err = cli(capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and seg.name in err, (args, err)
        assert "truncated" in err and "identities" not in out


def test_non_utf8_names_are_skipped_not_fatal(toy, tmp_path, capsys):
    model, _ = toy
    folder = make_toy_folder(tmp_path / "faces", counts={"anna": 3, "bert": 3})
    bad_dir = os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9")
    os.mkdir(bad_dir)
    for name in ("00.png", "01.png"):
        with open(folder / "anna" / name, "rb") as src, open(os.path.join(bad_dir, name), "wb") as dst:
            dst.write(src.read())
    bad_file = os.fsdecode(os.fsencode(str(folder / "bert")) + b"/x\xff.png")
    with open(folder / "bert" / "00.png", "rb") as src, open(bad_file, "wb") as dst:
        dst.write(src.read())
    g = tmp_path / "utf.gallery"
    code, out, err = cli(capsys, "enroll", "-g", g, "--folder", folder, "--model", model, "--quiet")
    assert code == 0, err
    assert "6 images of 2 identities enrolled" in out and "not valid UTF-8" in out
    out_dir = tmp_path / "clusters"
    code, out, err = cli(capsys, "cluster", folder, "--out", out_dir, "--model", model, "--threshold", 0.9, "--quiet")
    assert code == 0, err
    with open(out_dir / "clusters.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and "6 photos -> " in out and "; 2 skipped;" in out
    assert "bert/x\\xff.png: name is not valid UTF-8" in out and "caf\\xe9: name is not valid UTF-8" in out


def test_clusters_csv_is_written_atomically(tmp_path):
    from facemetric.cluster.folder_job import Photos, cluster_photos

    out = tmp_path / "c"
    out.mkdir()
    (out / "clusters.csv").write_text("path,cluster\nold.png,0\n")
    emb = np.eye(3, dtype=np.float32)
    bad = Path(os.fsdecode(b"/photos/x\xff.png"))
    card = {"name": "t", "embedding_dim": 3, "thresholds": {"best_accuracy": 1.0}}
    photos = Photos(emb, [Path("/photos/a.png"), Path("/photos/b.png"), bad], None, card)
    with pytest.raises(UnicodeEncodeError):
        cluster_photos(photos, out, threshold=0.5, thumbnails=False)
    assert (out / "clusters.csv").read_text() == "path,cluster\nold.png,0\n"  # untouched, no temp left
    assert [p.name for p in out.iterdir()] == ["clusters.csv"]
