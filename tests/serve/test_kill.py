"""SIGKILL of the service at random moments during enrolments: afterwards the gallery opens
cleanly and holds, for every request, exactly all its photos or none -- all of them for every
request that was acknowledged (never lost, never half-written)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from facemetric.gallery import Gallery
from facemetric.serve.loadgen import multipart
from tests.serve.serve_helpers import auth, free_port, make_keys

PER_REQUEST = 2


def _start(model, gallery_dir, port) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "facemetric", "serve", "--model", str(model), "--gallery-dir", str(gallery_dir),
           "--port", str(port), "--torch-threads", "1", "--log-level", "warning", "--write-wait-s", "30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start within 60 s")


def _post(port, path, key, body=None, ctype="application/json"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={**auth(key), "Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, resp.read()


def _enrol(port, key, prefix, pool, stop, sent, acked, rng) -> None:
    """Enrol ``PER_REQUEST`` photos per request, one request after another, until ``stop``."""
    i = 0
    while not stop.is_set() and i < 200:
        name = f"{prefix}{i}"
        body, ctype = multipart([("photos", f"{j}.png", rng.choice(pool)) for j in range(PER_REQUEST)],
                                {"allow_duplicates": "true"})
        sent.append(name)
        try:
            status, _ = _post(port, f"/v1/galleries/k/identities/{name}", key, body, ctype)
        except OSError:
            return  # the server died under this request: not acknowledged
        if status == 201:
            acked.add(name)
        i += 1


def test_sigkill_during_enrolments(tmp_path, toy_model_dir, photos):
    gallery_dir = tmp_path / "galleries"
    keys = make_keys(gallery_dir / "keys.json")
    rng = random.Random(1)
    pool = [b for blobs in photos.values() for b in blobs]
    sent: list[str] = []
    acked: set[str] = set()
    for round_ in range(2):
        port = free_port()
        proc = _start(toy_model_dir, gallery_dir, port)
        try:
            if round_ == 0:
                assert _post(port, "/v1/galleries", keys.admin, b'{"name": "k"}')[0] == 201
            stop = threading.Event()

            clients = [threading.Thread(target=_enrol, args=(port, keys.write, f"r{round_}-c{c}-", pool, stop,
                                                             sent, acked, random.Random(c)))
                       for c in range(2)]
            for t in clients:
                t.start()
            # a random moment once enrolments are flowing
            while len(acked) < 3 + 4 * round_ and proc.poll() is None:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.15))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            stop.set()
            for t in clients:
                t.join(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stderr.close()
        with Gallery.open(gallery_dir / "k") as g:  # opening checks every vector file
            counts = {r.name: r.num_images for r in g.identities()}
            assert len(g) == sum(counts.values())
        assert set(counts) <= set(sent)
        assert all(n == PER_REQUEST for n in counts.values()), counts  # all or nothing per request
        assert acked <= set(counts), sorted(acked - set(counts))  # nothing acknowledged was lost
    assert len(acked) >= 7
