"""lfw-5590 annotations reader: values, splits, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from facemetric.data.face_boxes import ANNOTATION_COLUMNS, read_face_boxes
from facemetric.errors import DataError

ROW = "train,A/A_0001.jpg,150,150,50.40,55.20,96.60,101.40,63.75,64.65,88.05,67.35,75.15,85.65,63.15,94.65,83.85,97.05,A"


def _write(tmp_path, *rows):
    path = tmp_path / "annotations.csv"
    path.write_text(",".join(ANNOTATION_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    return path


def test_values_and_relative_box(tmp_path):
    path = _write(tmp_path, ROW, ROW.replace("train,A/", "test,B/").replace(",A", ",B"))
    records = read_face_boxes(path, check_files=False)
    assert [r.split for r in records] == ["train", "test"]
    r = records[0]
    np.testing.assert_allclose(r.box, [50.4, 55.2, 96.6, 101.4], rtol=1e-6)
    np.testing.assert_allclose(r.relative_box(), [50.4 / 150, 55.2 / 150, 96.6 / 150, 101.4 / 150], rtol=1e-6)
    assert r.landmarks.shape == (5, 2)
    np.testing.assert_allclose(r.landmarks[2], [75.15, 85.65], rtol=1e-6)
    assert r.identity == "A" and r.path == tmp_path / "A/A_0001.jpg"
    assert [r.split for r in read_face_boxes(path, split="test", check_files=False)] == ["test"]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (ROW.replace("train,", "val,"), "field 'split'"),
        (ROW.replace("50.40", "abc"), "field 'x1'"),
        (ROW.replace("50.40", "nan"), "finite"),
        (ROW.replace("96.60", "40.00"), "x1 < x2"),
        (ROW.replace("101.40", "151.00"), "height=150"),
        (ROW.replace(",150,150,", ",0,150,"), "field 'width'"),
        (ROW.rsplit(",", 3)[0], "comma-separated"),
    ],
)
def test_bad_rows_one_line(tmp_path, row, expected):
    path = _write(tmp_path, ROW, row)
    with pytest.raises(DataError) as info:
        read_face_boxes(path, check_files=False)
    message = str(info.value)
    assert expected in message and "annotations.csv:3" in message and "\n" not in message


def test_missing_file_and_photo(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_face_boxes(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="photo 'A/A_0001.jpg' not found"):
        read_face_boxes(_write(tmp_path, ROW))
    with pytest.raises(DataError, match="unknown split 'val'"):
        read_face_boxes(_write(tmp_path, ROW), split="val")


def test_real_file(shared_data):
    csv_path = shared_data / "lfw-5590" / "annotations.csv"
    if not csv_path.is_file():
        pytest.skip(f"{csv_path} not present")
    train = read_face_boxes(csv_path, split="train")
    test = read_face_boxes(csv_path, split="test", check_files=False)
    assert (len(train), len(test)) == (4150, 1439)
    rel = np.stack([r.relative_box() for r in test])
    assert (rel >= 0).all() and (rel <= 1).all()
    inside = np.stack([(r.landmarks >= r.box[:2]) & (r.landmarks <= r.box[2:]) for r in train])
    assert inside.all()
