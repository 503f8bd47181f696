"""Service commands of the ``facemetric`` CLI: ``serve`` and ``keys create|list|revoke``:
plain functions, registered explicitly in :mod:`facemetric.cli.main`. The service is imported
inside each command (lazy command bodies), so ``facemetric --help`` does not import it.

Every ``serve`` flag can also be set by an environment variable ``FACEMETRIC_<FLAG>``
(``FACEMETRIC_MODEL``, ``FACEMETRIC_GALLERY_DIR``, ``FACEMETRIC_PORT``, ...); a flag wins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from facemetric.errors import FacemetricError

ROLES = ("read", "write", "admin")
KeysFileOpt = Annotated[Path | None, typer.Option("--keys-file", envvar="FACEMETRIC_KEYS_FILE",
                                                  help="the key file (default: GALLERY_DIR/keys.json)")]
KeysGalleryDirOpt = Annotated[Path, typer.Option("--gallery-dir", "-g", envvar="FACEMETRIC_GALLERY_DIR",
                                                 help="the service's gallery folder (holds keys.json)")]


def _opt(*names: str, env: str, help: str):  # noqa: A002 - typer's own name
    return typer.Option(*names, envvar=env, help=help)


def serve(
    model: Annotated[str, _opt("--model", "-m", env="FACEMETRIC_MODEL", help="pretrained name, model artifact or run directory")] = "dlib-resnet-v1",
    gallery_dir: Annotated[Path, _opt("--gallery-dir", "-g", env="FACEMETRIC_GALLERY_DIR", help="folder of the galleries (one sub-folder each) and keys.json")] = Path("galleries"),
    host: Annotated[str, _opt("--host", env="FACEMETRIC_HOST", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, _opt("--port", env="FACEMETRIC_PORT", help="TCP port")] = 8000,
    keys_file: KeysFileOpt = None,
    allow_anonymous: Annotated[bool, _opt("--allow-anonymous", env="FACEMETRIC_ALLOW_ANONYMOUS", help="serve requests without a key (with --anonymous-role)")] = False,
    anonymous_role: Annotated[str, _opt("--anonymous-role", env="FACEMETRIC_ANONYMOUS_ROLE", help="role of requests without a key: read, write or admin")] = "read",
    max_request_bytes: Annotated[int, _opt("--max-request-bytes", env="FACEMETRIC_MAX_REQUEST_BYTES", help="largest request body")] = 20 * 1024 * 1024,
    max_photos: Annotated[int, _opt("--max-photos", env="FACEMETRIC_MAX_PHOTOS", help="photos per request")] = 16,
    max_pixels: Annotated[int | None, _opt("--max-pixels", env="FACEMETRIC_MAX_PIXELS", help="decoded pixels per photo (default FACEMETRIC_MAX_IMAGE_PIXELS, 40 MP)")] = None,
    workers: Annotated[int, _opt("--workers", env="FACEMETRIC_WORKERS", help="inference threads")] = 1,
    torch_threads: Annotated[int | None, _opt("--torch-threads", env="FACEMETRIC_TORCH_THREADS", help="torch intra-op threads (default: torch's; 1 on a busy CPU)")] = None,
    max_batch: Annotated[int, _opt("--max-batch", env="FACEMETRIC_MAX_BATCH", help="photos per coalesced inference batch")] = 32,
    batch_wait_ms: Annotated[float, _opt("--batch-wait-ms", env="FACEMETRIC_BATCH_WAIT_MS", help="how long a batch waits for more photos")] = 5.0,
    write_wait_s: Annotated[float, _opt("--write-wait-s", env="FACEMETRIC_WRITE_WAIT_S", help="longest wait for a gallery's writer lock before 503")] = 5.0,
    flip: Annotated[bool, _opt("--flip", env="FACEMETRIC_FLIP", help="flip test-time augmentation")] = False,
    log_level: Annotated[str, _opt("--log-level", env="FACEMETRIC_LOG_LEVEL", help="debug, info, warning")] = "info",
) -> None:
    """Run the HTTP service: /v1 routes with API keys, the web page at /, docs at /docs.

    Create a key first (``facemetric keys create --role admin``); requests without a key are
    refused unless ``--allow-anonymous``. Stops gracefully on SIGTERM / Ctrl-C.
    """
    from facemetric.serve import ServeConfig
    from facemetric.serve import serve as run_service

    if anonymous_role not in ROLES:
        raise FacemetricError(f"--anonymous-role: expected one of {', '.join(ROLES)}, got {anonymous_role!r}")
    config = ServeConfig(model=model, gallery_dir=gallery_dir, host=host, port=port, keys_file=keys_file,
                         allow_anonymous=allow_anonymous, anonymous_role=anonymous_role,
                         max_request_bytes=max_request_bytes, max_photos=max_photos,
                         **({} if max_pixels is None else {"max_pixels": max_pixels}),
                         workers=workers, torch_threads=torch_threads, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                         write_wait_s=write_wait_s, flip=flip, log_level=log_level)
    if not config.allow_anonymous and not config.keys_path.exists():
        typer.echo(f"note: no key file at {config.keys_path}; create a key with "
                   f"`facemetric keys create --gallery-dir {gallery_dir} --role admin`", err=True)
    run_service(config)


def _store(gallery_dir: Path, keys_file: Path | None):
    from facemetric.serve import KeyStore

    return KeyStore(keys_file if keys_file is not None else gallery_dir / "keys.json")


def keys_create(
    role: Annotated[str, typer.Option("--role", "-r", help="read, write or admin")] = "read",
    gallery: Annotated[list[str] | None, typer.Option("--gallery", help="limit the key to this gallery (repeatable)")] = None,
    name: Annotated[str, typer.Option("--name", help="a label (who holds the key)")] = "",
    gallery_dir: KeysGalleryDirOpt = Path("galleries"),
    keys_file: KeysFileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the record and key as JSON")] = False,
) -> None:
    """Create an API key and print it once (it is stored only as a hash)."""
    if role not in ROLES:
        raise FacemetricError(f"--role: expected one of {', '.join(ROLES)}, got {role!r}")
    rec, key = _store(gallery_dir, keys_file).create(role, gallery or None, name)
    if as_json:
        typer.echo(json.dumps({**rec.public(), "key": key}))
        return
    scope = ", ".join(rec.galleries) if rec.galleries else "all galleries"
    typer.echo(key)
    typer.echo(f"created key {rec.id} (role {rec.role}, {scope}); it is shown only now", err=True)


def keys_list(
    gallery_dir: KeysGalleryDirOpt = Path("galleries"),
    keys_file: KeysFileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """List the keys (ids, roles, scopes; never the keys themselves)."""
    for rec in _store(gallery_dir, keys_file).list():
        if as_json:
            typer.echo(json.dumps(rec.public()))
        else:
            scope = ",".join(rec.galleries) if rec.galleries else "*"
            state = f"revoked {rec.revoked}" if rec.revoked else "active"
            typer.echo(f"{rec.id}  {rec.role:<5}  {scope:<20}  {state:<8}  {rec.created}  {rec.name}")


def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (as listed) or the key")],
    gallery_dir: KeysGalleryDirOpt = Path("galleries"),
    keys_file: KeysFileOpt = None,
) -> None:
    """Revoke a key; a running service refuses it from its next request."""
    rec = _store(gallery_dir, keys_file).revoke(key_id)
    typer.echo(f"revoked key {rec.id} ({rec.role})")
