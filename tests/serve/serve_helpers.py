"""Shared material of the service tests: a toy model (LeNets++, 24x24 grey, random weights),
toy identities as PNG bytes, keys of every role, and a service in-process or on loopback."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facemetric.serve import KeyStore, ServeConfig, build_server

PEOPLE = ("anna", "bert", "carl", "dora")


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def toy_photos(per: int = 4, seed: int = 0, side: int = 48) -> dict[str, list[bytes]]:
    """``{name: [PNG bytes]}``: each person a smooth random grey pattern plus a little noise
    (48x48; the toy model resizes to 24x24)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in PEOPLE:
        low = Image.fromarray(rng.uniform(0, 255, size=(6, 6)).astype(np.uint8), "L")
        base = np.asarray(low.resize((side, side), Image.BICUBIC), dtype=np.float64)
        out[name] = [png(np.clip(base + 6 * rng.normal(size=base.shape), 0, 255).astype(np.uint8))
                     for _ in range(per)]
    return out


@dataclass
class Keys:
    admin: str
    write: str
    read: str
    read_g1: str  # read, scoped to gallery "g1"
    revoked: str


def make_keys(path: Path) -> Keys:
    store = KeyStore(path)
    admin = store.create("admin", name="ops")[1]
    write = store.create("write")[1]
    read = store.create("read")[1]
    read_g1 = store.create("read", ["g1"])[1]
    rec, revoked = store.create("write")
    store.revoke(rec.id)
    return Keys(admin, write, read, read_g1, revoked)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def files(field: str, blobs: list[bytes], name: str = "p.png") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (f"{i}-{name}", b, "image/png")) for i, b in enumerate(blobs)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(config: ServeConfig, embedder=None):
    """A real uvicorn server on loopback in a thread; yields its base URL (the server object is
    ``running_server.current``); stops it gracefully (what uvicorn does on SIGTERM)."""
    server = build_server(config, embedder)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    running_server.current = server
    try:
        yield f"http://{config.host}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(30)
