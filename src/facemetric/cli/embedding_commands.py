"""``facemetric embed`` (embeddings of an identity folder, saved once) and ``facemetric
identification`` (closed-set rank-k / CMC and open-set DIR@FAR on a gallery/probe split).
Thin wrappers over :func:`facemetric.eval.embedding_set.embed_identity_folder`,
:func:`facemetric.eval.identification.identification_report` and
:func:`facemetric.eval.identification_output.save_identification_report`: plain functions,
registered in :mod:`facemetric.cli.main`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from facemetric.cli.options import (
    DataOpt,
    FlipOpt,
    MinImagesOpt,
    ModelOpt,
    PeopleOpt,
    PerIdentityOpt,
    QuietOpt,
    people_path,
)
from facemetric.errors import FacemetricError


def load_or_embed(
    embeddings: Path | None, model: str | None, data: Path | None, *, min_images: int, people: Path | None,
    flip: bool, batch_size: int, quiet: bool,
) -> Any:
    """An :class:`~facemetric.eval.embedding_set.EmbeddingSet`: loaded from ``embeddings``, or
    computed from ``model`` on ``data``."""
    from facemetric.eval.embedding_set import EmbeddingSet, embed_identity_folder

    if embeddings is not None:
        if model is not None or data is not None:
            raise FacemetricError("give either --embeddings FILE or --model with --data, not both")
        s = EmbeddingSet.load(embeddings)
        if people is not None or min_images != 1:
            s = s.select(people_path(people, Path(s.meta.get("data") or ".")), min_images)
        return s
    if model is None or data is None:
        raise FacemetricError("give --embeddings FILE (from facemetric embed) or --model NAME with --data ROOT")
    return embed_identity_folder(
        model, data, min_images=min_images, people=people_path(people, data),
        flip=flip, batch_size=batch_size, progress=not quiet,
    )


def embed(
    model: ModelOpt = None,
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="embeddings file to write (.npz)")] = Path("embeddings.npz"),
    min_images: MinImagesOpt = 1,
    people: PeopleOpt = None,
    per_identity: PerIdentityOpt = None,
    flip: FlipOpt = False,
    batch_size: Annotated[int, typer.Option(help="photos per forward pass")] = 64,
    quiet: QuietOpt = False,
) -> None:
    """Embed every photo of an identity folder once; identification and clustering reuse the file.

    Photos go through the model card's preprocessing and alignment (with its centre-box
    fallback); unreadable photos are skipped and listed in the file.
    """
    from facemetric.eval.embedding_set import embed_identity_folder

    if model is None or data is None:
        raise FacemetricError("embed: needs --model and --data")
    s = embed_identity_folder(model, data, min_images=min_images, people=people_path(people, data),
                              per_identity=per_identity, flip=flip, batch_size=batch_size,
                              progress=not quiet, out=out)
    info = s.summary()
    typer.echo(
        f"{info['images']} photos of {info['identities']} identities embedded ({info['dim']}-D, "
        f"{info['skipped']} skipped) -> {out}"
    )
    if s.meta.get("alignment"):
        a = s.meta["alignment"]
        typer.echo(f"alignment: {a['detected']} detected, {a['center_box']} centre-box fallbacks, {a['several_faces']} with several faces")


def identification(
    embeddings: Annotated[Path | None, typer.Option("--embeddings", "-e", help="embeddings file from facemetric embed")] = None,
    model: ModelOpt = None,
    data: DataOpt = None,
    min_images: MinImagesOpt = 1,
    people: PeopleOpt = None,
    n_enrol: Annotated[int, typer.Option("--n-enrol", help="photos enrolled per identity (identities with more photos are enrolled; the rest of their photos are mated probes)")] = 1,
    impostor_fraction: Annotated[float, typer.Option(help="fraction of the enrollable identities held out as impostors (besides those with too few photos)")] = 0.0,
    by: Annotated[str, typer.Option("--by", help="identity score: max or mean cosine over its images")] = "max",
    seed: Annotated[int, typer.Option(help="seed of the gallery/probe split")] = 0,
    repeats: Annotated[int, typer.Option(help="average over this many split draws (seeds seed, seed+1, ...)")] = 1,
    max_rank: Annotated[int, typer.Option(help="CMC up to this rank")] = 50,
    flip: Annotated[bool, typer.Option("--flip", help="with --model: flip test-time augmentation")] = False,
    batch_size: Annotated[int, typer.Option(help="with --model: photos per forward pass")] = 64,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the JSON report (and a CMC PNG beside it)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """1:N identification on a gallery/probe split of an identity folder: rank-1/5/10, CMC and
    open-set DIR@FAR (non-mated probes: identities with at most --n-enrol photos, and any held out).
    """
    from facemetric.eval.identification import identification_report
    from facemetric.eval.identification_output import save_identification_report

    if by not in ("max", "mean"):
        raise FacemetricError(f"--by: expected max or mean, got {by!r}")
    s = load_or_embed(embeddings, model, data, min_images=min_images, people=people,
                      flip=flip, batch_size=batch_size, quiet=quiet)
    r = identification_report(s, n_enrol=n_enrol, impostor_fraction=impostor_fraction, seed=seed,
                              repeats=repeats, by=by, max_rank=max_rank)
    p = r["protocol"]
    typer.echo(
        f"{p['enrolled_identities']:.0f} identities enrolled ({p['gallery_images']:.0f} photos), "
        f"{p['mated_probes']:.0f} mated and {p['non_mated_probes']:.0f} non-mated probes; by {by}"
        + (f"; mean of {repeats} splits" if repeats > 1 else "")
    )
    typer.echo("  ".join(f"rank-{k} {r[f'rank_{k}']:.4f}" for k in (1, 5, 10)))
    if r["dir_at_far"]:
        typer.echo("  ".join(
            f"DIR@FAR={lv}: {v:.4f} (threshold {r['threshold_at_far'][lv]:.4f})" for lv, v in r["dir_at_far"].items()
        ))
    if "default_threshold" in r:
        d = r["default_threshold"]
        typer.echo(
            f"default open-set threshold {d['threshold']:.4f} (model's impostor tail, target FAR "
            f"{d['far_target']:g}): FAR {d['far']:.4f}, DIR {d['dir']:.4f}"
        )
    if r["dir_at_far_skipped"]:
        typer.echo(f"DIR@FAR skipped at {', '.join(r['dir_at_far_skipped'])}: too few non-mated probes")
    if out is not None:
        save_identification_report(r, out, embeddings=embeddings, model=s.meta.get("model"))
        typer.echo(f"report: {out}")
