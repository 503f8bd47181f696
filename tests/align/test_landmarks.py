"""The landmark-model interface (facemetric.align.landmarks)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from facemetric.align.landmarks import LANDMARKERS, Landmarker, build_landmarker, check_boxes
from facemetric.errors import ConfigError, FacemetricError

needs_models = pytest.mark.skipif(
    importlib.util.find_spec("face_recognition_models") is None,
    reason="face_recognition_models not installed (pip install 'facemetric[pretrained]')",
)


def test_registry_names_and_unknown():
    assert {"dlib5-port", "dlib68-port", "dlib5", "dlib68"} <= set(LANDMARKERS.names())
    with pytest.raises(ConfigError, match="unknown landmark model 'nope'") as exc:
        build_landmarker("nope")
    assert "\n" not in str(exc.value)


def test_check_boxes():
    assert check_boxes([]).shape == (0, 4)
    assert check_boxes([[1, 2, 3, 4]]).dtype == np.float64
    with pytest.raises(FacemetricError, match=r"\[K, 4\]"):
        check_boxes([[1, 2, 3]])
    with pytest.raises(FacemetricError, match="finite"):
        check_boxes([[0, 0, np.nan, 1]])


class Fixed(Landmarker):
    """A landmarker that puts its 2 points at the box's top-left and bottom-right corners."""

    layout, points = "corners", 2

    def predict(self, image, boxes):
        b = check_boxes(boxes)
        return np.stack([b[:, :2], b[:, 2:]], axis=1)


def test_an_instance_passes_through_and_options_with_it_are_refused():
    lm = Fixed()
    assert build_landmarker(lm) is lm
    with pytest.raises(FacemetricError, match="options"):
        build_landmarker(lm, path="x")
    assert lm.predict(None, [[1, 2, 3, 4]]).tolist() == [[[1, 2], [3, 4]]]


@needs_models
def test_port_contract(shared_data):
    lm = build_landmarker("dlib5-port")
    assert lm.layout == "dlib5" and lm.points == 5
    photo = shared_data / "lfw-deepfunneled" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} not found")
    img = np.asarray(Image.open(photo).convert("RGB"))
    assert lm.predict(img, np.zeros((0, 4))).shape == (0, 5, 2)
    boxes = np.array([[67, 80, 176, 188], [-40, 10, 201, 261]], float)
    pts = lm.predict(img, boxes)
    assert pts.shape == (2, 5, 2) and pts.dtype == np.float64
    # one box at a time gives the same as the batch
    np.testing.assert_array_equal(pts[1], lm.predict(img, boxes[1:])[0])
    # a non-contiguous view of the photo gives the same points
    np.testing.assert_array_equal(pts, lm.predict(np.asfortranarray(img), boxes))
    with pytest.raises(FacemetricError, match="RGB uint8"):
        lm.predict(img[:, :, 0], boxes)
    dlib = pytest.importorskip("dlib", reason="dlib-bin not installed: parity with dlib skipped")
    assert dlib is not None
    np.testing.assert_array_equal(pts, build_landmarker("dlib5").predict(img, boxes))
