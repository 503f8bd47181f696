"""The learned 5-point model (facemetric.align.landmark_net): crop geometry against plain
slicing and hand-computed maps, the flip rule, the artifact round trip and the registered
``learned5`` landmarker against a manual computation."""

import json
import math

import numpy as np
import pytest
import torch

from facemetric.align.landmark_net import (
    CARD_FILE,
    WEIGHTS_FILE,
    LandmarkNet,
    Learned5Landmarker,
    crop_face,
    crop_matrix,
    flip_units,
    from_crop_units,
    load_landmark_model,
    normalise_crops,
    predict_units,
    save_landmark_model,
    to_crop_units,
)
from facemetric.align.landmarks import LANDMARKERS, Landmarker, build_landmarker
from facemetric.align.transform import apply_affine
from facemetric.errors import FacemetricError


def _image(h=120, w=140, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_crop_without_margin_of_an_integer_box_is_a_slice():
    img = _image()
    crop, m = crop_face(img, (10, 20, 74, 84), size=64, margin=0.0)
    np.testing.assert_array_equal(crop, img[20:84, 10:74])
    # the map is a pure translation by the box's corner
    np.testing.assert_allclose(m, [[1, 0, -10], [0, 1, -20]], atol=1e-12)


def test_crop_matrix_by_hand():
    # box 40x60 px at (5, 10): centre (24.5, 39.5) in pixel-centre coordinates, side 60;
    # margin 0.5 -> crop side 120 -> 32 px: scale 32/120
    m = crop_matrix((5, 10, 45, 70), size=32, margin=0.5)
    k = 32 / 120
    centre = np.array([[24.5, 39.5]])
    np.testing.assert_allclose(apply_affine(m, centre), [[15.5, 15.5]])
    np.testing.assert_allclose(apply_affine(m, centre + [60.0, 0.0]), [[15.5 + 60 * k, 15.5]])
    # jitter: shift by 0.1 side (6 px) right, scale 2 (half the magnification), rotate 90 degrees
    mj = crop_matrix((5, 10, 45, 70), size=32, margin=0.5, shift=(0.1, 0.0), scale=2.0, angle=math.pi / 2)
    np.testing.assert_allclose(apply_affine(mj, centre + [6.0, 0.0]), [[15.5, 15.5]], atol=1e-12)
    # rotation by +90 degrees maps a point to the right of the centre below... (x, y) -> (-y, x)
    np.testing.assert_allclose(apply_affine(mj, centre + [6.0 + 10.0, 0.0]), [[15.5, 15.5 + 10 * k / 2]], atol=1e-12)
    with pytest.raises(FacemetricError, match="is empty"):
        crop_matrix((5, 5, 5, 9))


def test_crop_units_round_trip_and_flip():
    m = crop_matrix((12.3, 8.1, 70.2, 66.0), size=64, margin=0.25, angle=0.2)
    pts = np.array([[30.0, 30.0], [50.0, 31.0], [40.0, 45.0], [33.0, 55.0], [48.0, 56.0]])
    units = to_crop_units(pts, m, 64)
    np.testing.assert_allclose(from_crop_units(units, m, 64), pts, atol=1e-9)
    flipped = flip_units(units)
    np.testing.assert_allclose(flip_units(flipped), units)
    np.testing.assert_allclose(flipped[0], [-units[1, 0], units[1, 1]])  # left eye <- mirrored right eye
    np.testing.assert_allclose(flipped[3], [-units[4, 0], units[4, 1]])
    np.testing.assert_allclose(flipped[2], [-units[2, 0], units[2, 1]])
    # a point at crop pixel q sits at size-1-q in the mirrored crop: that is t -> -t in crop units
    q = units * 64 + 31.5
    np.testing.assert_allclose((flipped * 64 + 31.5)[2, 0], 63 - q[2, 0])


def test_mirrored_image_gives_mirrored_crop():
    # a smooth image: OpenCV quantises sample positions to 1/32 px, which on noise would
    # change values by several levels; on a smooth image by at most one
    yy, xx = np.mgrid[0:80, 0:90].astype(np.float64)
    img = np.stack([127 + 120 * np.sin(xx / 7.0 + c) * np.cos(yy / 9.0 - c) for c in range(3)], axis=2)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    box = (20.0, 10.0, 60.0, 52.0)
    crop, _ = crop_face(img, box, 32, 0.25)
    w = img.shape[1]
    mirrored_box = (w - box[2], box[1], w - box[0], box[3])
    crop_m, _ = crop_face(np.ascontiguousarray(img[:, ::-1]), mirrored_box, 32, 0.25)
    np.testing.assert_allclose(crop_m.astype(int), crop[:, ::-1].astype(int), atol=1)


def test_normalise_crops():
    crops = np.array([[[[0, 255, 127]]]], dtype=np.uint8)
    x = normalise_crops(crops)
    assert x.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(x.flatten().numpy(), [-1.0, 1.0, 127 / 127.5 - 1], atol=1e-6)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    torch.manual_seed(0)
    net = LandmarkNet(width=4, size=32, dropout=0.0)
    for p in net.parameters():  # a non-trivial, deterministic network
        torch.nn.init.normal_(p, std=0.05)
    net.set_mean_shape(np.array([[-0.15, -0.1], [0.15, -0.1], [0.0, 0.05], [-0.1, 0.2], [0.1, 0.2]]))
    net.eval()
    run = tmp_path_factory.mktemp("run")
    save_landmark_model(run / "landmark_model", net, margin=0.3, card={"trained_on_boxes": "labelled"})
    return run, net


def test_artifact_round_trip(artifact):
    run, net = artifact
    loaded, card = load_landmark_model(run)  # the run directory or the folder itself
    load_landmark_model(run / "landmark_model")
    assert card["crop"] == {"size": 32, "margin": 0.3} and card["layout"] == "arcface5"
    assert card["trained_on_boxes"] == "labelled"
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_learned5_matches_a_manual_prediction(artifact):
    run, net = artifact
    lm = build_landmarker("learned5", path=run)
    assert isinstance(lm, Landmarker) and lm.layout == "arcface5" and lm.points == 5
    assert "learned5" in LANDMARKERS
    img = _image(100, 110, 3)
    boxes = np.array([[20.0, 15.0, 70.0, 66.0], [-5.0, 40.0, 40.0, 90.0]])
    out = lm.predict(img, boxes)
    assert out.shape == (2, 5, 2) and out.dtype == np.float64
    for k, box in enumerate(boxes):
        crop, m = crop_face(img, box, 32, 0.3)
        with torch.no_grad():
            units = net(normalise_crops(crop[None])).double().numpy()[0]
        np.testing.assert_allclose(out[k], from_crop_units(units, m, 32), atol=1e-5)
    assert lm.predict(img, np.zeros((0, 4))).shape == (0, 5, 2)
    # flip TTA: the mean of the crop's and the mirrored crop's predictions
    crop, m = crop_face(img, boxes[0], 32, 0.3)
    with torch.no_grad():
        a = net(normalise_crops(crop[None])).double().numpy()[0]
        b = net(normalise_crops(np.ascontiguousarray(crop[:, ::-1])[None])).double().numpy()[0]
    want = from_crop_units(0.5 * (a + flip_units(b)), m, 32)
    got = Learned5Landmarker(run, flip=True).predict(img, boxes[:1])[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(predict_units(net, crop[None], flip=True)[0], 0.5 * (a + flip_units(b)), atol=1e-6)


def test_learned5_errors_are_one_line(artifact, tmp_path):
    run, _ = artifact
    with pytest.raises(FacemetricError, match="^learned5 landmarks: 'path' is required"):
        build_landmarker("learned5")
    with pytest.raises(FacemetricError, match="landmark model not found$"):
        build_landmarker("learned5", path=tmp_path / "nope")
    with pytest.raises(FacemetricError, match="not a landmark model"):
        build_landmarker("learned5", path=tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CARD_FILE).write_text((run / "landmark_model" / CARD_FILE).read_text())
    (bad / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(FacemetricError, match=r"weights.pt: cannot load the landmark weights"):
        load_landmark_model(bad)
    card = json.loads((bad / CARD_FILE).read_text())
    card["format"] = "something-else"
    (bad / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(FacemetricError, match="format expected"):
        load_landmark_model(bad)
    lm = build_landmarker("learned5", path=run)
    with pytest.raises(FacemetricError, match=r"^landmark image: expected RGB uint8"):
        lm.predict(np.zeros((10, 10), np.uint8), np.zeros((0, 4)))
    with pytest.raises(FacemetricError, match=r"^landmark boxes: expected shape \[K, 4\]"):
        lm.predict(_image(), np.zeros((2, 3)))
    with pytest.raises(FacemetricError, match="multiple of 32"):
        LandmarkNet(size=48)
