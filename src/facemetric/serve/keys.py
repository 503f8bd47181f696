"""API keys: created, listed and revoked with ``facemetric keys ...`` (or ``/v1/keys`` by an
admin key), stored hashed in one JSON file.

* A key is ``fmk_<id>_<secret>``: ``id`` 12 hex characters (shown in listings and access logs,
  not secret), ``secret`` 256 random bits (``secrets.token_urlsafe(32)``). It is shown once,
  at creation; the file holds only ``sha256(key)`` (a hash of a high-entropy random string
  needs no salt or slow hash: it cannot be guessed), compared with
  :func:`hmac.compare_digest` (constant time). An unknown id is compared against a dummy hash,
  so the answer takes the same time.
* Roles, each including the ones before it: ``read`` (verify, embed, identify, stats,
  cluster), ``write`` (enrol, remove), ``admin`` (create galleries, calibrate, keys). A key may
  be scoped to some galleries (``galleries``: None = all); an admin key so scoped manages only
  those galleries, and keys only when unscoped.
* The file (default ``<gallery-dir>/keys.json``, mode 0600) is rewritten atomically under an
  ``fcntl`` lock on ``<file>.lock``; a running service re-reads it when it changes, so a
  revocation takes effect at the next request.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from facemetric.errors import FacemetricError
from facemetric.io import atomic_write_text
from facemetric.serve.config import ROLES

PREFIX = "fmk_"
_KEY = re.compile(r"^fmk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DUMMY = hashlib.sha256(b"facemetric: no such key").hexdigest()
FORMAT = "facemetric-keys/1"


def role_allows(have: str, need: str) -> bool:
    """True when role ``have`` includes role ``need`` (read < write < admin)."""
    return ROLES.index(have) >= ROLES.index(need)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """One key as stored (without the secret): ``id``, ``role``, ``galleries`` (None: all),
    ``name`` (a label), ``created``, ``revoked`` (a time, or None) and ``hash``."""

    id: str
    role: str
    galleries: tuple[str, ...] | None
    name: str
    created: str
    revoked: str | None
    hash: str

    def public(self) -> dict[str, Any]:
        """The record without its hash (what listings show)."""
        d = asdict(self)
        d.pop("hash")
        d["galleries"] = None if self.galleries is None else list(self.galleries)
        return d

    def allows_gallery(self, gallery: str) -> bool:
        return self.galleries is None or gallery in self.galleries


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise FacemetricError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    return role


class KeyStore:
    """The key file at ``path`` (see the module docstring). Thread-safe."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._records: dict[str, KeyRecord] = {}

    # ------------------------------------------------------------------ file
    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read(self) -> dict[str, KeyRecord]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise FacemetricError(f"{self.path}: cannot read the key file ({exc})") from None
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            out = {}
            for r in data["keys"]:
                g = r.get("galleries")
                out[r["id"]] = KeyRecord(str(r["id"]), _check_role(r["role"]),
                                         None if g is None else tuple(str(x) for x in g),
                                         str(r.get("name", "")), str(r["created"]), r.get("revoked"),
                                         str(r["hash"]))
            return out
        except (ValueError, KeyError, TypeError, AttributeError, FacemetricError) as exc:
            raise FacemetricError(f"{self.path}: not a facemetric key file ({exc})") from None

    def _write(self, records: dict[str, KeyRecord]) -> None:
        data = {"format": FORMAT, "keys": [
            {**r.public(), "hash": r.hash} for r in sorted(records.values(), key=lambda r: r.created)
        ]}
        atomic_write_text(self.path, json.dumps(data, indent=1) + "\n", mode=0o600)

    def _current(self) -> dict[str, KeyRecord]:
        """The records, re-read when the file changed (size, mtime or inode)."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._records = self._read() if stamp is not None else {}
                self._stamp = stamp
            return self._records

    # ------------------------------------------------------------------ API
    def create(self, role: str, galleries: Sequence[str] | None = None, name: str = "") -> tuple[KeyRecord, str]:
        """A new key: ``(record, key)``; the key string is not stored and cannot be shown again."""
        _check_role(role)
        gal = None if galleries is None else tuple(dict.fromkeys(str(g) for g in galleries))
        if gal is not None and not gal:
            raise FacemetricError("galleries: expected at least one gallery name (or none for all)")
        with self._file_lock():
            records = self._read()
            key_id = secrets.token_hex(6)
            while key_id in records:
                key_id = secrets.token_hex(6)
            key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            rec = KeyRecord(key_id, role, gal, str(name), time.strftime("%Y-%m-%dT%H:%M:%S%z"), None,
                            hash_key(key))
            records[key_id] = rec
            self._write(records)
        return rec, key

    def list(self) -> list[KeyRecord]:
        """Every key (revoked ones too), oldest first."""
        return sorted(self._current().values(), key=lambda r: r.created)

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke the key ``key_id`` (its id, or the whole key); an unknown id is a one-line error."""
        m = _KEY.match(key_id)
        key_id = m.group(1) if m else key_id
        with self._file_lock():
            records = self._read()
            if key_id not in records:
                raise FacemetricError(f"key {key_id!r}: no such key in {self.path}")
            rec = records[key_id]
            if rec.revoked is None:
                rec = KeyRecord(**{**asdict(rec), "revoked": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
                records[key_id] = rec
                self._write(records)
        return rec

    def authenticate(self, key: str) -> KeyRecord | None:
        """The live record of ``key``, or None (malformed, unknown, wrong secret or revoked);
        the hash comparison is constant-time and runs for unknown ids too."""
        m = _KEY.match(key or "")
        rec = self._current().get(m.group(1)) if m else None
        ok = hmac.compare_digest(hash_key(key or ""), rec.hash if rec is not None else _DUMMY)
        if rec is None or not ok or rec.revoked is not None:
            return None
        return rec


__all__ = ["PREFIX", "KeyRecord", "KeyStore", "hash_key", "role_allows"]
