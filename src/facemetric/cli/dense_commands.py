"""``facemetric parse`` (label maps, overlays and an HTML page for photos) and ``facemetric
eval-dense`` (parsing, boundary and skeleton metrics of a dense model on LFW Part Labels, JSON
first). Thin wrappers over :meth:`facemetric.dense.predict.DenseModel.predict`,
:func:`facemetric.report.dense_html.write_parse_folder` and
:func:`facemetric.eval.dense.evaluate_dense`; registered in :mod:`facemetric.cli.main`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facemetric.cli.options import DataOpt, FlipOpt, QuietOpt, check_input_file
from facemetric.errors import FacemetricError

DenseModelOpt = Annotated[str, typer.Option("--model", "-m", help="dense run directory or model artifact")]


def _load_dense(model: str):
    from facemetric.inference import load_model

    m = load_model(model)
    if not hasattr(m, "parse"):
        raise FacemetricError(f"{model}: not a dense model (its card has no kind: dense); train one with "
                              "facemetric train --config configs/dense-fcn8s.yaml")
    return m


def parse(
    photos: Annotated[list[Path], typer.Argument(help="photos to parse", show_default=False)],
    model: DenseModelOpt = ...,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (label PNGs, overlays, index.html, parse.json)")] = Path("parsed"),
    batch_size: Annotated[int, typer.Option(help="photos per forward pass")] = 16,
    flip: FlipOpt = False,
) -> None:
    """Face parsing: per photo a label PNG (0 background, 1 skin, 2 hair), a colour map and an
    overlay, plus parse.json and an HTML page in --out."""
    from facemetric.data.image_io import read_image
    from facemetric.report.dense_html import write_parse_folder

    if batch_size < 1:
        raise FacemetricError(f"--batch-size: expected a positive integer, got {batch_size}")
    for p in photos:
        check_input_file(p)
    m = _load_dense(model)
    if "fcn" not in m.heads:
        raise FacemetricError(f"{model}: this dense model has no parsing head (heads: {', '.join(m.heads)})")
    arrays = [read_image(p, "RGB") for p in photos]  # every photo decodes before anything is written
    results = m.predict_arrays(arrays, batch_size, flip)
    report = write_parse_folder(out, [str(p) for p in photos], arrays, results, m.class_names)
    for e in report["photos"]:
        shares = ", ".join(f"{k} {v:.1%}" for k, v in e["shares"].items())
        typer.echo(f"{e['photo']}: {out / e['files']['labels']} ({shares})")
    typer.echo(f"wrote {out / 'parse.json'} and {out / 'index.html'}")


def eval_dense(
    model: DenseModelOpt = ...,
    data: Annotated[Path, typer.Option("--data", "-d", help="LFW Part Labels folder (split.csv, images/, labels/)")] = Path("../shared/data/lfw-parts"),
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON report to write")] = Path("dense-eval.json"),
    figure: Annotated[Path | None, typer.Option(help="also write a figure grid PNG (photo, truth, prediction, side outputs)")] = None,
    thresholds: Annotated[int, typer.Option(help="number of thresholds for ODS/OIS/AP")] = 25,
    limit: Annotated[int | None, typer.Option(help="only the first N photos of the split")] = None,
    flip: FlipOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Parsing (pixel accuracy, IoU, F1), boundaries and skeletons (ODS/OIS/AP, BSDS matching)
    of a dense model on one split; JSON report first, summary table on stdout."""
    from facemetric.eval.dense import dense_summary, evaluate_dense

    m = _load_dense(model)
    report = evaluate_dense(m, data, split=split, num_thresholds=thresholds, limit=limit,
                            out=out, figure=figure, progress=not quiet, flip=flip)
    typer.echo(dense_summary(report))
    typer.echo(f"wrote {out}" + (f" and {figure}" if figure else ""))


def skin_quality(
    model: Annotated[str, typer.Option("--model", "-m", help="face embedding model (pretrained name, artifact or run)")] = ...,
    parser: Annotated[str, typer.Option("--parser", help="dense run directory or artifact with a parsing head")] = ...,
    data: DataOpt = None,
    pairs: Annotated[Path, typer.Option(help="LFW-format pairs file (may be relative to --data)")] = Path("pairsDevTest.txt"),
    chip: Annotated[tuple[int, int], typer.Option(help="centred chip box HEIGHT WIDTH in photo pixels")] = (150, 128),
    align: Annotated[bool, typer.Option(help="the embedder's own detection + alignment step (--no-align: photos are aligned)")] = True,
    flip: FlipOpt = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON report (and <stem>-skin.png)")] = Path("skin-quality.json"),
    quiet: QuietOpt = False,
) -> None:
    """Visible-skin fraction of the face chip (from the face parser) as a quality signal,
    analysed against verification errors on a pair protocol beside the feature norm."""
    from facemetric.eval.skin_quality import skin_quality as run
    from facemetric.eval.skin_quality import skin_quality_summary

    if data is None:
        raise FacemetricError("--data: give the LFW folder (e.g. ../shared/data/lfw-deepfunneled)")
    report = run(model, parser, data, pairs, chip=chip, flip=flip, align=align, out=out, progress=not quiet)
    typer.echo(skin_quality_summary(report))
    typer.echo(f"wrote {out}")


__all__ = ["eval_dense", "parse", "skin_quality"]
