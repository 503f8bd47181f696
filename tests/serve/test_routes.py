"""The routes against plain references: verify and embed equal the embedder's own answers on
the same pixels, identify equals the gallery's search, enrol/remove change exactly what they
say, limits and sniffing, EXIF orientation, the writer wait (503 + Retry-After), batching,
metrics, OpenAPI, the cluster job."""

from __future__ import annotations

import io
import sqlite3
import threading

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from facemetric.data.image_io import read_image
from facemetric.distances import pair_scores
from facemetric.errors import FacemetricError
from facemetric.gallery import Gallery
from facemetric.serve import ServeConfig, create_app
from facemetric.serve.pool import InferencePool
from facemetric.serve.uploads import sniff
from tests.hostile.corpus import _bomb_bytes
from tests.serve.serve_helpers import PEOPLE, auth, files, make_keys


@pytest.fixture(scope="module")
def service(tmp_path_factory, toy_embedder, photos):
    root = tmp_path_factory.mktemp("routes-service")
    cfg = ServeConfig(model="toy", gallery_dir=root / "galleries", max_photos=6, max_request_bytes=200_000,
                      max_pixels=1_000_000, write_wait_s=0.3)
    keys = make_keys(cfg.keys_path)
    with TestClient(create_app(cfg, toy_embedder)) as client:
        assert client.post("/v1/galleries", json={"name": "g1"}, headers=auth(keys.admin)).status_code == 201
        for name in PEOPLE[:3]:
            r = client.post(f"/v1/galleries/g1/identities/{name}", files=files("photos", photos[name][:2]),
                            headers=auth(keys.write))
            assert r.status_code == 201, r.text
        yield client, keys, cfg


def _pixels(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))


def test_verify_is_the_embedders_distance(service, toy_embedder, photos):
    client, keys, _ = service
    a, b = photos["anna"][0], photos["bert"][0]
    r = client.post("/v1/verify", files=files("photo_a", [a]) + files("photo_b", [b]), headers=auth(keys.read))
    assert r.status_code == 200, r.text
    got = r.json()
    e = toy_embedder.embed([_pixels(a), _pixels(b)])
    want = float(pair_scores(e[:1], e[1:], "squared_l2")[0])
    assert got["distance"] == pytest.approx(want, abs=1e-5)
    assert got["threshold"] == 0.5 and got["same"] == (want < 0.5)
    r = client.post("/v1/verify", files=files("photo_a", [a]) + files("photo_b", [b]), data={"threshold": "0.0001"},
                    headers=auth(keys.read))
    assert r.json()["same"] is False


def test_embed_is_the_one_embedding_path(service, toy_embedder, photos):
    client, keys, _ = service
    blobs = [photos["carl"][0], photos["dora"][1]]
    r = client.post("/v1/embed", files=files("photos", blobs), headers=auth(keys.read))
    assert r.status_code == 200
    got = np.array([x["embedding"] for x in r.json()["embeddings"]], dtype=np.float32)
    want = toy_embedder.embed([_pixels(b) for b in blobs])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_identify_equals_the_gallery_search(service, toy_embedder, photos):
    client, keys, cfg = service
    probes = [photos["anna"][3], photos["dora"][0]]
    r = client.post("/v1/galleries/g1/identify", files=files("photos", probes), data={"k": "3", "thumbnails": "true"},
                    headers=auth(keys.read))
    assert r.status_code == 200, r.text
    body = r.json()
    with Gallery.open(cfg.gallery_dir / "g1") as g:
        e = toy_embedder.embed([_pixels(b) for b in probes])
        hits = g.search(e, 3, card=toy_embedder.card)
        t, source = g.choose_threshold(card=toy_embedder.card)
    assert body["threshold"] == pytest.approx(t) and body["threshold_source"] == source
    for res, row in zip(body["results"], hits, strict=True):
        assert [m["identity"] for m in res["matches"]] == [m.identity for m in row]
        assert [m["score"] for m in res["matches"]] == pytest.approx([m.score for m in row], abs=1e-5)
        assert res["known"] == (row[0].score >= t)
        assert res["identity"] == (row[0].identity if res["known"] else "unknown")
        assert all(m["thumbnail"].startswith("data:image/jpeg;base64,") for m in res["matches"])
    assert body["results"][0]["candidate"] == "anna"  # a third photo of anna is nearest anna
    # an explicit threshold above every score: unknown, with the candidate still named
    r = client.post("/v1/galleries/g1/identify", files=files("photos", probes[:1]), data={"threshold": "1"},
                    headers=auth(keys.read))
    res = r.json()["results"][0]
    assert res["identity"] == "unknown" and res["known"] is False and res["candidate"] == "anna"


def test_enrol_duplicates_and_removal(service, photos):
    client, keys, _ = service
    stats = lambda: client.get("/v1/galleries/g1", headers=auth(keys.read)).json()  # noqa: E731
    before = stats()
    r = client.post("/v1/galleries/g1/identities/emil", files=files("photos", photos["dora"][:2]), headers=auth(keys.write))
    assert r.status_code == 201 and len(r.json()["image_ids"]) == 2
    again = client.post("/v1/galleries/g1/identities/emil", files=files("photos", photos["dora"][:2]), headers=auth(keys.write))
    assert again.json()["image_ids"] == [] and again.json()["duplicates"] == 2
    assert stats()["images"] == before["images"] + 2 and stats()["identities"] == before["identities"] + 1
    ids = r.json()["image_ids"]
    assert client.delete(f"/v1/galleries/g1/images/{ids[0]}", headers=auth(keys.write)).json()["removed_images"] == 1
    assert client.delete(f"/v1/galleries/g1/images/{ids[0]}", headers=auth(keys.write)).status_code == 404
    assert client.delete("/v1/galleries/g1/identities/emil", headers=auth(keys.write)).json()["removed_images"] == 1
    assert client.delete("/v1/galleries/g1/identities/emil", headers=auth(keys.write)).status_code == 404
    assert stats()["images"] == before["images"] and stats()["identities"] == before["identities"]
    for bad in ("unknown", "%20"):
        r = client.post(f"/v1/galleries/g1/identities/{bad}", files=files("photos", photos["dora"][:1]),
                        headers=auth(keys.write))
        assert r.status_code == 422 and r.json()["field"] == "identity"
    assert client.get("/v1/galleries/nope", headers=auth(keys.read)).status_code == 404
    assert client.get("/v1/galleries/.hidden", headers=auth(keys.read)).status_code == 422
    assert client.post("/v1/galleries", json={"name": "g1"}, headers=auth(keys.admin)).status_code == 409


def test_sniffing_limits_and_all_or_nothing(service, photos):
    client, keys, _ = service
    good = photos["dora"][2]
    url = "/v1/galleries/g1/identities/fred"
    n0 = client.get("/v1/galleries/g1", headers=auth(keys.read)).json()["images"]

    def post(parts, **kw):
        return client.post(url, files=parts, headers=auth(keys.write), **kw)

    # a PNG named .jpg and sent as text/plain is a photo (sniffed); text named .jpg is not
    assert sniff(good) == "png"
    r = post([("photos", ("x.jpg", b"hello, I am not a photo", "image/jpeg")), ("photos", ("ok.png", good, "image/png"))])
    assert r.status_code == 415 and r.json()["field"] == "photos[0]" and "not an image" in r.json()["error"]
    # a decompression bomb: 9 MP (above this service's 1 MP) in ~40 kB, refused on its header
    bomb = _bomb_bytes(3000, 3000)
    assert len(bomb) < 50_000
    r = post([("photos", ("ok.png", good, "image/png")), ("photos", ("bomb.png", bomb, "image/png"))])
    assert r.status_code == 413 and r.json()["field"] == "photos[1]" and "too large" in r.json()["error"]
    r = post([("photos", ("tiny.png", photos["dora"][0][:60], "image/png"))])  # truncated
    assert r.status_code == 422 and r.json()["field"] == "photos[0]"
    r = post(files("photos", [good] * 7))
    assert r.status_code == 413 and "above the limit of 6" in r.json()["error"]
    r = post([("photos", ("big.bin", b"\x89PNG\r\n\x1a\n" + b"\0" * 250_000, "image/png"))])
    assert r.status_code == 413 and r.json()["field"] == "body"
    assert post([]).status_code == 422
    # nothing of the refused requests was written; then the good photo alone goes in
    assert client.get("/v1/galleries/g1", headers=auth(keys.read)).json()["images"] == n0
    r = client.post(url, files=[("photos", ("really-a-png.jpg", good, "text/plain"))], headers=auth(keys.write))
    assert r.status_code == 201
    client.delete("/v1/galleries/g1/identities/fred", headers=auth(keys.write))


def test_exif_orientation_is_applied(service, toy_embedder):
    client, keys, _ = service
    rng = np.random.default_rng(5)
    low = Image.fromarray(rng.uniform(0, 255, (6, 4)).astype(np.uint8), "L").resize((40, 60), Image.BICUBIC)
    upright = low.convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera stores; EXIF 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=98, exif=exif)
    ref = io.BytesIO()
    upright.save(ref, "JPEG", quality=98)
    r = client.post("/v1/embed", files=files("photos", [buf.getvalue(), ref.getvalue()]), headers=auth(keys.read))
    e = np.array([x["embedding"] for x in r.json()["embeddings"]])
    d_upright = float(((e[0] - e[1]) ** 2).sum())
    ignored = toy_embedder.embed(np.asarray(stored))[0]  # the stored pixels, orientation ignored
    d_ignored = float(((ignored - e[1]) ** 2).sum())
    assert d_upright < 2e-2 < d_ignored


def test_writer_wait_is_a_503_with_retry_after(service, photos):
    client, keys, cfg = service
    other = sqlite3.connect(cfg.gallery_dir / "g1" / "gallery.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the gallery's writer lock
    try:
        r = client.post("/v1/galleries/g1/identities/gina", files=files("photos", photos["dora"][3:4]),
                        headers=auth(keys.write))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert r.status_code == 503 and r.json()["field"] == "gallery"
    assert int(r.headers["Retry-After"]) >= 1
    assert "gallery 'g1' is busy" in r.json()["error"]
    names = [x["name"] for x in client.get("/v1/galleries/g1/identities", headers=auth(keys.read)).json()["identities"]]
    assert "gina" not in names
    assert "facemetric_gallery_busy_total 1.0" in client.get("/metrics").text


def test_pool_coalesces_concurrent_requests(toy_embedder):
    seen: list[int] = []
    pool = InferencePool(toy_embedder, workers=1, max_batch=16, batch_wait_ms=200,
                         on_batch=lambda rows, s: seen.append(rows))
    x = torch.rand(8, 1, 24, 24)
    want = toy_embedder.embed_tensor(x).numpy()
    out: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, pool.embed(x[2 * i:2 * i + 2], 30)))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.close()
    assert sum(seen) == 8 and len(seen) < 4  # fewer forward passes than requests
    for i in range(4):
        np.testing.assert_allclose(out[i], want[2 * i:2 * i + 2], atol=1e-5)


def test_cluster_job_health_metrics_openapi(service, photos):
    client, keys, _ = service
    blobs = photos["anna"][:3] + photos["bert"][:3]
    r = client.post("/v1/cluster", files=files("photos", blobs), data={"threshold": "0.999"}, headers=auth(keys.read))
    assert r.status_code == 202
    job_id = r.json()["id"]
    for _ in range(200):
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(keys.read)).json()
        if job["status"] in ("done", "failed"):
            break
        threading.Event().wait(0.05)
    assert job["status"] == "done", job
    labels = [p["cluster"] for p in job["result"]["photos"]]
    assert len(labels) == 6 and job["result"]["clusters"] == len(set(labels))
    assert client.get(f"/v1/jobs/{job_id}", headers=auth(keys.write)).status_code == 404  # not that key's job
    assert client.get("/health").json()["status"] == "ok"
    text = client.get("/metrics").text
    assert 'facemetric_requests_total{method="POST",route="/v1/cluster",status="202"} 1.0' in text
    assert "facemetric_inference_batch_rows_count" in text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/verify", "/v1/embed", "/v1/galleries/{gallery}/identify", "/v1/cluster"} <= set(paths)
    assert client.get("/").headers["content-type"].startswith("text/html")


def test_reference_loader_agrees(photos):
    """The reference pixels of the tests are the loader's pixels (PNG, lossless)."""
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".png") as fh:
        fh.write(photos["anna"][0])
        fh.flush()
        np.testing.assert_array_equal(read_image(fh.name), _pixels(photos["anna"][0]))


def test_calibrate_stores_the_threshold(service, photos):
    client, keys, _ = service
    probes = [photos["anna"][3], photos["dora"][0], photos["bert"][3], photos["dora"][1]]
    labels = ["anna", "dora", "bert", "dora"]
    r = client.post("/v1/galleries/g1/calibrate", files=files("photos", probes), data={"labels": labels, "far": "0.5"},
                    headers=auth(keys.write))
    assert r.status_code == 403  # admin only
    r = client.post("/v1/galleries/g1/calibrate", files=files("photos", probes), data={"labels": labels, "far": "0.5"},
                    headers=auth(keys.admin))
    assert r.status_code == 200, r.text
    cal = r.json()
    stats = client.get("/v1/galleries/g1", headers=auth(keys.read)).json()
    assert stats["calibration"]["threshold"] == pytest.approx(cal["threshold"])
    assert stats["threshold"] == pytest.approx(cal["threshold"]) and stats["threshold_source"] != "model card"
    r = client.post("/v1/galleries/g1/identify", files=files("photos", probes[:1]), headers=auth(keys.read))
    assert r.json()["threshold"] == pytest.approx(cal["threshold"])


def test_empty_gallery_and_another_models_gallery(service, photos, tmp_path):
    client, keys, cfg = service
    assert client.post("/v1/galleries", json={"name": "empty"}, headers=auth(keys.admin)).status_code == 201
    r = client.post("/v1/galleries/empty/identify", files=files("photos", photos["anna"][:1]), headers=auth(keys.read))
    assert r.status_code == 200
    res = r.json()["results"][0]
    assert res["identity"] == "unknown" and res["candidate"] is None and res["matches"] == []
    other = dict(client.app.state.service.card, name="another-model", embedding_dim=4)
    Gallery.create(cfg.gallery_dir / "foreign", other).close()
    r = client.get("/v1/galleries/foreign", headers=auth(keys.read))
    assert r.status_code == 409 and "was built with model" in r.json()["error"]


def test_config_from_environment():
    env = {"FACEMETRIC_PORT": "9001", "FACEMETRIC_ALLOW_ANONYMOUS": "yes", "FACEMETRIC_WRITE_WAIT_S": "0.5",
           "FACEMETRIC_TORCH_THREADS": "1", "FACEMETRIC_GALLERY_DIR": "/srv/g"}
    cfg = ServeConfig.from_env(env, port=9002)
    assert cfg.port == 9002 and cfg.allow_anonymous is True and cfg.write_wait_s == 0.5 and cfg.torch_threads == 1
    assert str(cfg.keys_path) == "/srv/g/keys.json"
    with pytest.raises(ValueError, match="FACEMETRIC_PORT: cannot parse 'eighty'"):
        ServeConfig.from_env({"FACEMETRIC_PORT": "eighty"})
    with pytest.raises(ValueError, match="anonymous_role"):
        ServeConfig(anonymous_role="root")


class _NoFaceInSecond:
    """The toy embedder behind an alignment step that finds no face in dark photos."""

    def __init__(self, inner):
        self._inner = inner
        self.aligner = object()

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def preprocess(self, images):
        if float(np.mean(images[0])) < 60:
            raise FacemetricError("no face found in image 0")
        return self._inner.preprocess(images)


def test_a_photo_without_a_face_refuses_the_enrolment(tmp_path, toy_embedder, photos):
    cfg = ServeConfig(model="toy", gallery_dir=tmp_path / "galleries")
    keys = make_keys(cfg.keys_path)
    dark = io.BytesIO()
    Image.fromarray((np.arange(48 * 48).reshape(48, 48) % 40).astype(np.uint8)).save(dark, "PNG")
    with TestClient(create_app(cfg, _NoFaceInSecond(toy_embedder))) as client:
        assert client.post("/v1/galleries", json={"name": "g"}, headers=auth(keys.admin)).status_code == 201
        r = client.post("/v1/galleries/g/identities/anna", files=files("photos", [photos["anna"][0], dark.getvalue()]),
                        headers=auth(keys.write))
        assert r.status_code == 422 and r.json()["field"] == "photos[1]"
        assert r.json()["error"] == "photos[1] (1-p.png): no face found in the photo"
        assert client.get("/v1/galleries/g", headers=auth(keys.read)).json()["images"] == 0
