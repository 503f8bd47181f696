"""The service's galleries: the folders under ``--gallery-dir``, opened once per thread, written
through the gallery's single-writer protocol with a bounded wait.

* A gallery name is 1-64 characters ``[A-Za-z0-9._-]`` not starting with ``.`` (it is a folder
  name); galleries are ``<gallery-dir>/<name>/`` (:class:`facemetric.gallery.Gallery`).
* Every gallery must have been built with the service's model (same fingerprint); another
  model's gallery is refused with 409 naming the model.
* Writes (enrol, remove, calibrate) set the gallery's writer-lock wait to ``write_wait_s``: a
  request that waits longer for another writer (another thread, or another process on the same
  folder) gets 503 + ``Retry-After``, never a hang. Each write is one gallery transaction, so a
  request is all or nothing even if the process is killed.
* Thumbnails of enrolled photos (small JPEGs, for the web page) are
  ``<gallery-dir>/.thumbs/<name>/<sha256>.jpg``, written atomically *before* the enrolment
  commits: a committed image always has its thumbnail (a killed enrolment may leave an unused
  one, never a missing one).
"""

from __future__ import annotations

import base64
import io
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facemetric.errors import FacemetricError
from facemetric.gallery import Gallery
from facemetric.gallery.storage import DB_NAME, GalleryLockedError
from facemetric.io import atomic_write_bytes
from facemetric.serve.errors import ApiError, busy
from facemetric.serve.uploads import Photo

_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")
THUMBS = ".thumbs"


def check_gallery_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ApiError(422, f"gallery: expected 1-64 characters of A-Z a-z 0-9 . _ - not starting "
                            f"with '.', got {str(name)[:80]!r}", "gallery")
    return name


class Galleries:
    """The galleries under ``root`` for the model of ``card`` (see the module docstring)."""

    def __init__(self, root: Path, card: dict[str, Any], model_ref: str | None, *, write_wait_s: float = 5.0,
                 thumbnail_px: int = 96):
        self.root = Path(root)
        self.card = card
        self.model_ref = model_ref
        self.write_wait_s = float(write_wait_s)
        self.thumbnail_px = int(thumbnail_px)
        self._local = threading.local()
        self._all: list[Gallery] = []
        self._all_lock = threading.Lock()

    def path(self, name: str) -> Path:
        return self.root / check_gallery_name(name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if _NAME.match(p.name) and (p / DB_NAME).is_file())

    def exists(self, name: str) -> bool:
        return (self.path(name) / DB_NAME).is_file()

    def _cache(self) -> dict[str, Gallery]:
        cache = getattr(self._local, "galleries", None)
        if cache is None:
            cache = self._local.galleries = {}
        return cache

    def open(self, name: str) -> Gallery:
        """This thread's open :class:`Gallery` ``name`` (404 when there is none)."""
        path = self.path(name)
        cache = self._cache()
        g = cache.get(name)
        if g is not None and (path / DB_NAME).is_file():
            return g
        if g is not None:
            cache.pop(name).close()
        if not (path / DB_NAME).is_file():
            raise ApiError(404, f"gallery {name!r} does not exist (create it with POST /v1/galleries)", "gallery")
        g = Gallery.open(path)
        try:
            g.check_model(self.card)
        except FacemetricError as exc:
            g.close()
            raise ApiError(409, str(exc), "gallery") from None
        g.lock_timeout_s = self.write_wait_s
        cache[name] = g
        with self._all_lock:
            self._all.append(g)
        return g

    def create(self, name: str) -> Gallery:
        path = self.path(name)
        if path.exists():
            raise ApiError(409, f"gallery {name!r} already exists", "name")
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            Gallery.create(path, self.card, model_ref=self.model_ref).close()
        except FacemetricError as exc:
            raise ApiError(409, str(exc), "name") from None
        return self.open(name)

    def close_all(self) -> None:
        with self._all_lock:
            for g in self._all:
                try:
                    g.close()
                except Exception:  # noqa: BLE001 - closing at shutdown, another thread's object
                    pass
            self._all.clear()

    # ------------------------------------------------------------------ writes
    def write(self, name: str, fn, *args: Any, **kwargs: Any) -> Any:
        """``fn(gallery, *args, **kwargs)`` as one write: a writer-lock wait beyond
        ``write_wait_s`` is a 503 with Retry-After."""
        g = self.open(name)
        try:
            return fn(g, *args, **kwargs)
        except GalleryLockedError:
            raise busy(f"gallery {name!r} is busy with another writer for more than {self.write_wait_s:g} s; retry",
                       max(1.0, self.write_wait_s), "gallery") from None

    # ------------------------------------------------------------------ thumbnails
    def thumb_path(self, name: str, sha256: str) -> Path:
        return self.root / THUMBS / check_gallery_name(name) / f"{sha256}.jpg"

    def save_thumbnail(self, name: str, photo: Photo) -> None:
        target = self.thumb_path(name, photo.sha256)
        if target.exists():
            return
        img = Image.fromarray(photo.pixels, "RGB")
        img.thumbnail((self.thumbnail_px, self.thumbnail_px))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, buf.getvalue())

    def thumbnail_uri(self, name: str, sha256: str | None) -> str | None:
        """The thumbnail as a ``data:image/jpeg;base64,...`` URI, or None."""
        if not sha256 or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            return None
        try:
            data = self.thumb_path(name, sha256).read_bytes()
        except OSError:
            return None
        return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")

    def best_image(self, g: Gallery, identity: str, query: np.ndarray) -> dict[str, Any] | None:
        """The image of ``identity`` closest to ``query`` (cosine): ``{id, source, sha256, score}``."""
        try:
            images = g.images(identity)
            vectors = g.embeddings(identity)
        except FacemetricError:
            return None
        if not images or vectors.shape[0] != len(images):
            return None
        scores = vectors @ query.astype(np.float32)
        i = int(np.argmax(scores))
        meta = images[i].metadata or {}
        return {"id": images[i].id, "source": images[i].source, "sha256": meta.get("sha256"),
                "score": float(scores[i])}


__all__ = ["THUMBS", "Galleries", "check_gallery_name"]
