"""IdentityFolder and LFW people files: layout, filters, errors, corrupt images."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from facemetric.data.folder import IdentityFolder, read_people_file, read_people_sets
from facemetric.data.image_io import read_image
from facemetric.data.transforms import Preprocessing, decode_and_resize
from facemetric.errors import DataError


def make_folder(root, counts, size=(12, 10)):
    """``root/<name>/<name>_000k.png`` with ``counts[name]`` random images each."""
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(1, n + 1):
            arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"{name}_{k:04d}.png")
    return root


# ----------------------------------------------------------------------------- real data
def test_orl(shared_data):
    root = shared_data / "att-faces"
    assert (root / "README").is_file()  # a file beside the identity folders: ignored
    f = IdentityFolder(root)
    assert f.num_classes == 40 and len(f.samples) == 400
    assert f.classes == sorted(f"s{i}" for i in range(1, 41))
    assert np.bincount(f.labels.numpy()).tolist() == [10] * 40
    s = f.summary()
    assert (s["identities"], s["images"], s["skipped"]) == (40, 400, 0)
    assert (s["min_per_identity"], s["median_per_identity"], s["max_per_identity"]) == (10, 10.0, 10)
    path, label = f.samples[0]
    assert path.parent.name == "s1" and label == 0 and path == f.paths[0]


def test_lfw_filters(shared_data):
    root = shared_data / "lfw-deepfunneled"
    dev_test = IdentityFolder(root, identities=root / "peopleDevTest.txt")
    assert dev_test.num_classes == 1711  # published View 1 test people
    assert len(dev_test) == 3708
    assert IdentityFolder(root, min_images=20).num_classes == 62  # sklearn's min_faces=20
    f70 = IdentityFolder(root, min_images=70)
    assert (f70.num_classes, len(f70)) == (7, 1288)
    picked = IdentityFolder(root, identities=["Zico", "AJ_Cook"], min_images=1)
    assert picked.classes == ["AJ_Cook", "Zico"]


def test_lfw_people_files(shared_data):
    root = shared_data / "lfw-deepfunneled"
    assert len(read_people_file(root / "peopleDevTrain.txt")) == 4038
    assert len(read_people_file(root / "peopleDevTest.txt")) == 1711
    sets = read_people_sets(root / "people.txt")
    assert [len(s) for s in sets] == [601, 555, 552, 560, 567, 527, 597, 601, 580, 609]
    names = read_people_file(root / "people.txt")
    assert len(names) == len(set(names)) == 5749


# ------------------------------------------------------------------------- synthetic
def test_layout_sorting_and_ignored_files(tmp_path):
    root = make_folder(tmp_path / "data", {"bob": 3, "alice": 2, "carol": 1})
    (root / "pairs.txt").write_text("ignored")
    (root / "bob" / "notes.txt").write_text("ignored")
    (root / "bob" / ".bob_0009.png").write_bytes(b"hidden")
    (root / ".cache").mkdir()
    shutil.copy(root / "alice" / "alice_0001.png", root / "alice" / "alice_0003.PNG")
    f = IdentityFolder(root)
    assert f.classes == ["alice", "bob", "carol"]
    assert [p.name for p in f.paths] == [
        "alice_0001.png", "alice_0002.png", "alice_0003.PNG",
        "bob_0001.png", "bob_0002.png", "bob_0003.png", "carol_0001.png",
    ]
    assert f.labels.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert IdentityFolder(root, extensions=(".png",)).summary()["images"] == 7
    f2 = IdentityFolder(root, min_images=3)
    assert f2.classes == ["alice", "bob"] and f2.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert f2.summary()["identities_dropped"] == 1


def test_identity_list_and_people_file(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 2, "b": 2, "c": 2})
    assert IdentityFolder(root, identities=["c", "a"]).classes == ["a", "c"]
    people = tmp_path / "people.txt"
    people.write_text("2\nb\t2\nc\t2\n")
    assert IdentityFolder(root, identities=people).classes == ["b", "c"]
    view2 = tmp_path / "people2.txt"
    view2.write_text("2\n1\na\t2\n2\nb\t2\nc\t2\n")
    assert read_people_sets(view2) == [["a"], ["b", "c"]]
    with pytest.raises(DataError, match=r"2 identities of the identity list have no folder here \(first: 'x'\)"):
        IdentityFolder(root, identities=["a", "x", "y"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty people file"),
        ("two\na\t1\n", r"people.txt:1: expected a count"),
        ("2\na\t1\nb\n", r"people.txt:3: expected 'name count', got 'b'"),
        ("3\na\t1\nb\t1\n", "ended early"),
        ("1\na\t1\nb\t1\n", r"people.txt:3: unexpected extra line"),
    ],
)
def test_people_file_errors(tmp_path, text, message):
    p = tmp_path / "people.txt"
    p.write_text(text)
    with pytest.raises(DataError, match=message):
        read_people_sets(p)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        IdentityFolder(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="got a file"):
        IdentityFolder(tmp_path / "file.txt")
    with pytest.raises(DataError, match="no identity sub-folders"):
        IdentityFolder(tmp_path)
    make_folder(tmp_path / "data", {"a": 1, "b": 2})
    with pytest.raises(DataError, match="no identity has at least 5 images"):
        IdentityFolder(tmp_path / "data", min_images=5)
    with pytest.raises(DataError, match="min_images"):
        IdentityFolder(tmp_path / "data", min_images=0)


def test_corrupt_image(shared_data, tmp_path):
    root = tmp_path / "orl"
    for s in ("s1", "s2"):
        shutil.copytree(shared_data / "att-faces" / s, root / s)
    bad = root / "s2" / "3.pgm"
    bad.write_bytes(b"\x00garbage" * 50)

    f = IdentityFolder(root)  # not checked: listed, fails when read, naming the file
    assert len(f) == 20 and bad in f.paths
    with pytest.raises(DataError, match=rf"^{bad}: cannot read image \("):
        read_image(bad)
    with pytest.raises(DataError, match=rf"^{bad}: cannot read image \("):
        decode_and_resize(bad, Preprocessing(input_size=(56, 46), color="L"))

    g = IdentityFolder(root, skip_corrupt=True)
    assert len(g) == 19 and bad not in g.paths
    assert g.summary()["skipped"] == 1 and g.skipped_paths == [bad]
    assert g.summary()["images"] == 19


# ---------------------------------------------------------------------- hostile folders
def test_hostile_entries_are_counted_skips(tmp_path):
    """Symlink loops, broken links, names that are not UTF-8, a folder named x.jpg, a second
    name of one identity: each skipped with a reason, none a traceback or a silent duplicate."""
    root = make_folder(tmp_path / "data", {"alice": 2, "bob": 2})
    (root / "loop").symlink_to(root / "loop")  # an identity that is a symlink loop
    (root / "gone").symlink_to(tmp_path / "nowhere")  # a dangling identity link
    (root / "bobby").symlink_to(root / "bob")  # bob again under another name
    bad_identity = os.fsencode(root) + b"/Jos\xe9"  # Latin-1 folder name: not valid UTF-8
    os.mkdir(bad_identity)
    shutil.copy(root / "bob" / "bob_0001.png", os.fsencode(root / "bob") + b"/x\xff.png")
    shutil.copy(root / "alice" / "alice_0001.png", bad_identity + b"/a.png")
    (root / "alice" / "cycle.png").symlink_to(root / "alice" / "cycle.png")
    (root / "alice" / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (root / "alice" / "album.jpg").mkdir()  # a directory named like a photo
    (root / "alice" / "up").symlink_to("..")  # a cycle for any recursive walk
    (root / "bob" / "old").mkdir()  # photos in a sub-folder are not read: said, not silent
    shutil.copy(root / "bob" / "bob_0001.png", root / "bob" / "old" / "bob_0009.png")

    f = IdentityFolder(root)
    assert f.classes == ["alice", "bob"] and len(f) == 4
    report = f.skip_report()
    assert report == {
        f"{root}/Jos\\xe9": "identity folder name is not valid UTF-8",
        f"{root}/bobby": "same folder as identity 'bob'",
        f"{root}/gone": f"broken symlink (-> {tmp_path / 'nowhere'})",
        f"{root}/loop": "symlink loop",
        f"{root}/alice/album.jpg": "is a directory",
        f"{root}/alice/cycle.png": "symlink loop",
        f"{root}/alice/dangling.jpg": f"broken symlink (-> {tmp_path / 'gone.jpg'})",
        f"{root}/bob/x\\xff.png": "name is not valid UTF-8",
        f"{root}/alice/up": "symlink loop (a link to a folder above)",
        f"{root}/bob/old": f"sub-folder not searched (photos are read directly in {root / 'bob'})",
    }
    json.dumps(report, ensure_ascii=False).encode("utf-8")  # printable and storable
    s = f.summary()
    assert s["skipped"] == 10 and s["skipped_by_kind"] == {
        "directory": 1, "broken-link": 2, "link-loop": 3, "bad-name": 2, "duplicate": 1, "sub-folder": 1,
    }
    with pytest.raises(DataError, match=r"'loop': symlink loop\)$"):
        IdentityFolder(root, identities=["alice", "loop"])


def test_root_problems_are_one_line(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(DataError, match=r"loop: dataset folder: symlink loop$"):
        IdentityFolder(tmp_path / "loop")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x").mkdir()
    (tmp_path / "empty" / "x" / "dir.jpg").mkdir()
    with pytest.raises(DataError, match=r"no identity has at least 1 images .*1 entries skipped, "
                                        r"first: .*dir\.jpg: is a directory\)$"):
        IdentityFolder(tmp_path / "empty")


def test_gif_and_tiff_photos_are_listed(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 1})
    img = Image.open(root / "a" / "a_0001.png")
    img.save(root / "a" / "a_0002.gif")
    img.save(root / "a" / "a_0003.tif")
    assert [p.name for p in IdentityFolder(root).paths] == ["a_0001.png", "a_0002.gif", "a_0003.tif"]
