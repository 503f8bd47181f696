"""API keys: hashed storage, constant-time checks, roles, gallery scopes, 401 vs 403, revocation
seen by a running service, anonymous access only by the operator's flag, keys never logged."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
from fastapi.testclient import TestClient

from facemetric.serve import KeyStore, ServeConfig, create_app
from facemetric.serve.keys import role_allows
from facemetric.serve.observability import ACCESS_LOGGER
from tests.cli.cli_helpers import cli
from tests.serve.serve_helpers import auth, files, make_keys


@pytest.fixture(scope="module")
def service(tmp_path_factory, toy_embedder, photos):
    root = tmp_path_factory.mktemp("keys-service")
    cfg = ServeConfig(model="toy", gallery_dir=root / "galleries")
    keys = make_keys(cfg.keys_path)
    with TestClient(create_app(cfg, toy_embedder)) as client:
        assert client.post("/v1/galleries", json={"name": "g1"}, headers=auth(keys.admin)).status_code == 201
        assert client.post("/v1/galleries", json={"name": "g2"}, headers=auth(keys.admin)).status_code == 201
        yield client, keys, cfg


def test_store_holds_only_hashes(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    rec, key = store.create("write", ["g1"], name="alice")
    text = (tmp_path / "keys.json").read_text()
    assert key not in text and key.split("_")[-1] not in text
    assert rec.hash == hashlib.sha256(key.encode()).hexdigest() and rec.hash in text
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    assert store.authenticate(key) == rec
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # one character off
    assert store.authenticate(f"fmk_{'0' * 12}_{key.split('_')[-1]}") is None  # unknown id
    assert store.authenticate("") is None and store.authenticate("Bearer x") is None
    # a second store (another process) revokes; the first sees it at its next check
    KeyStore(tmp_path / "keys.json").revoke(rec.id)
    assert store.authenticate(key) is None
    assert [r.revoked is not None for r in store.list()] == [True]
    with pytest.raises(ValueError, match="no such key"):
        store.revoke("ffffffffffff")


def test_roles_are_ordered():
    assert role_allows("admin", "write") and role_allows("write", "read") and role_allows("read", "read")
    assert not role_allows("read", "write") and not role_allows("write", "admin")


def test_no_key_wrong_key_revoked_key_are_401(service, photos):
    client, keys, _ = service
    url = "/v1/galleries/g1/identify"
    body = files("photos", photos["anna"][:1])
    cases = {
        "no key": {},
        "wrong key": auth(keys.read[:-2] + "xx"),
        "garbage": auth("not-a-key"),
        "revoked": auth(keys.revoked),
        "bad scheme": {"Authorization": f"Basic {keys.read}"},
    }
    for what, headers in cases.items():
        r = client.post(url, files=body, headers=headers)
        assert r.status_code == 401, what
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), what
        assert r.json()["field"] == "Authorization" and r.json()["status"] == 401, what
    assert client.get("/v1/galleries", headers={"X-API-Key": keys.read}).status_code == 200


def test_role_and_scope_are_403(service, photos):
    client, keys, _ = service
    enrol = "/v1/galleries/g1/identities/anna"
    r = client.post(enrol, files=files("photos", photos["anna"][:1]), headers=auth(keys.read))
    assert r.status_code == 403 and "needs 'write'" in r.json()["error"]
    assert client.post("/v1/galleries", json={"name": "g3"}, headers=auth(keys.write)).status_code == 403
    assert client.get("/v1/keys", headers=auth(keys.write)).status_code == 403
    # scoped read key: g1 yes, g2 no, and the listing shows only g1
    assert client.get("/v1/galleries/g1", headers=auth(keys.read_g1)).status_code == 200
    r = client.get("/v1/galleries/g2", headers=auth(keys.read_g1))
    assert r.status_code == 403 and r.json()["field"] == "gallery"
    assert client.get("/v1/galleries", headers=auth(keys.read_g1)).json()["galleries"] == ["g1"]
    assert client.get("/v1/galleries", headers=auth(keys.read)).json()["galleries"] == ["g1", "g2"]
    # nothing was written by the refused enrolment
    assert client.get("/v1/galleries/g1", headers=auth(keys.read)).json()["images"] == 0


def test_keys_over_http_and_revocation_takes_effect(service):
    client, keys, _ = service
    r = client.post("/v1/keys", json={"role": "read", "galleries": ["g2"], "name": "bob"}, headers=auth(keys.admin))
    assert r.status_code == 201
    new = r.json()
    assert new["galleries"] == ["g2"] and new["key"].startswith("fmk_")
    listed = client.get("/v1/keys", headers=auth(keys.admin)).json()["keys"]
    assert new["id"] in [k["id"] for k in listed] and all("hash" not in k and "key" not in k for k in listed)
    assert client.get("/v1/galleries/g2", headers=auth(new["key"])).status_code == 200
    assert client.delete(f"/v1/keys/{new['id']}", headers=auth(keys.admin)).status_code == 200
    assert client.get("/v1/galleries/g2", headers=auth(new["key"])).status_code == 401
    assert client.post("/v1/keys", json={"role": "root"}, headers=auth(keys.admin)).status_code == 422


def test_keys_are_never_logged(service, photos, caplog):
    client, keys, _ = service
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        client.get("/v1/galleries", headers=auth(keys.read))
        client.get("/v1/galleries", headers=auth(keys.revoked))
        client.post("/v1/galleries/g1/identify", files=files("photos", photos["anna"][:1]), headers=auth(keys.admin))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(lines) == 3
    assert [x["status"] for x in lines] == [200, 401, 200]
    read_id = keys.read.split("_")[1]
    assert lines[0]["key"] == read_id and lines[0]["route"] == "/v1/galleries"
    text = caplog.text
    for k in (keys.read, keys.revoked, keys.admin):
        assert k not in text and k.split("_")[-1] not in text


def test_anonymous_only_with_the_flag(tmp_path, toy_embedder):
    closed = ServeConfig(model="toy", gallery_dir=tmp_path / "a")
    with TestClient(create_app(closed, toy_embedder)) as client:
        assert client.get("/v1/galleries").status_code == 401
        assert client.get("/health").status_code == 200  # operations routes stay open
    opened = ServeConfig(model="toy", gallery_dir=tmp_path / "b", allow_anonymous=True)
    with TestClient(create_app(opened, toy_embedder)) as client:
        assert client.get("/v1/galleries").status_code == 200
        assert client.post("/v1/galleries", json={"name": "x"}).status_code == 403  # read role only
        assert client.get("/v1/galleries", headers=auth("fmk_bad")).status_code == 401  # a bad key is not anonymous


def test_keys_cli(tmp_path, capsys):
    code, out, err = cli(capsys, "keys", "create", "--gallery-dir", tmp_path, "--role", "write", "--gallery", "g1",
                         "--name", "ci")
    assert code == 0, err
    key = out.strip()
    assert key.startswith("fmk_") and "shown only now" in err
    rec = KeyStore(tmp_path / "keys.json").authenticate(key)
    assert rec is not None and rec.role == "write" and rec.galleries == ("g1",)
    code, out, err = cli(capsys, "keys", "list", "--gallery-dir", tmp_path, "--json")
    assert code == 0 and json.loads(out)["id"] == rec.id and key not in out
    code, out, err = cli(capsys, "keys", "revoke", "--gallery-dir", tmp_path, rec.id)
    assert code == 0 and KeyStore(tmp_path / "keys.json").authenticate(key) is None
    code, out, err = cli(capsys, "keys", "create", "--gallery-dir", tmp_path, "--role", "root")
    assert code == 2 and err.startswith("error: --role")
