"""SSDDetector: the batched wrapper (resize, preprocessing, DetectionOutput, pixel boxes,
threshold) on a hand-made model with known outputs, and end to end against OpenCV's pipeline
(``cv2.resize`` + ``blobFromImage`` + the Caffe net) on real photos of several sizes."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facemetric.detect.detection_output import DetectionOutput
from facemetric.detect.detector import SSDDetector, SSDPreprocessing, default_device, resize_rgb
from facemetric.detect.res10 import RES10_MEAN_BGR, res10_files
from facemetric.errors import ConfigError, FacemetricError

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CPU = torch.device("cpu")


class FixedSSD(nn.Module):
    """Returns the same (loc, conf) for every image; records the inputs it saw."""

    def __init__(self, loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor):
        super().__init__()
        self.register_buffer("loc", loc)
        self.register_buffer("conf", conf)
        self.register_buffer("priors", priors)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        b = x.shape[0]
        return self.loc.expand(b, -1, -1), self.conf.expand(b, -1, -1)


PRIORS = torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.7], [0.11, 0.1, 0.31, 0.3],
                       [0.0, 0.6, 0.2, 0.9]])


def fixed_detector(probs, threshold=0.5, batch_size=32, outputs="probs", size=(8, 8)):
    p = torch.tensor(probs, dtype=torch.float32)
    conf = torch.stack([1 - p, p], dim=1)[None]
    if outputs == "logits":
        conf = conf.log()
    model = FixedSSD(torch.zeros(1, len(probs), 4), conf, PRIORS[: len(probs)])
    pre = SSDPreprocessing(size, colour="bgr", mean=(10.0, 20.0, 30.0), scale=0.5)
    det = SSDDetector(model, pre, {"num_classes": 2}, threshold=threshold, device=CPU,
                      batch_size=batch_size, outputs=outputs)
    return det, model


def test_boxes_in_pixels_scores_sorted_threshold_strict():
    det, _ = fixed_detector([0.9, 0.6, 0.95, 0.5])
    img = np.full((40, 100, 3), 7, np.uint8)
    (found,) = det.detect([img])
    # prior 2 overlaps prior 0 (IoU 0.905 > 0.45) and scores higher: it suppresses prior 0;
    # prior 3 has exactly the threshold and is not kept (score > threshold)
    np.testing.assert_allclose(found.scores, [0.95, 0.6])
    np.testing.assert_allclose(found.boxes, [[11, 4, 31, 12], [50, 20, 90, 28]], atol=1e-4)
    assert found.labels.tolist() == [1, 1] and found.image_size == (40, 100)
    np.testing.assert_allclose(found.relative_boxes, PRIORS[[2, 1]].numpy(), atol=1e-6)
    assert found.to_json()[0] == {"box": [11.0, 4.0, 31.0, 12.0], "score": 0.95, "label": 1}


def test_logits_get_softmax_and_preprocessing_is_applied():
    det, model = fixed_detector([0.9, 0.6], outputs="logits")
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 200, 100, 50  # R, G, B
    (found,) = det.detect([img])
    np.testing.assert_allclose(found.scores, [0.9, 0.6], atol=1e-6)
    x = model.seen[0][0]  # BGR, (pixel - mean) * 0.5, same size: no resize
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [(50 - 10) / 2, (100 - 20) / 2, (200 - 30) / 2])


def test_any_sizes_in_one_call_and_batching():
    det, model = fixed_detector([0.9, 0.6], batch_size=2)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(8, 8), (30, 17), (5, 64)]]
    found = det.detect(images)
    assert [f.image_size for f in found] == [(8, 8), (30, 17), (5, 64)]
    np.testing.assert_allclose(found[1].boxes[0], PRIORS[0].numpy() * [17, 30, 17, 30], atol=1e-4)
    assert [x.shape[0] for x in model.seen] == [2, 1]  # chunks of batch_size
    assert all(x.shape[1:] == (3, 8, 8) for x in model.seen)


def test_raising_the_confidence_threshold_changes_nothing_above_it():
    """The detector runs DetectionOutput with its threshold raised to ``threshold``: same
    detections above the threshold as the 0.01 threshold then a filter, on random outputs."""
    g = torch.Generator().manual_seed(0)
    n = 600
    centres = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    sizes = torch.rand(n, 2, generator=g) * 0.2 + 0.05
    priors = torch.cat([centres - sizes / 2, centres + sizes / 2], 1)
    loc = torch.randn(1, n, 4, generator=g) * 0.5
    logits = torch.randn(1, n, 2, generator=g) * 2
    pre = SSDPreprocessing((8, 8), colour="rgb", mean=(0.0, 0.0, 0.0), scale=1.0)
    base = {"num_classes": 2, "confidence_threshold": 0.01, "nms_threshold": 0.45, "top_k": 400,
            "keep_top_k": 200}
    full = DetectionOutput(**base)(loc, logits.softmax(-1), priors)[0]
    for t in (0.3, 0.5, 0.8):
        det = SSDDetector(FixedSSD(loc, logits, priors), pre, base, threshold=t, device=CPU)
        assert det.detection_output.confidence_threshold == t
        (found,) = det.detect([np.zeros((8, 8, 3), np.uint8)])
        want = full[full[:, 1] > t]
        assert len(want) > 3
        np.testing.assert_allclose(found.scores, want[:, 1].numpy())
        np.testing.assert_allclose(found.relative_boxes, want[:, 2:].numpy(), atol=1e-6)


def test_resize_matches_the_bilinear_formula():
    img = np.array([[[0], [100]], [[50], [250]]], np.uint8).repeat(3, axis=2)  # 2x2
    out = resize_rgb(img, (4, 4), CPU)[0].numpy()
    # half-pixel centres: output x = 0..3 samples input x = (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25
    # (clamped to the edges), weights 0, 0.25, 0.75, 1 on the second pixel
    w = np.array([0.0, 0.25, 0.75, 1.0])
    top = 0 + w * 100
    bottom = 50 + w * 200
    ref = np.outer(1 - w, top) + np.outer(w, bottom)
    np.testing.assert_array_equal(out, np.round(ref))
    same = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    np.testing.assert_array_equal(resize_rgb(same, (4, 4), CPU).permute(1, 2, 0).numpy(), same)


def test_resize_is_cv2_linear_within_one_level():
    cv2 = pytest.importorskip("cv2", reason="OpenCV (the reference) is not installed")
    rng = np.random.default_rng(1)
    for h, w in [(150, 150), (640, 480), (97, 301)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours = resize_rgb(img, (300, 300), CPU).permute(1, 2, 0).numpy()
        ref = cv2.resize(img, (300, 300))  # INTER_LINEAR
        assert np.abs(ours - ref.astype(np.float32)).max() <= 1


def test_bad_inputs_are_one_line_errors():
    det, _ = fixed_detector([0.9])
    with pytest.raises(FacemetricError, match=r"image 1: expected an RGB uint8 \[H, W, 3\] array, got array float32"):
        det.detect([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(FacemetricError, match="image 0: .* got list"):
        det.detect([[1, 2, 3]])
    pre = SSDPreprocessing((8, 8))
    with pytest.raises(ConfigError, match="threshold"):
        SSDDetector(nn.Identity(), pre, priors=PRIORS, threshold=1.5, device=CPU)
    with pytest.raises(ConfigError, match="batch_size"):
        SSDDetector(nn.Identity(), pre, priors=PRIORS, batch_size=0, device=CPU)
    with pytest.raises(ConfigError, match="no `priors` tensor"):
        SSDDetector(nn.Identity(), pre, device=CPU)
    assert det.detect([]) == []


def test_default_device():
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


# -- the res10 detector end to end vs OpenCV's whole pipeline ---------------------------------
@pytest.fixture(scope="module")
def photos():
    cv2 = pytest.importorskip("cv2", reason="OpenCV (the reference) is not installed")
    if int(cv2.__version__.split(".")[0]) >= 5:
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer (the reference needs <5)")
    ann = DATA / "lfw-5590" / "annotations.csv"
    lfw = DATA / "lfw-deepfunneled"
    if not ann.is_file() or not lfw.is_dir():
        pytest.skip(f"{DATA}: lfw-5590 or lfw-deepfunneled is absent")
    with open(ann, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"][:4]
    bgr = [cv2.imread(os.fspath(DATA / "lfw-5590" / r["path"])) for r in rows]  # 150x150
    bgr += [cv2.imread(os.fspath(lfw / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"))]  # 250x250
    bgr += [np.ascontiguousarray(np.concatenate([bgr[0], bgr[1][:, ::-1]], axis=1))]  # 150x300, two faces
    bgr += [cv2.resize(bgr[2], (420, 560))]  # 560x420
    return cv2, [np.ascontiguousarray(b[:, :, ::-1]) for b in bgr], bgr


def test_res10_detector_matches_opencv_pipeline(photos):
    cv2, rgb, bgr = photos
    files = res10_files()
    ref = cv2.dnn.readNetFromCaffe(str(files.prototxt), str(files.caffemodel))
    det = SSDDetector.res10(threshold=0.3, device=CPU, batch_size=4)
    found = det.detect(rgb)
    assert [f.image_size for f in found] == [b.shape[:2] for b in bgr]
    for f, img in zip(found, bgr, strict=True):
        ref.setInput(cv2.dnn.blobFromImage(cv2.resize(img, (300, 300)), 1.0, (300, 300), RES10_MEAN_BGR))
        rows = ref.forward()[0, 0]
        rows = rows[rows[:, 2] > 0.3]
        assert len(f) == len(rows) >= 1
        h, w = img.shape[:2]
        # OpenCV's fixed-point resize differs by at most one grey level: boxes agree to
        # 1% of the photo, scores to 0.01
        np.testing.assert_allclose(f.relative_boxes, rows[:, 3:], atol=1e-2)
        np.testing.assert_allclose(f.scores, rows[:, 2], atol=1e-2)
        np.testing.assert_allclose(f.boxes, rows[:, 3:] * [w, h, w, h], atol=1e-2 * max(h, w))
    assert len(found[5]) == 2  # the two faces side by side


def test_one_call_equals_one_photo_at_a_time(photos):
    _, rgb, _ = photos
    det = SSDDetector.res10(threshold=0.5, device=CPU, batch_size=32)
    together = det.detect(rgb[3:])
    for img, f in zip(rgb[3:], together, strict=True):
        (alone,) = det.detect([img])
        np.testing.assert_allclose(alone.boxes, f.boxes, atol=1e-3)
        np.testing.assert_allclose(alone.scores, f.scores, atol=1e-5)
