"""``facemetric`` entry point: the typer app, every command registered explicitly in one place,
and :func:`main`, which turns every failure into one line on stderr.

Exit status and what is printed on stderr:

- ``0``: done; ``facemetric`` (or ``facemetric gallery``) with no arguments prints the help on
  stdout and exits 0, like ``--help``.
- ``2``: a user error, one line ``error: ...``: a :class:`~facemetric.errors.FacemetricError`
  (naming the file or field and what was expected); a usage error (``error: Missing argument
  'IMAGE_A'. (facemetric verify --help)``); an ``OSError`` naming a path (``<path>: permission
  denied`` / ``is a directory`` / ``symlink loop`` / ``file not found``); a text file that is
  not UTF-8.
- ``1``: ``error: out of memory ...`` (``MemoryError``), or ``error: internal error <Type>:
  <message> (set FACEMETRIC_DEBUG=1 for the traceback)`` for any other exception (a bug);
  with ``FACEMETRIC_DEBUG=1`` the exception propagates with its traceback.
- ``130``: interrupted (Ctrl-C): ``interrupted`` (``train`` first prints how to resume).

Works with typer that vendors click (``typer._click``, no ``click`` module) and with older
typer on top of click.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import sys
from pathlib import Path
from typing import Any

import typer

from facemetric.cli import (
    dense_commands,
    detect_commands,
    embedding_commands,
    export_commands,
    gallery_commands,
    model_commands,
    serve_commands,
)
from facemetric.cli.options import display_path
from facemetric.errors import FacemetricError

try:  # typer >= 0.16 vendors click as typer._click
    from typer._click.exceptions import ClickException, UsageError
    from typer._click.exceptions import NoArgsIsHelpError as _NoArgsIsHelpError
except ImportError:  # older typer on top of click
    from click.exceptions import ClickException, UsageError  # type: ignore[no-redef]

    try:
        from click.exceptions import NoArgsIsHelpError as _NoArgsIsHelpError  # type: ignore[no-redef]
    except ImportError:  # click < 8.2 prints the help itself and exits 0
        _NoArgsIsHelpError = None  # type: ignore[assignment,misc]
from typer import Abort, Exit  # typer's own, or click's re-exported by an older typer

PROG = "facemetric"
DEBUG_ENV = "FACEMETRIC_DEBUG"
MAX_MESSAGE = 400

app = typer.Typer(
    name=PROG,
    help="Discriminative face embeddings: train, evaluate, verify, demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
gallery_app = typer.Typer(name="gallery", help="Inspect and edit a gallery.", no_args_is_help=True)
keys_app = typer.Typer(name="keys", help="Create, list and revoke the service's API keys.", no_args_is_help=True)

# ---------------------------------------------------------------- registration (the one place)
class CommandEOFError(Exception):
    """An ``EOFError`` raised inside a command (a truncated file): typer would take it for
    Ctrl-D at a prompt (a blank line, then "Aborted"); :func:`run` reports the original."""


def _guard(fn):
    """``fn`` as a command: same signature and help; an ``EOFError`` it raises reaches
    :func:`run` as :class:`CommandEOFError`."""

    @functools.wraps(fn)
    def command(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EOFError as exc:
            raise CommandEOFError(str(exc)) from exc

    return command


def _register(group: typer.Typer, name: str, fn) -> None:
    group.command(name)(_guard(fn))


_register(app, "demo", model_commands.demo)
_register(app, "train", model_commands.train)
_register(app, "evaluate", model_commands.evaluate)
_register(app, "verify", model_commands.verify)
_register(app, "embed", embedding_commands.embed)
_register(app, "identification", embedding_commands.identification)
_register(app, "enroll", gallery_commands.enroll)
_register(app, "identify", gallery_commands.identify)
_register(gallery_app, "list", gallery_commands.gallery_list)
_register(gallery_app, "remove", gallery_commands.gallery_remove)
_register(gallery_app, "calibrate", gallery_commands.gallery_calibrate)
app.add_typer(gallery_app, name="gallery")
_register(app, "cluster", gallery_commands.cluster)
_register(app, "models", model_commands.models)
_register(app, "losses", model_commands.losses)
_register(app, "export", export_commands.export)
_register(app, "serve", serve_commands.serve)
_register(app, "detect", detect_commands.detect)
_register(app, "align", detect_commands.align)
_register(app, "parse", dense_commands.parse)
_register(app, "eval-dense", dense_commands.eval_dense)
_register(app, "skin-quality", dense_commands.skin_quality)
_register(keys_app, "create", serve_commands.keys_create)
_register(keys_app, "list", serve_commands.keys_list)
_register(keys_app, "revoke", serve_commands.keys_revoke)
app.add_typer(keys_app, name="keys")


# ---------------------------------------------------------------- one-line errors
def one_line(text: Any) -> str:
    """``text`` as one printable line: whitespace runs (newlines included) become one space,
    undecodable file-name bytes show as ``\\xNN``, and it is cut at :data:`MAX_MESSAGE` chars."""
    s = " ".join(str(text).split())
    s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return s if len(s) <= MAX_MESSAGE else s[: MAX_MESSAGE - 3] + "..."


def _error(message: str) -> None:
    typer.echo(f"error: {one_line(message)}", err=True)


def usage_line(exc: Any) -> str:
    """A click/typer usage error as ``<message> (<command path> --help)``."""
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or PROG
    return f"{one_line(exc.format_message())} ({command} --help)"


_OS_REASONS = {
    errno.ENOENT: "file not found",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.ELOOP: "symlink loop",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on device",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.EEXIST: "already exists",
    errno.ENOTEMPTY: "directory not empty",
}


def os_error_line(exc: OSError) -> str | None:
    """``"<path>: <reason>"`` for an ``OSError`` that names a path (``None`` when it names none:
    such an error is not about a user's file and is reported as an internal error)."""
    if exc.filename is None:
        return None
    reason = _OS_REASONS.get(exc.errno or -1) or exc.strerror or type(exc).__name__
    line = f"{display_path(exc.filename)}: {reason}"
    if exc.filename2 is not None:
        line += f" ({display_path(exc.filename2)})"
    return line


def _file_in_traceback(exc: BaseException) -> str | None:
    """The file being read when ``exc`` was raised: the innermost frame holding an open text
    file (``.name``) or running ``Path.read_text`` / ``read_bytes``."""
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        if frame.f_code.co_name in ("read_text", "open") and isinstance(frame.f_locals.get("self"), Path):
            return os.fspath(frame.f_locals["self"])
        for value in frame.f_locals.values():
            if isinstance(value, io.TextIOWrapper) and isinstance(getattr(value, "name", None), str):
                return value.name
    return None


def unicode_error_line(exc: UnicodeDecodeError) -> str:
    """``"<file>: not valid UTF-8 text (byte 0xNN at position P)"``."""
    bad = exc.object[exc.start : exc.start + 1] if isinstance(exc.object, bytes | bytearray) else b""
    where = f"byte 0x{bad.hex()} at position {exc.start}" if bad else f"position {exc.start}"
    name = _file_in_traceback(exc)
    return f"{display_path(name) + ': ' if name else ''}not valid {exc.encoding.upper()} text ({where})"


def _exit_code(rv: Any) -> int:
    """typer without standalone mode returns ``Exit``'s code (e.g. 130 after Ctrl-C, 0 after
    ``--help``) or the command's return value (``None`` here)."""
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit status (see the
    module docstring); errors are printed, never raised, unless ``FACEMETRIC_DEBUG=1``."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    try:
        code = _exit_code(app(args=args, prog_name=PROG, standalone_mode=False))
    except Exception as exc:
        code = _failure(exc, debug)
    except KeyboardInterrupt:
        code = 130
    if code == 130:
        typer.echo("interrupted", err=True)
    return code


def _failure(exc: BaseException, debug: bool) -> int:
    """Print ``exc`` as one line and return the exit status (module docstring)."""
    if isinstance(exc, Abort):
        # typer turns Ctrl-C (older typer) and an EOFError raised anywhere into Abort: only
        # an interrupt is an interrupt; anything else is judged by what was raised
        cause = exc.__cause__ or exc.__context__
        if cause is None or isinstance(cause, KeyboardInterrupt):
            return 130
        return _failure(cause, debug)
    if isinstance(exc, CommandEOFError):
        return _internal(exc.__cause__ or exc, debug)
    if isinstance(exc, FacemetricError):
        _error(str(exc))
        return 2
    if isinstance(exc, Exit):  # older typer/click raise it instead of returning its code
        return int(getattr(exc, "exit_code", 0) or 0)
    if isinstance(exc, ClickException):
        if _NoArgsIsHelpError is not None and isinstance(exc, _NoArgsIsHelpError):
            typer.echo(exc.format_message())
            return 0
        if isinstance(exc, UsageError):
            _error(usage_line(exc))
            return 2
        _error(exc.format_message())
        return int(getattr(exc, "exit_code", 1) or 1)
    if isinstance(exc, BrokenPipeError):  # e.g. `facemetric models | head -1`
        _quiet_stdout()
        return 1
    if isinstance(exc, MemoryError):
        if debug:
            raise exc
        _error(f"out of memory (the input is too large for this machine; set {DEBUG_ENV}=1 for the traceback)")
        return 1
    if isinstance(exc, OSError):
        line = os_error_line(exc)
        if debug or line is None:
            return _internal(exc, debug)
        _error(line)
        return 2
    if isinstance(exc, UnicodeDecodeError):
        if debug:
            raise exc
        _error(unicode_error_line(exc))
        return 2
    return _internal(exc, debug)


def _internal(exc: BaseException, debug: bool) -> int:
    if debug:
        raise exc
    _error(f"internal error {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)")
    return 1


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def main(argv: list[str] | None = None) -> None:
    """Console entry point: :func:`run`, then ``sys.exit`` with its status when it is not 0
    (returns normally on success, so tests may call ``main([...])`` in-process)."""
    for stream in (sys.stdout, sys.stderr):  # never die printing an undecodable file name
        try:
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        except (AttributeError, ValueError, io.UnsupportedOperation):
            pass
    code = run(argv)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
