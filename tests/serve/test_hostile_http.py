"""Hostile input over HTTP: the photo cases of the hostile corpus (tests/hostile/corpus.py) sent
as uploads, plus malformed requests. Every refusal is a 4xx JSON error naming the field --
never a 500, never a partial write; every valid odd encoding embeds like its reference."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from fastapi.testclient import TestClient

from facemetric.serve import ServeConfig, create_app
from tests.hostile.corpus import (
    PHOTO_CASES,
    Base,
    _save,
    jpeg_bytes,
    person_photo,
    ref_grey,
    unavailable,
)
from tests.hostile.test_hostile_inputs import TOLERANCE
from tests.serve.serve_helpers import auth, files, make_keys


@pytest.fixture(scope="module")
def service(tmp_path_factory, toy_embedder):
    root = tmp_path_factory.mktemp("hostile-service")
    cfg = ServeConfig(model="toy", gallery_dir=root / "galleries", max_request_bytes=4 * 1024 * 1024)
    keys = make_keys(cfg.keys_path)
    base = Base(root)
    g = np.stack([ref_grey()] * 3, -1)
    base.ref_png = _save(g, root / "ref" / "ref.png")
    base.ref_jpg = root / "ref" / "ref.jpg"
    base.ref_jpg.write_bytes(jpeg_bytes(g))
    base.other = _save(np.stack([person_photo("zed", 0)] * 3, -1), root / "ref" / "other.png")
    with TestClient(create_app(cfg, toy_embedder), raise_server_exceptions=False) as client:
        assert client.post("/v1/galleries", json={"name": "g"}, headers=auth(keys.admin)).status_code == 201
        yield client, keys, base, root


def _multipart(photos: list[tuple[bytes, bytes]]) -> tuple[bytes, str]:
    """A multipart body of ``photos`` fields with the file names as raw bytes (a name that is
    not UTF-8 goes on the wire as it is, which an HTTP client library would refuse to send)."""
    boundary = b"facemetric-test-boundary"
    out = b""
    for name, data in photos:
        out += (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"photos\"; filename=\"" + name
                + b"\"\r\nContent-Type: image/jpeg\r\n\r\n" + data + b"\r\n")
    return out + b"--" + boundary + b"--\r\n", f"multipart/form-data; boundary={boundary.decode()}"


def _embed(client, keys, blob: bytes) -> np.ndarray:
    r = client.post("/v1/embed", files=files("photos", [blob]), headers=auth(keys.read))
    assert r.status_code == 200, r.text
    return np.array(r.json()["embeddings"][0]["embedding"])


def _images(client, keys) -> int:
    return client.get("/v1/galleries/g", headers=auth(keys.read)).json()["images"]


def _is_error(r, status: int | None = None) -> dict:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    if status is not None:
        assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "field", "status"} and body["status"] == r.status_code
    assert body["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body


def test_photo_corpus_over_http(service):
    client, keys, base, root = service
    good = base.other.read_bytes()
    sent = {"refuse": 0, "accept": 0, "either": 0}
    not_files = []
    for i, case in enumerate(c for c in PHOTO_CASES if c.kind == "photo"):
        if unavailable(case):
            continue
        dest = root / "cases" / f"{i:02d}"
        dest.mkdir(parents=True)
        path = case.build(dest, base)
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):  # links, folders, FIFOs: no bytes to upload
            not_files.append(case.name)
            continue
        blob = path.read_bytes()
        sent[case.expect] += 1
        n0 = _images(client, keys)
        # the hostile photo second: a refusal must not leave the good first photo enrolled
        body, ctype = _multipart([(b"good.png", good), (os.fsencode(os.path.basename(path)), blob)])
        r = client.post(f"/v1/galleries/g/identities/case-{i}", content=body,
                        headers={**auth(keys.write), "Content-Type": ctype})
        assert r.status_code < 500, (case.name, r.status_code, r.text)
        if r.status_code >= 400:
            body = _is_error(r)
            assert case.expect in ("refuse", "either"), (case.name, body)
            assert body["field"] == "photos[1]", (case.name, body)
            assert _images(client, keys) == n0, case.name  # never a partial write
        else:
            assert case.expect in ("accept", "either"), (case.name, r.json())
            assert len(r.json()["image_ids"]) == 2 and _images(client, keys) == n0 + 2
        if case.expect == "accept":
            ref = base.ref_jpg if case.reference == "jpg" else base.ref_png
            d = float(((_embed(client, keys, blob) - _embed(client, keys, ref.read_bytes())) ** 2).sum())
            assert d <= TOLERANCE[case.reference], (case.name, d)
    assert sent["refuse"] >= 8 and sent["accept"] >= 10, sent
    assert set(not_files) <= {"directory-named-jpg", "symlink-self-loop", "symlink-two-loop", "dangling-symlink",
                              "missing-file", "fifo-named-jpg"}


def test_malformed_requests(service):
    client, keys, base, _ = service
    good = base.other.read_bytes()
    w = auth(keys.write)
    n0 = _images(client, keys)
    url = "/v1/galleries/g/identities/mallory"
    bad = [
        # not multipart at all
        client.post(url, content=b'{"photos": 1}', headers={**w, "Content-Type": "application/json"}),
        # multipart without a boundary / with a broken body
        client.post(url, content=b"--x\r\ngarbage", headers={**w, "Content-Type": "multipart/form-data"}),
        client.post(url, content=b"--zz\r\nContent-Disposition: form-data; name=\"photos\"; filename=\"a.png\"\r\n\r\n"
                    + good[:50], headers={**w, "Content-Type": "multipart/form-data; boundary=zz"}),
        # the photo field as plain text, or under another name
        client.post(url, data={"photos": "not a file"}, headers=w),
        client.post(url, files=[("photo", ("a.png", good, "image/png"))], headers=w),
        # an empty part
        client.post(url, files=[("photos", ("a.png", b"", "image/png"))], headers=w),
    ]
    for r in bad:
        _is_error(r)
    ident = "/v1/galleries/g/identify"
    for data in ({"k": "0"}, {"k": "many"}, {"k": "1000"}, {"threshold": "nan"}, {"threshold": "2"}, {"by": "median"},
                 {"thumbnails": "perhaps"}):
        body = _is_error(client.post(ident, files=files("photos", [good]), data=data, headers=auth(keys.read)), 422)
        assert body["field"] == next(iter(data)), body
    for gallery in ("..", "%2e%2e", "a" * 65, "x%00y", "-"):
        r = client.get(f"/v1/galleries/{gallery}", headers=auth(keys.read))
        assert r.status_code in (404, 422), (gallery, r.status_code)
        if r.status_code == 422:
            _is_error(r)
    _is_error(client.post("/v1/galleries", json={"name": "../escape"}, headers=auth(keys.admin)), 422)
    _is_error(client.post("/v1/galleries", content=b"{not json", headers={**auth(keys.admin), "Content-Type": "application/json"}))
    _is_error(client.delete("/v1/galleries/g/images/not-a-number", headers=w), 422)
    _is_error(client.post("/v1/galleries/g/identities/" + "x" * 300, files=files("photos", [good]), headers=w), 422)
    _is_error(client.post("/v1/galleries/g/calibrate", files=files("photos", [good]), data={"labels": ["a", "b"]},
                          headers=auth(keys.admin)), 422)
    _is_error(client.post("/v1/cluster", files=files("photos", [good]), data={"method": "k-means"}, headers=auth(keys.read)), 422)
    _is_error(client.get("/v1/jobs/nope", headers=auth(keys.read)), 404)
    _is_error(client.post("/v1/verify", files=files("photo_a", [good]), headers=auth(keys.read)), 422)
    _is_error(client.get("/v1/nothing-here", headers=auth(keys.read)), 404)
    _is_error(client.put("/v1/verify", headers=auth(keys.read)), 405)
    assert _images(client, keys) == n0
