"""The FastAPI application: :func:`create_app` builds it from a :class:`ServeConfig` (or from
parts, for tests). Routes (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):

============================================  =======  ==============================================
route                                         role     what
============================================  =======  ==============================================
``GET /``                                     --       the web page (verify, enrol, identify)
``GET /health``                               --       ``{"status": "ok", model, galleries, queue}``
``GET /metrics``                              --       Prometheus text format
``POST /v1/verify``                           read     two photos -> distance, threshold, decision
``POST /v1/embed``                            read     photos -> embeddings
``GET /v1/galleries``                         read     the galleries the key may see
``POST /v1/galleries``                        admin    create a gallery (JSON ``{"name"}``)
``GET /v1/galleries/{g}``                     read     stats: identities, images, threshold
``GET /v1/galleries/{g}/identities``          read     identities with their image counts
``POST /v1/galleries/{g}/identities/{name}``  write    enrol photos of ``name`` (all or nothing)
``DELETE /v1/galleries/{g}/identities/{n}``   write    remove an identity
``DELETE /v1/galleries/{g}/images/{id}``      write    remove one photo
``POST /v1/galleries/{g}/identify``           read     top-k and the open-set decision per photo
``POST /v1/galleries/{g}/calibrate``          admin    store a threshold calibrated on labelled photos
``POST /v1/cluster``                          read     cluster photos: a background job (202)
``GET /v1/jobs/{id}``                         read     the job's status and result
``GET|POST /v1/keys``, ``DELETE /v1/keys/{id}``  admin  list, create, revoke keys (unscoped admin)
============================================  =======  ==============================================

Authentication: ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``). No key, a malformed,
unknown or revoked key: 401 with ``WWW-Authenticate: Bearer``; a valid key whose role or
gallery scope does not cover the route: 403. Without a key the request is refused unless the
service runs with ``allow_anonymous`` (it then has ``anonymous_role``). Every error is JSON
``{"error", "field", "status"}`` (:mod:`facemetric.serve.errors`); an unexpected exception is
a 500 whose body says only "internal error" (the traceback goes to the log).

Scores: identification scores and thresholds are cosine similarities of the L2-normalised
embeddings (as in ``facemetric identify``); ``verify`` answers in the model card's distance
(``distance``: smaller is more alike) and threshold.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import Body, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from facemetric.cluster.folder_job import edge_threshold
from facemetric.cluster.graph import METHODS, cluster_embeddings
from facemetric.distances import pair_scores
from facemetric.errors import FacemetricError
from facemetric.gallery import UNKNOWN
from facemetric.gallery.records import check_name
from facemetric.inference import load_model
from facemetric.inference.model_card import model_fingerprint, model_label
from facemetric.serve.config import ROLES, ServeConfig
from facemetric.serve.errors import ApiError
from facemetric.serve.galleries import Galleries, check_gallery_name
from facemetric.serve.jobs import Jobs
from facemetric.serve.keys import KeyRecord, KeyStore, role_allows
from facemetric.serve.observability import AccessLog, BodyLimit, Metrics
from facemetric.serve.pool import InferencePool
from facemetric.serve.uploads import Photo, decode_photo

API = "/v1"
log = logging.getLogger("facemetric.serve")
STATIC = Path(__file__).with_name("static")


#: The multipart file field of the routes that take photos (one file per part, repeated).
Photos = Annotated[list[UploadFile], File(description="photos (JPEG, PNG, ...), one file per part")]


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


class Principal:
    """Who is calling: a key record, or the anonymous caller (``record`` None)."""

    def __init__(self, record: KeyRecord | None, role: str):
        self.record = record
        self.role = role

    @property
    def id(self) -> str:
        return self.record.id if self.record is not None else "anonymous"

    def allows_gallery(self, gallery: str) -> bool:
        return self.record is None or self.record.allows_gallery(gallery)


class Service:
    """The state behind the routes: config, embedder, pool, galleries, keys, jobs, metrics."""

    def __init__(self, config: ServeConfig, embedder: Any, model_ref: str | None = None):
        self.config = config
        self.embedder = embedder
        self.card = embedder.card
        self.metrics = Metrics()
        self.keys = KeyStore(config.keys_path)
        self.galleries = Galleries(config.gallery_dir, self.card, model_ref, write_wait_s=config.write_wait_s,
                                   thumbnail_px=config.thumbnail_px)
        self.pool = InferencePool(embedder, workers=config.workers, max_batch=config.max_batch,
                                  batch_wait_ms=config.batch_wait_ms, max_queue=config.max_queue,
                                  flip=config.flip, on_batch=self.metrics.on_batch)
        self.metrics.queue.set_function(lambda: self.pool.queued)
        self.jobs = Jobs()
        self._align_lock = threading.Lock()

    def close(self) -> None:
        self.jobs.close(wait=False)
        self.pool.close(self.config.shutdown_timeout_s)
        self.galleries.close_all()

    # ------------------------------------------------------------------ auth
    def principal(self, request: Request, role: str, gallery: str | None = None) -> Principal:
        """The caller, checked for ``role`` (and ``gallery``'s scope): 401 / 403 as documented."""
        header = request.headers.get("authorization")
        key = None
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise ApiError(401, "Authorization: expected 'Bearer <key>'", "Authorization",
                               {"WWW-Authenticate": "Bearer"})
            key = value.strip()
        elif request.headers.get("x-api-key") is not None:
            key = request.headers["x-api-key"].strip()
        if key is None:
            if not self.config.allow_anonymous:
                raise ApiError(401, "Authorization: an API key is required (Authorization: Bearer <key>)",
                               "Authorization", {"WWW-Authenticate": "Bearer"})
            who = Principal(None, self.config.anonymous_role)
        else:
            rec = self.keys.authenticate(key)
            if rec is None:
                raise ApiError(401, "Authorization: invalid or revoked API key", "Authorization",
                               {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            who = Principal(rec, rec.role)
        request.state.key_id = who.id
        if not role_allows(who.role, role):
            raise ApiError(403, f"key {who.id}: role {who.role!r} may not do this (needs {role!r})", "Authorization")
        if gallery is not None and not who.allows_gallery(gallery):
            raise ApiError(403, f"key {who.id}: not allowed on gallery {gallery!r}", "gallery")
        return who

    # ------------------------------------------------------------------ photos
    def read_photos(self, uploads: list[UploadFile] | None, field: str = "photos",
                    limit: int | None = None) -> list[Photo]:
        uploads = list(uploads or [])
        limit = self.config.max_photos if limit is None else limit
        if not uploads:
            raise ApiError(422, f"{field}: expected at least one photo (multipart file field {field!r})", field)
        if len(uploads) > limit:
            raise ApiError(413, f"{field}: {len(uploads)} photos, above the limit of {limit} per request", field)
        out = []
        for i, up in enumerate(uploads):
            name = f"{field}[{i}]" if field == "photos" else field
            data = up.file.read(self.config.max_request_bytes + 1)
            out.append(decode_photo(data, name, up.filename or "", max_pixels=self.config.max_pixels))
        return out

    def embed(self, photos: list[Photo]) -> np.ndarray:
        """Embeddings ``[n, D]`` of decoded photos: preprocessing here (align, crop, resize; a
        photo without a face is a 422 naming it), the network in the pool (coalesced batches)."""
        inputs = []
        lock = self._align_lock if self.embedder.aligner is not None else contextlib.nullcontext()
        for p in photos:
            try:
                with lock:
                    inputs.append(self.embedder.preprocess([p.pixels]))
            except FacemetricError as exc:
                msg = str(exc).replace("image 0", "the photo").replace("images[0]", "the photo")
                label = f"{p.field} ({p.filename})" if p.filename else p.field
                raise ApiError(422, f"{label}: {msg}", p.field) from None
        return self.pool.embed(torch.cat(inputs), self.config.request_timeout_s)


def _json_error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _validation_field(err: dict) -> str:
    loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header")]
    return ".".join(loc) or "body"


def create_app(config: ServeConfig, embedder: Any = None, model_ref: str | None = None) -> FastAPI:
    """The service for ``config``; ``embedder`` defaults to ``load_model(config.model)``."""
    if embedder is None:
        embedder = load_model(config.model)
    if model_ref is None:
        p = Path(config.model)
        model_ref = str(p.resolve()) if p.exists() else config.model
    svc = Service(config, embedder, model_ref)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        svc.close()

    app = FastAPI(title="facemetric", version="1", lifespan=lifespan,
                  description="Face verification, enrolment and open-set identification with API keys. "
                              "Every error is JSON {error, field, status}.")
    app.state.service = svc

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        if exc.status == 503 and exc.field == "gallery":
            svc.metrics.gallery_busy.inc()
        return _json_error(exc)

    @app.exception_handler(FacemetricError)
    async def _facemetric_error(request: Request, exc: FacemetricError):
        return _json_error(ApiError(422, str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        field = _validation_field(first)
        msg = str(first.get("msg", "invalid request"))
        return _json_error(ApiError(422, f"{field}: {msg}", field))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "bad request"
        if exc.status_code == 400 and exc.__cause__ is not None:
            detail = f"body: cannot parse the request body ({type(exc.__cause__).__name__})"
        return _json_error(ApiError(exc.status_code, detail, "body" if exc.status_code == 400 else None,
                                    dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _json_error(ApiError(500, "internal error (see the service log)"))

    # ------------------------------------------------------------------ page, health, metrics
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, Any]:
        """Liveness and readiness: the model, the galleries, the inference queue."""
        return {"status": "ok", "model": model_label(svc.card), "fingerprint": model_fingerprint(svc.card)[:12],
                "embedding_dim": int(svc.card["embedding_dim"]), "galleries": len(svc.galleries.names()),
                "queue": svc.pool.queued}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics (text format)."""
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ 1:1
    @app.post(f"{API}/verify", tags=["faces"])
    def verify(request: Request, photo_a: Annotated[UploadFile, File()], photo_b: Annotated[UploadFile, File()],
               threshold: Annotated[float | None, Form(description="distance threshold (default: the card's)")] = None,
               ) -> dict[str, Any]:
        """Are two photos the same person? The card's distance and threshold (``same``:
        ``distance < threshold``)."""
        svc.principal(request, "read")
        a = svc.read_photos([photo_a], "photo_a")
        b = svc.read_photos([photo_b], "photo_b")
        t = svc.embedder.default_threshold if threshold is None else float(threshold)
        if t is None or not math.isfinite(t):
            raise ApiError(422, "threshold: the model card has none; send threshold", "threshold")
        e = svc.embed(a + b)
        d = float(pair_scores(e[:1], e[1:], svc.embedder.distance_kind)[0])
        return {"distance": d, "distance_kind": svc.embedder.distance_kind, "threshold": t, "same": d < t}

    @app.post(f"{API}/embed", tags=["faces"])
    def embed(request: Request, photos: Photos) -> dict[str, Any]:
        """Embeddings of the photos (as the model card says: L2-normalised unless raw)."""
        svc.principal(request, "read")
        ph = svc.read_photos(photos)
        e = svc.embed(ph)
        return {"model": model_label(svc.card), "dim": int(e.shape[1]),
                "embeddings": [{"photo": p.field, "filename": p.filename, "sha256": p.sha256,
                                "embedding": [float(v) for v in row]} for p, row in zip(ph, e, strict=True)]}

    # ------------------------------------------------------------------ galleries
    def gallery_stats(name: str) -> dict[str, Any]:
        g = svc.galleries.open(name)
        t, source = g.default_threshold(svc.card)
        cal = g.calibration
        return {"name": name, "identities": g.num_identities, "images": len(g), "dim": g.dim,
                "model": model_label(g.card), "threshold": _finite(t), "threshold_source": source,
                "calibration": None if cal is None else {**{k: _finite(v) if isinstance(v, float) else v
                                                            for k, v in asdict(cal[0]).items()}, "by": cal[1]}}

    @app.get(f"{API}/galleries", tags=["galleries"])
    def list_galleries(request: Request) -> dict[str, Any]:
        who = svc.principal(request, "read")
        return {"galleries": [n for n in svc.galleries.names() if who.allows_gallery(n)]}

    @app.post(f"{API}/galleries", tags=["galleries"], status_code=201)
    def create_gallery(request: Request, name: Annotated[str, Body(embed=True)]) -> dict[str, Any]:
        """Create an empty gallery for the service's model."""
        check_gallery_name(name)
        svc.principal(request, "admin", name)
        svc.galleries.create(name)
        return gallery_stats(name)

    @app.get(f"{API}/galleries/{{gallery}}", tags=["galleries"])
    def stats(request: Request, gallery: str) -> dict[str, Any]:
        check_gallery_name(gallery)
        svc.principal(request, "read", gallery)
        return gallery_stats(gallery)

    @app.get(f"{API}/galleries/{{gallery}}/identities", tags=["galleries"])
    def identities(request: Request, gallery: str) -> dict[str, Any]:
        check_gallery_name(gallery)
        svc.principal(request, "read", gallery)
        g = svc.galleries.open(gallery)
        return {"identities": [{"name": r.name, "images": r.num_images, "created": r.created}
                               for r in g.identities()]}

    @app.post(f"{API}/galleries/{{gallery}}/identities/{{identity}}", tags=["galleries"], status_code=201)
    def enrol(request: Request, gallery: str, identity: str, photos: Photos,
              allow_duplicates: Annotated[bool, Form()] = False) -> dict[str, Any]:
        """Enrol photos of ``identity`` (created if new). All or nothing: one bad photo refuses
        the request (4xx naming it) and nothing is written. Photos already enrolled for the
        identity (same bytes, or the same embedding) are skipped unless ``allow_duplicates``."""
        check_gallery_name(gallery)
        svc.principal(request, "write", gallery)
        try:
            check_name(identity)
        except FacemetricError as exc:
            raise ApiError(422, str(exc), "identity") from None
        if len(identity) > 200:
            raise ApiError(422, "identity: longer than 200 characters", "identity")
        g = svc.galleries.open(gallery)
        ph = svc.read_photos(photos)
        emb = svc.embed(ph)
        names = [identity] * len(ph)
        keys = [f"sha256:{p.sha256}" for p in ph]
        dup = np.zeros(len(ph), dtype=bool) if allow_duplicates else g.duplicates(names, emb, keys)
        keep = [i for i in range(len(ph)) if not dup[i]]
        ids: list[int] = []
        if keep:
            for i in keep:
                svc.galleries.save_thumbnail(gallery, ph[i])
            ids = svc.galleries.write(
                gallery, lambda gg: gg.enroll_many([identity] * len(keep), emb[keep],
                                                   [ph[i].filename or ph[i].field for i in keep],
                                                   [{"key": keys[i], "sha256": ph[i].sha256} for i in keep],
                                                   card=svc.card))
        return {"gallery": gallery, "identity": identity, "image_ids": ids, "duplicates": int(dup.sum()),
                "identities": g.num_identities, "images": len(g)}

    @app.delete(f"{API}/galleries/{{gallery}}/identities/{{identity}}", tags=["galleries"])
    def remove_identity(request: Request, gallery: str, identity: str) -> dict[str, Any]:
        check_gallery_name(gallery)
        svc.principal(request, "write", gallery)
        g = svc.galleries.open(gallery)
        if identity not in {r.name for r in g.identities()}:
            raise ApiError(404, f"identity {identity[:80]!r}: not in gallery {gallery!r}", "identity")
        n = svc.galleries.write(gallery, lambda gg: gg.remove_identity(identity))
        return {"gallery": gallery, "identity": identity, "removed_images": n}

    @app.delete(f"{API}/galleries/{{gallery}}/images/{{image_id}}", tags=["galleries"])
    def remove_image(request: Request, gallery: str, image_id: int) -> dict[str, Any]:
        check_gallery_name(gallery)
        svc.principal(request, "write", gallery)

        def rm(gg):
            try:
                return gg.remove_images([image_id])
            except FacemetricError as exc:
                if "not in gallery" in str(exc):
                    raise ApiError(404, f"image {image_id}: not in gallery {gallery!r}", "image_id") from None
                raise

        n = svc.galleries.write(gallery, rm)
        return {"gallery": gallery, "image_id": image_id, "removed_images": n}

    @app.post(f"{API}/galleries/{{gallery}}/identify", tags=["galleries"])
    def identify(request: Request, gallery: str, photos: Photos,
                 k: Annotated[int, Form(ge=1, le=100)] = 5,
                 threshold: Annotated[float | None, Form(ge=-1, le=1, description="cosine threshold")] = None,
                 by: Annotated[str, Form(pattern="^(max|mean)$")] = "max",
                 thumbnails: Annotated[bool, Form()] = False) -> dict[str, Any]:
        """Top-``k`` identities and the open-set decision for each photo: the best identity if
        its cosine score reaches the threshold (given; else the gallery's calibration, else the
        model's impostor tail for this gallery's size, else the card's), else ``unknown``."""
        check_gallery_name(gallery)
        svc.principal(request, "read", gallery)
        g = svc.galleries.open(gallery)
        ph = svc.read_photos(photos)
        emb = svc.embed(ph)
        try:
            t, source = g.choose_threshold(threshold, card=svc.card, by=by)
        except FacemetricError as exc:
            raise ApiError(422, f"threshold: {exc} (send threshold, a cosine similarity)", "threshold") from None
        hits = g.search(emb, k, by, card=svc.card)
        results = []
        for p, q, row in zip(ph, emb, hits, strict=True):
            best = row[0] if row else None
            known = best is not None and best.score >= t
            matches = []
            for m in row:
                item: dict[str, Any] = {"identity": m.identity, "score": float(m.score)}
                if thumbnails:
                    img = svc.galleries.best_image(g, m.identity, q)
                    item["thumbnail"] = None if img is None else svc.galleries.thumbnail_uri(gallery, img["sha256"])
                matches.append(item)
            results.append({"photo": p.field, "filename": p.filename,
                            "identity": best.identity if known else UNKNOWN, "known": bool(known),
                            "candidate": None if best is None else best.identity,
                            "score": None if best is None else float(best.score), "matches": matches})
        return {"gallery": gallery, "threshold": float(t), "threshold_source": source, "by": by, "results": results}

    @app.post(f"{API}/galleries/{{gallery}}/calibrate", tags=["galleries"])
    def calibrate(request: Request, gallery: str, photos: Photos,
                  labels: Annotated[list[str], Form(description="one identity name per photo, in order")],
                  far: Annotated[float, Form(gt=0, lt=1)] = 0.01,
                  by: Annotated[str, Form(pattern="^(max|mean)$")] = "max") -> dict[str, Any]:
        """Calibrate the open-set threshold at ``far`` on labelled probe photos (names of
        enrolled people, or of people who are not) and store it in the gallery."""
        check_gallery_name(gallery)
        svc.principal(request, "admin", gallery)
        ph = svc.read_photos(photos, limit=max(svc.config.max_photos, svc.config.max_cluster_photos))
        if len(labels) != len(ph):
            raise ApiError(422, f"labels: expected {len(ph)} (one per photo), got {len(labels)}", "labels")
        g = svc.galleries.open(gallery)
        emb = svc.embed(ph)
        try:
            cal = g.calibrate(emb, labels, card=svc.card, far=far, by=by)
        except FacemetricError as exc:
            raise ApiError(422, str(exc), "photos") from None
        svc.galleries.write(gallery, lambda gg: gg.set_calibration(cal, by))
        return {"gallery": gallery, "by": by,
                **{k: _finite(v) if isinstance(v, float) else v for k, v in asdict(cal).items()}}

    # ------------------------------------------------------------------ clustering jobs
    @app.post(f"{API}/cluster", tags=["jobs"], status_code=202)
    def cluster(request: Request, photos: Photos,
                threshold: Annotated[float | None, Form(ge=-1, le=1, description="cosine edge threshold")] = None,
                method: Annotated[str, Form()] = "chinese-whispers") -> dict[str, Any]:
        """Cluster the photos by identity in the background; poll ``GET /v1/jobs/{id}``."""
        who = svc.principal(request, "read")
        if method not in METHODS:
            raise ApiError(422, f"method: expected one of {', '.join(METHODS)}, got {method[:40]!r}", "method")
        ph = svc.read_photos(photos, limit=svc.config.max_cluster_photos)

        def run() -> dict[str, Any]:
            emb = svc.embed(ph)
            t, source = edge_threshold(svc.card, len(ph), threshold)
            labels = cluster_embeddings(emb, method, t, k=min(20, max(1, len(ph) - 1)))
            return {"threshold": float(t), "threshold_source": source, "clusters": int(labels.max()) + 1,
                    "photos": [{"photo": p.field, "filename": p.filename, "cluster": int(c)}
                               for p, c in zip(ph, labels, strict=True)]}

        return svc.jobs.submit("cluster", run, who.id)

    @app.get(f"{API}/jobs/{{job_id}}", tags=["jobs"])
    def job(request: Request, job_id: str) -> dict[str, Any]:
        who = svc.principal(request, "read")
        return svc.jobs.get(job_id, who.id, who.role == "admin")

    # ------------------------------------------------------------------ keys
    def unscoped_admin(request: Request) -> Principal:
        who = svc.principal(request, "admin")
        if who.record is not None and who.record.galleries is not None:
            raise ApiError(403, f"key {who.id}: a gallery-scoped admin key cannot manage keys", "Authorization")
        return who

    @app.get(f"{API}/keys", tags=["keys"])
    def list_keys(request: Request) -> dict[str, Any]:
        unscoped_admin(request)
        return {"keys": [r.public() for r in svc.keys.list()]}

    @app.post(f"{API}/keys", tags=["keys"], status_code=201)
    def create_key(request: Request, role: Annotated[str, Body()], galleries: Annotated[list[str] | None, Body()] = None,
                   name: Annotated[str, Body()] = "") -> dict[str, Any]:
        """A new key; the ``key`` string is in this answer only."""
        unscoped_admin(request)
        if role not in ROLES:
            raise ApiError(422, f"role: expected one of {', '.join(ROLES)}, got {role[:40]!r}", "role")
        for gname in galleries or []:
            check_gallery_name(gname)
        rec, key = svc.keys.create(role, galleries, name)
        return {**rec.public(), "key": key}

    @app.delete(f"{API}/keys/{{key_id}}", tags=["keys"])
    def revoke_key(request: Request, key_id: str) -> dict[str, Any]:
        unscoped_admin(request)
        try:
            return svc.keys.revoke(key_id).public()
        except FacemetricError as exc:
            raise ApiError(404, str(exc), "key_id") from None

    app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes)
    app.add_middleware(AccessLog, metrics=svc.metrics)
    return app


__all__ = ["API", "Principal", "Service", "create_app"]
