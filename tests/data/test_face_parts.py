"""The LFW Part Labels reader: real split counts, one-line errors for broken folders."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facemetric.data.face_parts import FaceParts, read_label_map, read_split
from facemetric.errors import DataError
from tests.dense.synthetic_parts import make_parts

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lfw-parts"


@pytest.mark.skipif(not (REAL / "split.csv").is_file(), reason="../shared/data/lfw-parts is not here")
def test_real_split_is_identity_disjoint_with_the_documented_counts():
    rows = read_split(REAL)
    counts = {s: sum(r.split == s for r in rows) for s in ("train", "val", "test")}
    assert counts == {"train": 465, "val": 154, "test": 158}
    people = {s: {r.identity for r in rows if r.split == s} for s in counts}
    assert not (people["train"] & people["val"]) and not (people["train"] & people["test"])
    parts = FaceParts(REAL, "test", limit=3)
    assert parts.images.shape == (3, 150, 150, 3) and parts.labels.shape == (3, 150, 150)
    assert set(np.unique(parts.labels)) <= {0, 1, 2}


def test_synthetic_folder_loads(tmp_path):
    root = make_parts(tmp_path, per_split=(3, 1, 1), size=24)
    p = FaceParts(root, "train")
    assert len(p) == 3 and p.identities[0].startswith("Person_train")
    assert abs(p.class_shares().sum() - 1) < 1e-12


def test_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(DataError, match="LFW Part Labels folder not found"):
        read_split(tmp_path / "nope")
    root = make_parts(tmp_path / "a", per_split=(2, 1, 1), size=24)
    csv = root / "split.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:2] + ["dev,x.jpg,x.png,X"]) + "\n")
    with pytest.raises(DataError, match=r"split\.csv:3: split must be one of train, val, test, got 'dev'"):
        read_split(root)
    csv.write_text("image,label\n")
    with pytest.raises(DataError, match=r"split\.csv:1: expected the header split,image,label,identity"):
        read_split(root)
    csv.write_text("\n".join(lines) + "\n")
    label = sorted((root / "labels").glob("Person_train*/*.png"))[0]
    Image.fromarray(np.full((24, 24), 3, np.uint8), "L").save(label)
    with pytest.raises(DataError, match=r"label value 3 found, expected values 0\.\.2"):
        read_label_map(label)
    Image.fromarray(np.zeros((20, 24), np.uint8), "L").save(label)
    with pytest.raises(DataError, match=r"label map is 24x20, its photo .* is 24x24"):
        FaceParts(root, "train")
