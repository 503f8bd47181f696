"""Shared helper of the CLI tests."""

from __future__ import annotations


def cli(capsys, *args):
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    from facemetric.cli.main import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
