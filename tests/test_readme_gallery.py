"""The README's gallery snippet runs as written, with a toy model and toy photos in place of
dlib-resnet-v1 and the photo names (docs that cannot rot)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.toy_faces import make_toy_folder, make_toy_model

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_gallery_snippet_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    code = next(b for b in blocks if "Gallery.create" in b)
    faces = make_toy_folder(tmp_path / "faces", counts={"alice": 3, "bob": 2})
    for name, src in {"alice-1.jpg": "alice/00.png", "alice-2.jpg": "alice/01.png",
                      "bob-1.jpg": "bob/00.png", "who.jpg": "alice/02.png"}.items():
        shutil.copy(faces / src, tmp_path / name)  # the toy PNG bytes under the README's names
    model = make_toy_model(tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace('"dlib-resnet-v1"', repr(str(model))), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[[Match(identity='alice'")
    assert out[1].split()[0] in ("alice", "unknown")
    assert (tmp_path / "people.gallery").is_dir()
