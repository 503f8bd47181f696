"""Argument helpers shared by the command modules: option types, how a ``--people`` file is
resolved, and the checks of a path given on the command line.

These interpret arguments only (they parse, they do not compute); every command module imports
from here and none imports another command module or :mod:`facemetric.cli.main`.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Annotated

import typer

from facemetric.errors import FacemetricError

ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="pretrained name, model artifact or run directory")
]
DataOpt = Annotated[Path | None, typer.Option("--data", "-d", help="identity folder ROOT/<name>/<photo>")]
MinImagesOpt = Annotated[int, typer.Option("--min-images", help="only identities with at least N photos")]
PeopleOpt = Annotated[
    Path | None, typer.Option("--people", help="only the people of this LFW people file (may be relative to --data)")
]
PerIdentityOpt = Annotated[
    int | None, typer.Option("--per-identity", help="only the first N photos (by name) of each identity")
]
FlipOpt = Annotated[bool, typer.Option("--flip", help="flip test-time augmentation")]
QuietOpt = Annotated[bool, typer.Option(help="no progress bar")]


def people_path(people: Path | None, root: Path) -> Path | None:
    """An LFW people file as given, or relative to the data folder ``root`` when only there."""
    if people is None or people.is_file() or not (root / people).is_file():
        return people
    return root / people


def path_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a file, in words, or ``None`` when it is a readable regular
    file: ``"file not found"``, ``"is a directory"``, ``"symlink loop"``, ``"broken symlink (->
    target)"``, ``"permission denied"``, ``"not a regular file"``.

    A name that exists only as a dangling link is not "file not found": the link is named with its
    target. The check follows links (``os.stat``); ``ELOOP`` is a loop of symlinks.
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if exc.errno == errno.ENOENT:
            if os.path.islink(p):
                return f"broken symlink (-> {os.readlink(p)})"
            return "file not found"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        return exc.strerror or type(exc).__name__
    if stat.S_ISDIR(st.st_mode):
        return "is a directory"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not os.access(p, os.R_OK):
        return "permission denied"
    return None


def check_input_file(path: str | os.PathLike) -> None:
    """Raise a one-line :class:`~facemetric.errors.FacemetricError` ``"<path>: <why>"`` unless
    ``path`` is a readable regular file (:func:`path_problem`)."""
    why = path_problem(path)
    if why is not None:
        raise FacemetricError(f"{display_path(path)}: {why}")


def display_path(path: str | os.PathLike) -> str:
    """``path`` printable on any terminal: a file name that is not valid UTF-8 (surrogate escapes
    on POSIX) shows its undecodable bytes as ``\\xNN``."""
    p = os.fspath(path)
    try:
        p.encode("utf-8")
        return p
    except UnicodeEncodeError:
        return os.fsencode(p).decode("utf-8", errors="backslashreplace")
