"""``facemetric export``: write a model in a deployment format (ONNX), its card inside.

A thin command: it checks its arguments, calls
:func:`facemetric.inference.onnx_export.export_onnx` (imported when the command runs, so that
``facemetric --help`` does not import torch) and prints what it wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from facemetric.errors import FacemetricError

FORMATS = ("onnx",)


def export(
    model: Annotated[str, typer.Option("--model", "-m", help="pretrained name, model artifact or run directory")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the file to write (model.onnx)")],
    format: Annotated[str, typer.Option("--format", "-f", help="the format: onnx")] = "onnx",
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: the exporter's)")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="compare onnxruntime with PyTorch on a random batch")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Export a model to ONNX (dynamic batch; the model card stored in the file's metadata).

    facemetric.load_model("model.onnx") then embeds through onnxruntime with the card's
    preprocessing (onnxruntime: the onnx extra of facemetric).
    """
    from facemetric.inference.onnx_export import export_onnx

    if format.lower() not in FORMATS:
        raise FacemetricError(f"--format: expected one of {', '.join(FORMATS)}, got {format!r}")
    if out.suffix.lower() != ".onnx":
        raise FacemetricError(f"--out: expected a file name ending in .onnx, got {str(out)!r}")
    if out.is_dir():
        raise FacemetricError(f"--out: {out} is a directory")
    if opset is not None and not 7 <= opset <= 30:
        raise FacemetricError(f"--opset: expected an ONNX opset between 7 and 30, got {opset}")
    summary = export_onnx(model, out, opset=opset, check=check)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    shape = "x".join(str(d) for d in summary["input"]["shape"])
    diff = summary["max_abs_diff"]
    parity = "" if diff is None else f"; onnxruntime vs PyTorch max |diff| {diff:.2g}"
    typer.echo(
        f"wrote {summary['path']} ({summary['bytes'] / 1e6:.1f} MB, opset {summary['opset']}, "
        f"input {shape}, {summary['embedding_dim']}-D{parity})"
    )
