"""Argument helpers shared by the command modules: option types, how a ``--people`` file is
resolved, and the check of a path given on the command line.

These interpret arguments only (they parse, they do not compute); every command module imports
from here and none imports another command module or :mod:`facemetric.cli.main`.

The path check is the loaders' own (:mod:`facemetric.data.image_io`), imported when a path is
checked: importing ``facemetric.data`` imports torch (seconds), and ``facemetric --help`` and
usage errors must answer without it (CLI lazy loading, not a cycle).
"""

from __future__ import annotations

import os
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


def check_input_file(path: str | os.PathLike) -> None:
    """Raise a one-line :class:`~facemetric.errors.FacemetricError` ``"<path>: <why>"`` unless
    ``path`` is a readable, non-empty regular file (the loaders' own check,
    :func:`facemetric.data.image_io.path_problem`: ``file not found``, ``is a directory``,
    ``symlink loop``, ``broken symlink (-> target)``, ``permission denied``, ...)."""
    from facemetric.data.image_io import path_problem

    why = path_problem(path)
    if why is not None:
        raise FacemetricError(f"{display_path(path)}: {why}")


def display_path(path: str | os.PathLike) -> str:
    """:func:`facemetric.data.image_io.display_path`: ``path`` printable on any terminal (bytes
    of a name that are not UTF-8 show as ``\\xNN``)."""
    from facemetric.data.image_io import display_path as loaders_display_path

    return loaders_display_path(path)


__all__ = [
    "DataOpt", "FlipOpt", "MinImagesOpt", "ModelOpt", "PeopleOpt", "PerIdentityOpt", "QuietOpt",
    "check_input_file", "display_path", "people_path",
]
