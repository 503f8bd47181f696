"""Model commands of the ``facemetric`` CLI: ``demo``, ``train``, ``evaluate``, ``verify``,
``models`` and ``losses``. Plain functions with typer-annotated parameters, registered in
:mod:`facemetric.cli.main`; each parses its arguments, calls the Python API and prints.

The API is imported inside each command so that ``facemetric --help`` and usage errors answer
without importing torch (lazy command loading, not a cycle: nothing here is imported by the API).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from facemetric.cli.options import FlipOpt, QuietOpt, check_input_file
from facemetric.errors import FacemetricError

#: Printed on stderr when ``train`` is interrupted (Ctrl-C); the other commands print only
#: "interrupted" (:func:`facemetric.cli.main.main`).
RESUME_HINT = "interrupted; the newest checkpoint is kept (resume with --run-dir RUN --resume)"


def demo(
    out: Annotated[Path, typer.Option(help="output directory for report.json/.html and figures")] = Path("runs/demo"),
    epochs: Annotated[int | None, typer.Option(help="epochs per loss (default: the recipe's)")] = None,
    loss: Annotated[list[str] | None, typer.Option("--loss", help="only these variants (repeatable); also normface, sphereface, cosface, arcface")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="train each variant with these seeds (repeatable; default 0, 1, 2: the report gives mean ± std)")] = None,
) -> None:
    """Train LeNets++ (2-D features) on the embedded digits with each founding loss; report.

    ``--loss arcface`` (cosface, sphereface, normface) adds a normalised head to the comparison.
    """
    from facemetric.demo import DEMO_SEEDS, DEMO_VARIANTS, EXTRA_VARIANTS, run_demo

    known = [n for n, _, _ in DEMO_VARIANTS + EXTRA_VARIANTS]
    for name in loss or []:
        if name not in known:
            raise FacemetricError(f"--loss: unknown variant {name!r}; expected one of {', '.join(known)}")
    if epochs is not None and epochs < 1:
        raise FacemetricError(f"--epochs: expected an integer >= 1, got {epochs}")
    seeds = tuple(dict.fromkeys(seed)) if seed else DEMO_SEEDS
    report = run_demo(out, epochs=epochs, variants=loss or None, progress=not quiet, seeds=seeds)
    n = len(seeds)
    typer.echo(f"mean ± std over {n} seed{'s' if n > 1 else ''} ({', '.join(map(str, seeds))})")
    typer.echo(f"{'loss':<20} {'acc':>15} {'VAL@1e-3':>15} {'AUC':>15} {'EER':>15} {'intra/inter':>15} space")

    def cell(r: dict, key: str) -> str:
        spread = r.get("spread", {}).get(key)
        return f"{r[key]:.4f}" if spread is None else f"{spread['mean']:.4f}±{spread['std']:.3f}"

    for name, r in report["losses"].items():
        typer.echo(
            f"{name:<20} {cell(r, 'accuracy'):>15} {cell(r, 'val_at_far_1e-3'):>15} {cell(r, 'auc'):>15} "
            f"{cell(r, 'eer'):>15} {cell(r, 'intra_inter_ratio'):>15} {r['feature_space']}"
        )
    typer.echo(f"report: {out / 'report.html'} ({report['total_seconds']:.0f} s)")


def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML recipe (configs/*.yaml)")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="run directory (default runs/<name>-<time>)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --run-dir from its newest checkpoint")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train a model from a YAML config plus key=value overrides.

    Ctrl-C stops the run; the newest complete checkpoint stays in ``RUN/checkpoints`` and
    ``--run-dir RUN --resume`` continues from it.
    """
    from facemetric.train.tasks import train_from_config

    if resume and run_dir is None:
        raise FacemetricError("--resume needs --run-dir (the run to continue)")
    try:
        result = train_from_config(
            config, overrides=list(overrides or []), run_dir=run_dir, resume=resume, progress=not quiet
        )
    except KeyboardInterrupt:
        typer.echo(RESUME_HINT, err=True)
        raise
    val = result.final.get("val")
    if hasattr(result, "summary"):  # a non-embedding task says its own final metrics
        typer.echo(result.summary())
    elif val:
        typer.echo(
            f"val accuracy {val['accuracy_mean']:.4f} ± {val['accuracy_std']:.4f}, "
            f"VAL@FAR={val['far_target']:g}: {val['val']:.4f}, AUC {val['auc']:.4f}, EER {val['eer']:.4f}"
        )
    typer.echo(f"run directory: {result.run_dir}")


def evaluate(
    model: Annotated[str, typer.Option("--model", "-m", help="model artifact or run directory")],
    data: Annotated[Path, typer.Option("--data", "-d", help="image root (identity folders)")],
    pairs: Annotated[Path, typer.Option("--pairs", "-p", help="LFW-format pairs file (may be relative to --data)")],
    flip: FlipOpt = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the JSON report (and an ROC PNG beside it)")] = None,
    batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 64,
    quiet: QuietOpt = False,
    quality: Annotated[
        bool,
        typer.Option(
            "--quality",
            help="feature norm as face quality: correlation with correctness and an "
            "error-versus-reject curve (JSON 'quality' section, <out stem>-quality.png)",
        ),
    ] = False,
    face_select: Annotated[
        str | None,
        typer.Option(help="models that align photos: which face when several are found (largest, center, score)"),
    ] = None,
) -> None:
    """Verification (LFW protocol) of a saved model on a pairs file."""
    from facemetric.eval.evaluate_model import evaluate_model

    if batch_size < 1:
        raise FacemetricError(f"--batch-size: expected an integer >= 1, got {batch_size}")
    r = evaluate_model(
        model, data, pairs, flip=flip, out=out, batch_size=batch_size, progress=not quiet,
        quality=quality, face_select=face_select,
    )
    typer.echo(
        f"accuracy {r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}  VAL@FAR={r['far_target']:g}: "
        f"{r['val']:.4f} ± {r['val_std']:.4f}  AUC {r['auc']:.4f}  EER {r['eer']:.4f}  "
        f"({r['num_pairs']} pairs, {r['num_images']} images)"
    )
    if quality:
        typer.echo(quality_summary(r["quality"]))
    if "alignment" in r:
        a = r["alignment"]["counts"]
        typer.echo(f"alignment: {a['detected']} of {a['images']} images detected, {a['center_box']} centre-box fallbacks, {a['several_faces']} with several faces")
    if out is not None:
        typer.echo(f"report: {out}")


def quality_summary(q: dict) -> str:
    """One line: the rank correlation and accuracy before/after rejecting 20% (or the largest
    fraction below it) of the lowest-norm pairs, with the random-rejection baseline."""
    curve = q["curve"]
    base = curve[0]
    below = [p for p in curve if p["reject_fraction"] <= 0.2 + 1e-12]
    at = below[-1] if below else curve[-1]
    rho = "undefined" if q["spearman"] is None else f"{q['spearman']:.3f}"
    return (
        f"quality: spearman(norm, correct)={rho}; accuracy {base['norm']['accuracy']:.4f} -> "
        f"{at['norm']['accuracy']:.4f} after rejecting {at['reject_fraction']:.0%} lowest-norm "
        f"pairs (random: {at['random']['accuracy']:.4f})"
    )


def verify(
    image_a: Annotated[Path, typer.Argument(help="first photo")],
    image_b: Annotated[Path, typer.Argument(help="second photo")],
    model: Annotated[str, typer.Option("--model", "-m", help="pretrained name, model artifact or run directory")] = "dlib-resnet-v1",
    threshold: Annotated[float | None, typer.Option(help="decision threshold (default: the model card's)")] = None,
    flip: FlipOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    center_fallback: Annotated[bool, typer.Option("--center-fallback", help="when no face is detected, align the centre of the photo instead of failing")] = False,
) -> None:
    """Are two photos the same person? Prints the distance, the threshold and the decision.

    Photos are detected and aligned as the model card says (dlib-resnet-v1: dlib's HOG detector,
    5 landmarks, 150x150 chip); a photo without a detectable face is an error unless
    ``--center-fallback``, and a verdict reached through the fallback says so.
    """
    from facemetric.inference import load_model

    for path in (image_a, image_b):
        check_input_file(path)
    embedder = load_model(model)
    aligner = embedder.aligner
    if aligner is not None and not center_fallback:
        aligner.fallback = None
    try:
        result = embedder.verify(str(image_a), str(image_b), threshold=threshold, flip=flip)
    except FacemetricError as exc:
        if aligner is not None and not center_fallback and str(exc).startswith("no face found"):
            raise FacemetricError(f"{exc} (--center-fallback aligns the centre of the photo instead)") from None
        raise
    fallback = _fallback_photos(aligner)
    result = {"a": str(image_a), "b": str(image_b), "model": model, **result}
    result["distance_kind"] = embedder.card.get("distance", "squared_l2")
    if aligner is not None:
        result["center_fallback_used"] = aligner.counts["center_box"]
        if fallback is not None:
            result["center_fallback"] = {"a": fallback[0], "b": fallback[1]}
        found = getattr(aligner, "found", None)  # how each photo's face was found
        if found is not None and len(found) == 2:
            result["found"] = {"a": found[0].to_dict(), "b": found[1].to_dict()}
    if as_json:
        typer.echo(json.dumps(result))
        return
    verdict = "same person" if result["same"] else "different people"
    line = (
        f"{verdict}: {result['distance_kind']} distance {result['distance']:.4f} "
        f"{'<' if result['same'] else '>='} threshold {result['threshold']:.4f}"
    )
    if fallback is not None and any(fallback):
        which = " and ".join(f"photo {n}" for n, used in zip("AB", fallback, strict=True) if used)
        line += f" ({which}: no face detected, centre-box fallback)"
    elif aligner is not None and aligner.counts["center_box"]:
        line += f" ({aligner.counts['center_box']} photo(s): no face detected, centre-box fallback)"
    found = result.get("found") or {}  # absent for models that do not align photos
    other = {n: found[k]["how"] for n, k in (("A", "a"), ("B", "b"))
             if k in found and found[k]["how"] not in ("detected", "center-box")}
    if other:
        line += " (" + ", ".join(f"photo {n}: {how}" for n, how in other.items()) + ")"
    typer.echo(line)


def _fallback_photos(aligner) -> tuple[bool, bool] | None:
    """Per photo (A, B) whether the centre-box fallback stood in for a detected face, when the
    aligner records it per call (``fallback_used``); ``None`` when unknown."""
    if aligner is None:
        return None
    used = getattr(aligner, "fallback_used", None)
    if used is None or len(used) != 2:
        return None
    return bool(used[0]), bool(used[1])


def models() -> None:
    """List the registered backbones with parameters and FLOPs at their default input size."""
    from facemetric.models import MODELS, model_summary

    typer.echo(f"{'model':<22} {'input':>9} {'dim':>5} {'parameters':>13} {'GFLOPs':>8}")
    for name in MODELS.names():
        s = model_summary(name)
        h, w = s["input_size"]
        typer.echo(
            f"{name:<22} {f'{h}x{w}':>9} {s['embedding_dim']:>5} {s['parameters']:>13,d} "
            f"{s['flops'] / 1e9:>8.3f}"
        )
    typer.echo("FLOPs = 2 x multiply-accumulates, batch of 1.")


def losses() -> None:
    """List the registered losses and heads."""
    from facemetric.losses import LOSSES

    names = LOSSES.names()
    width = max(len(n) for n in names) + 2
    for name in names:
        doc = (LOSSES.get(name).__doc__ or "").strip().splitlines()
        typer.echo(f"{name:<{width}}{doc[0] if doc else ''}")


__all__ = ["RESUME_HINT", "demo", "evaluate", "losses", "models", "quality_summary", "train", "verify"]
