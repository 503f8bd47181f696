"""``facemetric parse`` and ``facemetric eval-dense`` on a tiny trained run."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.cli.cli_helpers import cli
from tests.dense.synthetic_parts import trained_root, trained_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory.mktemp("dense"))


def test_parse_writes_label_pngs_overlays_and_a_page(run, tmp_path, capsys):
    root = trained_root()
    photos = sorted((root / "images").glob("*/*.jpg"))[:2]
    code, out, err = cli(capsys, "parse", *photos, "--model", run, "--out", tmp_path / "out")
    assert code == 0, err
    rep = json.loads((tmp_path / "out" / "parse.json").read_text())
    assert len(rep["photos"]) == 2 and rep["class_names"] == ["background", "skin", "hair"]
    for e in rep["photos"]:
        lab = np.asarray(Image.open(tmp_path / "out" / e["files"]["labels"]))
        assert lab.shape == (32, 32) and lab.max() <= 2
        assert abs(sum(e["shares"].values()) - 1) < 1e-9
        assert (tmp_path / "out" / e["files"]["overlay"]).is_file()
    page = (tmp_path / "out" / "index.html").read_text()
    assert "overlay" in page and "<img" in page
    assert "parse.json" in out


def test_parse_errors_are_one_line(run, tmp_path, capsys):
    code, _, err = cli(capsys, "parse", tmp_path / "missing.jpg", "--model", run, "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and "missing.jpg: file not found" in err
    assert not (tmp_path / "o").exists()
    photo = sorted((trained_root() / "images").glob("*/*.jpg"))[0]
    code, _, err = cli(capsys, "parse", photo, "--model", tmp_path, "--out", tmp_path / "o")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_eval_dense_json_first(run, tmp_path, capsys):
    out = tmp_path / "e.json"
    code, text, err = cli(capsys, "eval-dense", "--model", run, "--data", trained_root(), "--out", out,
                          "--thresholds", "5", "--quiet")
    assert code == 0, err
    rep = json.loads(out.read_text())
    assert "mean IoU" in text and "hed_fuse" in text
    assert rep["split"] == "test" and rep["images"] == 4
