"""Gallery and clustering commands of the ``facemetric`` CLI: ``enroll``, ``identify``,
``gallery list|remove|calibrate`` and ``cluster``: plain functions, registered explicitly in
:mod:`facemetric.cli.main` (this module does not import it); errors are :class:`~facemetric.errors.FacemetricError` (one line,
exit 2).

Each command parses its arguments, calls the API (:mod:`facemetric.gallery.enrolment`,
:mod:`facemetric.cluster.folder_job`) and prints. The API is imported inside each command (lazy
command bodies): ``facemetric --help`` and usage errors do not import torch.

Thresholds are cosine similarities of L2-normalised embeddings (the gallery's scores; text
output says "cosine similarity" so they are not mistaken for ``verify``'s distances). By
default ``identify`` takes :mod:`facemetric.gallery.thresholds`' policy (a calibration stored
by ``gallery calibrate``, else the model's impostor tail at ``--far`` for the gallery's size,
:mod:`facemetric.eval.open_set`, else the card's 1:1 threshold converted exactly) and
``cluster`` the impostor tail's threshold for its number of photos. A card with neither an
impostor tail nor a threshold on normalised embeddings needs ``--threshold``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from facemetric.errors import FacemetricError

ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="pretrained name, model artifact or run directory")
]
GalleryModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="pretrained name, model artifact or run directory (default: the gallery's own model)"),
]
GalleryOpt = Annotated[Path, typer.Option("--gallery", "-g", help="gallery directory")]
FallbackOpt = Annotated[
    bool,
    typer.Option("--center-fallback", help="when no face is detected, align the centre of the photo instead of skipping it"),
]


# --------------------------------------------------------------------------- helpers
DEFAULT_MODEL = "dlib-resnet-v1"


def _load(model: str, center_fallback: bool = False):
    from facemetric.inference import load_model

    embedder = load_model(model)
    if embedder.aligner is not None and not center_fallback:
        embedder.aligner.fallback = None
    return embedder


def _threshold_hint(exc: FacemetricError) -> FacemetricError:
    """The card's threshold error, pointing at ``--threshold``."""
    return FacemetricError(f"{exc.args[0].removeprefix('threshold: ')} (use --threshold, a cosine similarity)")


def _skipped(skipped: dict[str, str]) -> None:
    for p, why in skipped.items():
        typer.echo(f"skipped {p}: {why}")


# --------------------------------------------------------------------------- enroll
def enroll(
    gallery: GalleryOpt,
    images: Annotated[list[Path] | None, typer.Argument(help="photos of --identity")] = None,
    identity: Annotated[str | None, typer.Option("--identity", "-i", help="name of the person in IMAGE...")] = None,
    folder: Annotated[Path | None, typer.Option("--folder", help="identity folder ROOT/<name>/<image>: enrol every identity")] = None,
    per_identity: Annotated[int | None, typer.Option("--per-identity", help="with --folder: only the first N images (by name) of each identity")] = None,
    min_images: Annotated[int, typer.Option("--min-images", help="with --folder: only identities with at least N images")] = 1,
    people: Annotated[Path | None, typer.Option("--people", help="with --folder: only the people of this LFW people file")] = None,
    model: ModelOpt = None,
    allow_duplicates: Annotated[bool, typer.Option("--allow-duplicates", help="enrol photos already enrolled for the same identity again")] = False,
    center_fallback: FallbackOpt = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Enrol photos into a gallery (created with the model's card if it does not exist).

    Either ``--identity NAME IMAGE...`` or ``--folder ROOT [--min-images N] [--people FILE]
    [--per-identity N]``. Photos without a detectable face are reported and skipped, and so
    are photos already enrolled for the same identity (same file, or the same embedding),
    unless ``--allow-duplicates``. All the photos of one command are committed together: an
    interrupted enrolment leaves the gallery as it was before (no gallery, if it was the
    first). ``--model`` defaults to the gallery's own model, else dlib-resnet-v1.
    """
    if (identity is None) == (folder is None):
        raise FacemetricError("enroll: give either --identity NAME IMAGE... or --folder ROOT")
    if identity is not None and not images:
        raise FacemetricError("enroll: --identity needs at least one IMAGE")
    if folder is not None and images:
        raise FacemetricError("enroll: --folder takes no IMAGE arguments")
    if per_identity is not None and per_identity < 1:
        raise FacemetricError(f"--per-identity: expected an integer >= 1, got {per_identity}")
    if folder is None and (min_images != 1 or people is not None or per_identity is not None):
        raise FacemetricError("enroll: --min-images, --people and --per-identity go with --folder")
    from facemetric.gallery.enrolment import enrol_files, folder_plan, gallery_model, images_plan

    if folder is not None:
        plan = folder_plan(folder, min_images, people, per_identity)
    else:
        plan = images_plan(str(identity), list(images or []))
    model = model or (gallery_model(None, gallery) if gallery.exists() else DEFAULT_MODEL)
    embedder = _load(model, center_fallback)
    r = enrol_files(gallery, embedder, plan, model=model, allow_duplicates=allow_duplicates, progress=not quiet)
    _skipped(r.skipped)
    if len(r.counts) <= 20:
        for name, n in r.counts.items():
            typer.echo(f"enrolled {name}: {n} images")
    dup = f", {r.duplicates} skipped as already enrolled" if r.duplicates else ""
    typer.echo(
        f"{'created' if r.created else 'updated'} gallery {gallery}: {r.enrolled} images of "
        f"{sum(1 for n in r.counts.values() if n)} identities enrolled, {len(r.skipped)} skipped{dup}; "
        f"{r.num_identities} identities, {r.num_images} images in all"
    )


# --------------------------------------------------------------------------- identify
def identify(
    images: Annotated[list[Path], typer.Argument(help="probe photos")],
    gallery: GalleryOpt,
    model: GalleryModelOpt = None,
    k: Annotated[int, typer.Option("--k", help="identities to list per photo")] = 5,
    threshold: Annotated[float | None, typer.Option(help="cosine similarity to accept the best identity (default: the gallery's calibrated one, else the model's impostor tail at --far for this gallery's size, else the card's)")] = None,
    far: Annotated[float, typer.Option("--far", help="open-set false-accept rate of the default threshold")] = 0.01,
    by: Annotated[str, typer.Option("--by", help="identity score: max or mean cosine over its images")] = "max",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object per photo")] = False,
    center_fallback: FallbackOpt = False,
) -> None:
    """Who is in each photo? The top-k identities with their cosine similarities and the
    open-set decision (``unknown`` when the best similarity is below the threshold). Scores
    are cosine similarities (higher = more alike), not the distances ``verify`` prints."""
    if by not in ("max", "mean"):
        raise FacemetricError(f"--by: expected max or mean, got {by!r}")
    if k < 1:
        raise FacemetricError(f"--k: expected an integer >= 1, got {k}")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise FacemetricError(f"--threshold: expected a cosine similarity in [-1, 1], got {threshold}")
    from facemetric.gallery import Gallery
    from facemetric.gallery.enrolment import gallery_model, identify_files

    with Gallery.open(gallery) as g:
        embedder = _load(gallery_model(model, g), center_fallback)
        try:
            r = identify_files(g, embedder, list(images), k=k, by=by, threshold=threshold, far=far)
        except FacemetricError as exc:
            if exc.args[0].startswith("threshold: "):
                raise _threshold_hint(exc) from None
            raise
    t = r.threshold
    for row in r.rows:
        if as_json:
            typer.echo(json.dumps(row))
            continue
        if "error" in row:
            typer.echo(f"{row['image']}: skipped ({row['error']})")
            continue
        if row["score"] is None:
            typer.echo(f"{row['image']}: {row['identity']} (empty gallery)")
        else:
            op = ">=" if row["known"] else "<"
            typer.echo(f"{row['image']}: {row['identity']} (cosine similarity {row['score']:.4f} {op} threshold {t:.4f})")
        for rank, m in enumerate(row["matches"], 1):
            typer.echo(f"  {rank}. {m['identity']:<30} cosine {m['score']:.4f}")
    if not as_json:
        typer.echo(f"threshold {t:.4f} ({r.source}), by {by}")


# --------------------------------------------------------------------------- gallery list / remove / calibrate
def gallery_list(gallery: GalleryOpt) -> None:
    """Identities with their image counts."""
    from facemetric.gallery import Gallery
    from facemetric.inference.model_card import model_label

    with Gallery.open(gallery) as g:
        records = g.identities()
        typer.echo(f"gallery {gallery}: model {model_label(g.card)}, {len(records)} identities, {len(g)} images")
        for r in records:
            typer.echo(f"{r.name}\t{r.num_images}")


def gallery_remove(
    gallery: GalleryOpt,
    identity: Annotated[str | None, typer.Option("--identity", "-i", help="remove this identity and its images")] = None,
    image: Annotated[list[int] | None, typer.Option("--image", help="remove the image with this id (repeatable)")] = None,
) -> None:
    """Remove an identity (``--identity``) or images by id (``--image``)."""
    if (identity is None) == (not image):
        raise FacemetricError("gallery remove: give either --identity NAME or --image ID")
    from facemetric.gallery import Gallery

    with Gallery.open(gallery) as g:
        if identity is not None:
            if identity not in {r.name for r in g.identities()}:
                raise FacemetricError(f"gallery {gallery}: no identity {identity!r}")
            n = g.remove_identity(identity)
            typer.echo(f"removed {identity} ({n} images)")
        else:
            n = g.remove_images(list(image or []))
            typer.echo(f"removed {n} images")


def gallery_calibrate(
    gallery: GalleryOpt,
    folder: Annotated[Path, typer.Option("--folder", help="labelled probe photos ROOT/<name>/<photo>, not enrolled: photos of enrolled people give genuine scores, the others impostor scores")],
    far: Annotated[float, typer.Option("--far", help="target false-accept rate of the open-set decision")] = 1e-2,
    by: Annotated[str, typer.Option("--by", help="identity score: max or mean cosine over its images")] = "max",
    model: GalleryModelOpt = None,
    center_fallback: FallbackOpt = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Calibrate the open-set threshold on labelled probes at a target FAR and store it in the
    gallery (``identify`` then uses it by default)."""
    if by not in ("max", "mean"):
        raise FacemetricError(f"--by: expected max or mean, got {by!r}")
    from facemetric.gallery import Gallery
    from facemetric.gallery.enrolment import calibrate_folder, gallery_model

    with Gallery.open(gallery) as g:
        embedder = _load(gallery_model(model, g), center_fallback)
        r = calibrate_folder(g, embedder, folder, far=far, by=by, progress=not quiet)
    _skipped(r.skipped)
    cal = r.calibration
    tar = f"TAR {cal.tar:.4f} ({cal.num_genuine} genuine)" if cal.num_genuine else "no genuine probes (none of enrolled people)"
    typer.echo(
        f"cosine threshold {cal.threshold:.4f} at FAR {cal.far:.4g} (target {far:g}; {cal.num_impostor} "
        f"impostor scores), {tar}; stored in {gallery}"
    )


# --------------------------------------------------------------------------- cluster
def cluster(
    folder: Annotated[Path | None, typer.Argument(help="folder of photos (searched recursively); optional with --embeddings")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory (clusters.csv, index.html, thumbs/)")] = Path("clusters"),
    model: ModelOpt = None,
    embeddings: Annotated[Path | None, typer.Option("--embeddings", "-e", help="cluster the photos of this file from facemetric embed (no model run)")] = None,
    method: Annotated[str, typer.Option(help="chinese-whispers, components or agglomerative")] = "chinese-whispers",
    threshold: Annotated[float | None, typer.Option(help="cosine similarity an edge needs (default: from the model's impostor tail, about 0.1 impostor edges per photo; else the card's)")] = None,
    k: Annotated[int, typer.Option("--k", help="neighbours per photo in the k-NN graph")] = 20,
    min_images: Annotated[int, typer.Option("--min-images", help="identity folder: only identities with at least N photos")] = 1,
    people: Annotated[Path | None, typer.Option("--people", help="identity folder: only the people of this LFW people file")] = None,
    thumbnails: Annotated[bool, typer.Option(help="write the HTML page of thumbnails")] = True,
    center_fallback: FallbackOpt = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Group photos by person; writes clusters.csv and an HTML page of thumbnails (index.html).

    FOLDER is searched recursively. When it is an identity folder (``FOLDER/<name>/<image>``,
    every photo one level deep) the clusters are also scored against the folder names
    (metrics.json and the page); ``--min-images`` / ``--people`` then pick identities.
    ``--embeddings FILE`` clusters the photos of a ``facemetric embed`` file instead, scored
    against its identities."""
    from facemetric.cluster.folder_job import (
        cluster_photos,
        photos_from_embeddings,
        photos_from_folder,
    )

    if embeddings is not None:
        photos = photos_from_embeddings(embeddings, folder, min_images=min_images, people=people)
    else:
        if folder is None:
            raise FacemetricError("cluster: give a FOLDER of photos or --embeddings FILE")
        if not folder.is_dir():
            raise FacemetricError(f"{folder}: folder not found")
        name = model or DEFAULT_MODEL
        photos = photos_from_folder(folder, _load(name, center_fallback), model_name=name,
                                    min_images=min_images, people=people, progress=not quiet)
        _skipped(photos.skipped)
    r = cluster_photos(photos, out, method=method, threshold=threshold, k=k, thumbnails=thumbnails,
                       title=f"Clusters of {folder if folder is not None else embeddings}")
    sizes = r.sizes
    typer.echo(
        f"{len(photos.paths)} photos -> {sizes.size} clusters ({int((sizes == 1).sum())} singletons; largest "
        f"{', '.join(str(s) for s in sorted(sizes, reverse=True)[:5])}); {len(photos.skipped)} skipped; "
        f"threshold {r.threshold:.3f} ({r.source}); clustered in {r.seconds:.2f} s"
    )
    if r.metrics is not None:
        typer.echo(
            f"vs folder labels: pairwise F {r.metrics['pairwise_f1']:.4f}, BCubed F "
            f"{r.metrics['bcubed_f1']:.4f}, NMI {r.metrics['nmi']:.4f}"
        )
    typer.echo(f"report: {out / 'index.html'}" if thumbnails else f"clusters: {out / 'clusters.csv'}")


__all__ = ["cluster", "enroll", "gallery_calibrate", "gallery_list", "gallery_remove", "identify"]
