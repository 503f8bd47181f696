"""A short load test against a real uvicorn on loopback: concurrent clients mixing identify and
enrol, bounded in requests and seconds. 0 errors; every acknowledged enrolment is in the
gallery; concurrent requests were coalesced into shared inference batches. (The long variant
with the latency table: benchmarks/bench_serve_load.py.)"""

from __future__ import annotations

import re
import threading
import time
import urllib.request

from facemetric.gallery import Gallery
from facemetric.serve import ServeConfig
from facemetric.serve.loadgen import multipart, run_load
from tests.serve.serve_helpers import PEOPLE, auth, free_port, make_keys, running_server


def test_concurrent_identify_and_enrol(tmp_path, toy_embedder, photos):
    cfg = ServeConfig(model="toy", gallery_dir=tmp_path / "galleries", port=free_port(), batch_wait_ms=10,
                      log_level="warning")
    keys = make_keys(cfg.keys_path)
    with running_server(cfg, toy_embedder) as url:
        req = urllib.request.Request(f"{url}/v1/galleries", data=b'{"name": "load"}', method="POST",
                                     headers={**auth(keys.admin), "Content-Type": "application/json"})
        assert urllib.request.urlopen(req, timeout=30).status == 201
        pool = [b for name in PEOPLE for b in photos[name]]
        result = run_load(url, keys.write, "load", pool, clients=6, requests=12, duration_s=25, enrol_fraction=0.4)
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
    assert result.errors == [], result.errors[:3]
    assert result.requests == 6 * 12  # nobody hit the time bound on this load
    assert len(result.latency["enrol"]) >= 10 and len(result.latency["identify"]) >= 10
    with Gallery.open(cfg.gallery_dir / "load") as g:
        stored = {r.name: r.num_images for r in g.identities()}
    assert stored == {name: len(ids) for name, ids in result.enrolled.items()}
    assert all(len(ids) == 1 for ids in result.enrolled.values())
    batches = float(re.search(r"^facemetric_inference_batch_rows_count (\S+)$", metrics, re.M).group(1))
    rows = float(re.search(r"^facemetric_inference_batch_rows_sum (\S+)$", metrics, re.M).group(1))
    assert rows == 6 * 12 and batches < rows  # some forward passes served several requests


def test_graceful_shutdown_finishes_requests_in_flight(tmp_path, toy_embedder, photos):
    """Shutdown (uvicorn's SIGTERM path) while a request waits in the inference pool: the request
    is answered, then the server stops."""
    cfg = ServeConfig(model="toy", gallery_dir=tmp_path / "galleries", port=free_port(), batch_wait_ms=1500,
                      max_batch=64, log_level="warning")
    keys = make_keys(cfg.keys_path)
    answers: list[int] = []
    with running_server(cfg, toy_embedder) as url:
        server = running_server.current
        body, ctype = multipart([("photos", "a.png", photos["anna"][0])])
        req = urllib.request.Request(f"{url}/v1/embed", data=body, method="POST",
                                     headers={**auth(keys.read), "Content-Type": ctype})
        client = threading.Thread(target=lambda: answers.append(urllib.request.urlopen(req, timeout=30).status))
        client.start()
        deadline = time.monotonic() + 10
        while server.server_state.tasks == set() and time.monotonic() < deadline:
            time.sleep(0.01)  # until the request is in flight
        time.sleep(0.2)
        server.should_exit = True  # what uvicorn's SIGTERM handler does
        client.join(30)
    assert answers == [200]
