"""The res10 SSD port against OpenCV's DNN module (the reference: ``cv2.dnn.readNetFromCaffe``
on the same two files; ``opencv-python-headless<5``, 5.x dropped the Caffe importer).

Parity on 50 photos of lfw-5590 (the first 50 of the ``test`` split), the same 300x300 blob fed
to both, the port as the ``ssd-res10`` backend runs it (BatchNorms folded into the convolutions,
channels-last; the unfolded module equals it within float rounding, tested too): the same detections after NMS (one-to-one), boxes within 1e-3 (relative coordinates)
and scores within 1e-4. The allowed differences are float rounding deciding a tie (the two
implementations sum the convolutions in different orders; scores agree to ~2e-6): a detection
whose score is within the tolerance of the ``top_k``-th (400th) candidate may be in one list
only (when more than 400 boxes pass the 0.01 threshold, two candidates at 0.069614 swap places
at the cut), and greedy NMS on two overlapping boxes of (nearly) equal score -- e.g. the
priors along a border, all seeing the same padding -- may keep either, and with it suppress
different lower boxes (:func:`_tie_explained` checks that trace). On identical raw outputs the
detection output equals OpenCV's row for row.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facemetric.detect.caffe import read_caffemodel
from facemetric.detect.detector import SSDDetector
from facemetric.detect.res10 import (
    RES10_DETECTION_OUTPUT,
    RES10_MEAN_BGR,
    RES10_SHA1,
    Res10SSD,
    feature_sizes,
    load_res10,
    res10_files,
)
from facemetric.errors import FacemetricError

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "lfw-5590"
#: photos compared (more: FACEMETRIC_RES10_PARITY_PHOTOS=1439 for the whole test split)
N_PHOTOS = int(os.environ.get("FACEMETRIC_RES10_PARITY_PHOTOS", "50"))
CHUNK = 25
BOX_TOL, SCORE_TOL = 1e-3, 1e-4


def _files_or_skip():
    try:
        return res10_files()
    except FacemetricError as exc:
        pytest.skip(str(exc))


def _cv2_or_skip():
    cv2 = pytest.importorskip("cv2", reason="OpenCV (the parity reference) is not installed")
    if int(cv2.__version__.split(".")[0]) >= 5:
        pytest.skip(f"OpenCV {cv2.__version__}: 5.x has no Caffe importer (the reference needs <5)")
    return cv2


@pytest.fixture(scope="module")
def files():
    return _files_or_skip()


@pytest.fixture(scope="module")
def net(files):
    return load_res10()


@pytest.fixture(scope="module")
def reference(files):
    cv2 = _cv2_or_skip()
    ref = cv2.dnn.readNetFromCaffe(str(files.prototxt), str(files.caffemodel))
    ref.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    ref.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return cv2, ref


def _blobs(cv2, names: list[str]) -> np.ndarray:
    """OpenCV's input for the res10 model: resize to 300x300, BGR minus the mean."""
    out = [cv2.dnn.blobFromImage(cv2.resize(cv2.imread(os.fspath(DATA / n)), (300, 300)), 1.0,
                                 (300, 300), RES10_MEAN_BGR) for n in names]
    return np.concatenate(out)


@pytest.fixture(scope="module")
def names():
    if not (DATA / "annotations.csv").is_file():
        pytest.skip(f"{DATA} is absent (the parity photos)")
    with open(DATA / "annotations.csv", newline="") as fh:
        return [r["path"] for r in csv.DictReader(fh) if r["split"] == "test"][:N_PHOTOS]


@pytest.fixture(scope="module")
def blobs(reference, names):
    """The first three photos' input blobs."""
    return names[:3], _blobs(reference[0], names[:3])


@pytest.fixture(scope="module")
def backend(files):
    """The port as the ``ssd-res10`` backend runs it: BatchNorms folded, channels-last."""
    return SSDDetector.res10(threshold=0.0, device="cpu")


def _forward(backend: SSDDetector, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        loc, conf = backend.model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))
    return loc, conf.softmax(-1)


@pytest.fixture(scope="module")
def ours(backend, blobs):
    return _forward(backend, blobs[1])


def test_architecture_shapes(net, ours):
    """8,892 priors: conv8_2 and conv9_2 keep 5x5 maps (stride 1)."""
    assert feature_sizes(net) == [(38, 38), (19, 19), (10, 10), (5, 5), (5, 5), (5, 5)]
    assert net.priors.shape == (8892, 4)
    assert net.pool.ceil_mode  # 150 -> 75 (floor mode would give 74 and 37x37 conv4_3 maps)
    loc, probs = ours
    assert loc.shape == (3, 8892, 4) and probs.shape == (3, 8892, 2)
    assert feature_sizes(Res10SSD(num_classes=3))[-1] == (5, 5)


def test_caffe_batchnorm_scale_factor_is_divided_out(files, net):
    """Caffe's BatchNorm blobs are (mean * s, var * s, s) with s ~ 1000 here."""
    mean, var, s = read_caffemodel(files.caffemodel).blobs("conv1_bn_h")
    assert s.reshape(-1)[0] > 100
    np.testing.assert_allclose(net.bn1.running_mean.numpy(), mean / s.reshape(-1)[0], rtol=1e-6)
    np.testing.assert_allclose(net.bn1.running_var.numpy(), var / s.reshape(-1)[0], rtol=1e-6)


def test_priors_equal_opencv_priorbox(net, reference, blobs):
    _, ref = reference
    ref.setInput(blobs[1][:1])
    prior_blob = ref.forward("mbox_priorbox")  # [1, 2, N * 4]: boxes, then variances
    np.testing.assert_allclose(net.priors.numpy(), prior_blob[0, 0].reshape(-1, 4), atol=1e-6)
    np.testing.assert_allclose(prior_blob[0, 1].reshape(-1, 4)[0], [0.1, 0.1, 0.2, 0.2], atol=1e-7)


def _pair(mine: np.ndarray, theirs: np.ndarray, box_tol: float, score_tol: float):
    """Greedy one-to-one pairing of ``(score, x0, y0, x1, y1)`` rows (``mine`` in score order,
    each with the nearest unused row of ``theirs`` within the tolerances): ``(pairs, unmatched
    rows of mine, unmatched rows of theirs)``."""
    used: set[int] = set()
    pairs, lone = [], []
    for i, row in enumerate(mine):
        diff = np.abs(theirs[:, 1:] - row[1:]).max(axis=1) if len(theirs) else np.zeros(0)
        ok = [j for j in np.argsort(diff) if j not in used and diff[j] <= box_tol
              and abs(theirs[j, 0] - row[0]) <= score_tol]
        if ok:
            used.add(int(ok[0]))
            pairs.append((i, int(ok[0])))
        else:
            lone.append(i)
    return pairs, mine[lone], theirs[[j for j in range(len(theirs)) if j not in used]]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _tie_explained(um: np.ndarray, ut: np.ndarray, nms: float) -> None:
    """Unmatched detections (both sides) are allowed only as the trace of a near-tie in greedy
    NMS: the highest-scored of them has a partner on the other side within the score tolerance
    that overlaps it by more than the NMS threshold (the two implementations kept different
    boxes of the tie), and every one of them overlaps (IoU > nms) an unmatched detection of the
    other side scoring at least as high (within the tolerance) -- the box that suppressed it
    there. A wrong NMS threshold, decode or score leaves a detection without such a chain."""
    top = max([("m", r) for r in um] + [("t", r) for r in ut], key=lambda x: x[1][0])
    side, row = top
    other = ut if side == "m" else um
    near = other[np.abs(other[:, 0] - row[0]) <= SCORE_TOL] if len(other) else other
    assert len(near) and (_iou(row[None, 1:], near[:, 1:]) > nms).any(), f"{row}: no near-tie"
    for rows, others in ((um, ut), (ut, um)):
        for r in rows:
            higher = others[others[:, 0] >= r[0] - SCORE_TOL] if len(others) else others
            assert len(higher) and (_iou(r[None, 1:], higher[:, 1:]) > nms).any(), f"{r}: unexplained"


def test_detections_equal_opencv(backend, reference, names):
    """Per photo: (1) loc and softmax(conf) of all 8,892 priors vs OpenCV's; (2) the detection
    output on OpenCV's own raw outputs equals OpenCV's detection_out row for row (the NMS,
    decode and top_k semantics on identical inputs); (3) end to end, the same detections after
    NMS (boxes 1e-3, scores 1e-4), except rows at the top_k cut or traced to a near-tie (see
    the module docstring and :func:`_tie_explained`)."""
    cv2, ref = reference
    assert backend.detection_output.confidence_threshold == RES10_DETECTION_OUTPUT["confidence_threshold"]
    top_k, nms = RES10_DETECTION_OUTPUT["top_k"], RES10_DETECTION_OUTPUT["nms_threshold"]
    exact = matched = cut_rows = tie_rows = 0
    worst_box = worst_score = 0.0
    for start in range(0, len(names), CHUNK):
        chunk = names[start:start + CHUNK]
        x = _blobs(cv2, chunk)
        loc, probs = _forward(backend, x)
        dets = backend.detection_output(loc, probs, backend.priors)
        for i, name in enumerate(chunk):
            ref.setInput(x[i:i + 1])
            ref_loc, ref_conf, theirs = ref.forward(["mbox_loc", "mbox_conf_flatten", "detection_out"])
            np.testing.assert_allclose(loc[i].numpy().ravel(), ref_loc.ravel(), atol=2e-4, rtol=1e-4)
            np.testing.assert_allclose(probs[i].numpy().ravel(), ref_conf.ravel(), atol=1e-5)
            theirs = theirs[0, 0]
            theirs = theirs[theirs[:, 2] > 0][:, 2:]  # (score, x0, y0, x1, y1); drop empty rows
            same_in = backend.detection_output(torch.from_numpy(ref_loc).view(1, -1, 4),
                                               torch.from_numpy(ref_conf).view(1, -1, 2), backend.priors)
            _, um, ut = _pair(same_in[0][:, 1:].numpy(), theirs, 1e-5, 1e-6)
            assert len(um) == len(ut) == 0, f"{name}: detection output differs on OpenCV's inputs"
            mine = dets[i][:, 1:].numpy()
            pairs, um, ut = _pair(mine, theirs, BOX_TOL, SCORE_TOL)
            candidates = torch.sort(probs[i, :, 1], descending=True).values
            if (candidates > 0.01).sum() > top_k:  # rows at the top_k cut may be on one side
                cut = float(candidates[top_k - 1]) + SCORE_TOL
                cut_rows += int((um[:, 0] <= cut).sum() + (ut[:, 0] <= cut).sum())
                um, ut = um[um[:, 0] > cut], ut[ut[:, 0] > cut]
            if len(um) or len(ut):
                _tie_explained(um, ut, nms)
                tie_rows += len(um) + len(ut)
            matched += len(pairs)
            exact += not (len(um) or len(ut) or len(mine) != len(theirs))
            for a, b in pairs:
                worst_box = max(worst_box, float(np.abs(mine[a, 1:] - theirs[b, 1:]).max()))
                worst_score = max(worst_score, abs(float(mine[a, 0] - theirs[b, 0])))
            # the face itself: both find it first, with the same box
            assert mine[0, 0] > 0.5 and np.abs(mine[0, 1:] - theirs[0, 1:]).max() <= BOX_TOL, name
    assert matched >= len(names) and tie_rows + cut_rows <= 0.01 * matched
    print(f"res10 parity on {len(names)} photos: {matched} detections matched (worst box diff "
          f"{worst_box:.2e}, worst score diff {worst_score:.2e}), {exact} photos identical; "
          f"{tie_rows} rows differ by near-ties in NMS, {cut_rows} at the top_k cut")


def test_fused_port_equals_unfused(net, blobs):
    fused = load_res10(fuse=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in (fused.bn1, fused.block64.bn2))
    assert len(fused.heads) == 6 and len(fused.loc) == 0  # loc + conf as one conv per source
    x = torch.from_numpy(blobs[1][:4])
    with torch.inference_mode():
        loc_a, conf_a = net(x)
        loc_b, conf_b = fused(x)
    torch.testing.assert_close(loc_b, loc_a, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(conf_b.softmax(-1), conf_a.softmax(-1), atol=1e-5, rtol=0)


def test_sha1_mismatch_is_refused(files, tmp_path):
    bad = tmp_path / "res10.caffemodel"
    shutil.copyfile(files.caffemodel, bad)
    with open(bad, "r+b") as fh:
        fh.seek(-8, os.SEEK_END)
        fh.write(b"\x00" * 8)
    with pytest.raises(FacemetricError) as exc:
        load_res10(files.prototxt, bad)
    assert f"expected {RES10_SHA1}" in str(exc.value) and "\n" not in str(exc.value)


def test_a_prototxt_that_differs_from_the_port_is_refused(files, tmp_path):
    text = files.prototxt.read_text()
    at = text.index('name: "conv8_2_h"')
    start = text.index("stride: 1", at)
    changed = text[:start] + "stride: 2" + text[start + len("stride: 1"):]
    path = tmp_path / "deploy.prototxt"
    path.write_text(changed)
    with pytest.raises(FacemetricError, match=r"layer 'conv8_2_h': .* = \(128, 3, 2, 1"):
        load_res10(path, files.caffemodel)


def test_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FacemetricError, match=r"pip install 'facemetric\[pretrained\]'"):
        res10_files()
