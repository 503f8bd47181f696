"""Gallery and clustering commands of the ``facemetric`` CLI: ``enroll``, ``identify``,
``gallery list|remove|calibrate`` and ``cluster``: plain functions, registered explicitly in
:mod:`facemetric.cli.main` (this module does not import it); errors are :class:`~facemetric.errors.FacemetricError` (one line,
exit 2).

Thresholds are cosine similarities of L2-normalised embeddings (the gallery's scores). By
default ``identify`` takes :meth:`facemetric.gallery.Gallery.default_threshold` (a calibration
stored by ``gallery calibrate``, else the model's impostor tail at ``--far`` for the gallery's
size, :mod:`facemetric.gallery.open_set`, else the card's 1:1 threshold converted exactly) and
``cluster`` the impostor tail's threshold for its number of photos. A card with neither an
impostor tail nor a threshold on normalised embeddings needs ``--threshold``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from facemetric.cli.options import people_path
from facemetric.errors import FacemetricError

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="pretrained name, model artifact or run directory")
]
GalleryOpt = Annotated[Path, typer.Option("--gallery", "-g", help="gallery directory")]
FallbackOpt = Annotated[
    bool,
    typer.Option("--center-fallback", help="when no face is detected, align the centre of the photo instead of skipping it"),
]


# --------------------------------------------------------------------------- helpers
def _load(model: str, center_fallback: bool = False):
    from facemetric.inference import load_model

    embedder = load_model(model)
    if embedder.aligner is not None and not center_fallback:
        embedder.aligner.fallback = None
    return embedder


def embed_paths(embedder: Any, paths: list[Path], batch_size: int = 32, quiet: bool = False) -> tuple[np.ndarray, list[Path], dict[Path, str]]:
    """Embed ``paths`` (:func:`facemetric.inference.batch.embed_files`); photos with no
    detectable face, unreadable or missing ones are skipped. Returns ``(embeddings [n, D],
    kept paths, {skipped path: reason})``."""
    from facemetric.inference.batch import embed_files

    r = embed_files(embedder, paths, batch_size=batch_size, progress=not quiet)
    by_name = {os.fspath(p): Path(p) for p in paths}
    return r.embeddings, [by_name[k] for k in r.kept], {by_name[k]: why for k, why in r.skipped.items()}


def _threshold_hint(exc: FacemetricError) -> FacemetricError:
    """The card's threshold error, pointing at ``--threshold``."""
    return FacemetricError(f"{exc.args[0].removeprefix('threshold: ')} (use --threshold, a cosine similarity)")


def _given_threshold(threshold: float) -> tuple[float, str]:
    if not -1.0 <= threshold <= 1.0:
        raise FacemetricError(f"--threshold: expected a cosine similarity in [-1, 1], got {threshold}")
    return float(threshold), "--threshold"


def cluster_threshold(card: dict, num_photos: int, threshold: float | None) -> tuple[float, str]:
    """``(edge threshold, where it came from)``: given; else from the model's impostor tail
    (:func:`facemetric.gallery.open_set.cluster_threshold`); else the card's 1:1 threshold."""
    from facemetric.gallery import card_similarity_threshold
    from facemetric.gallery.open_set import cluster_threshold as from_tail

    if threshold is not None:
        return _given_threshold(threshold)
    if card.get("impostor_tail"):
        return from_tail(card["impostor_tail"], num_photos), f"model's impostor tail, {num_photos} photos"
    try:
        return card_similarity_threshold(card), "model card"
    except FacemetricError as exc:
        raise _threshold_hint(exc) from None


def _open_gallery(path: Path):
    from facemetric.gallery import Gallery

    return Gallery.open(path)


# --------------------------------------------------------------------------- enroll
def enroll(
    gallery: GalleryOpt,
    images: Annotated[list[Path] | None, typer.Argument(help="photos of --identity")] = None,
    identity: Annotated[str | None, typer.Option("--identity", "-i", help="name of the person in IMAGE...")] = None,
    folder: Annotated[Path | None, typer.Option("--folder", help="identity folder ROOT/<name>/<image>: enrol every identity")] = None,
    per_identity: Annotated[int | None, typer.Option("--per-identity", help="with --folder: only the first N images (by name) of each identity")] = None,
    min_images: Annotated[int, typer.Option("--min-images", help="with --folder: only identities with at least N images")] = 1,
    people: Annotated[Path | None, typer.Option("--people", help="with --folder: only the people of this LFW people file")] = None,
    model: ModelOpt = "dlib-resnet-v1",
    center_fallback: FallbackOpt = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Enrol photos into a gallery (created with the model's card if it does not exist).

    Either ``--identity NAME IMAGE...`` or ``--folder ROOT [--min-images N] [--people FILE]
    [--per-identity N]``. Photos without a detectable face are reported and skipped. All the
    photos of one command are committed together: an interrupted enrolment leaves the gallery
    as it was before.
    """
    from facemetric.gallery import Gallery

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
    names: list[str] = []
    paths: list[Path] = []
    if folder is not None:
        from facemetric.data.folder import IdentityFolder

        data = IdentityFolder(folder, min_images=min_images, identities=people_path(people, folder))
        for name, own in data.groups(per_identity):
            paths += own
            names += [name] * len(own)
    else:
        paths = list(images or [])
        names = [str(identity)] * len(paths)

    embedder = _load(model, center_fallback)
    if gallery.exists():
        g = Gallery.open(gallery)
        g.check_model(embedder.card)
        created = False
    else:
        g = Gallery.create(gallery, embedder.card)
        created = True
    with g:
        emb, kept, skipped = embed_paths(embedder, paths, quiet=quiet)
        for p, why in skipped.items():
            typer.echo(f"skipped {p}: {why}")
        name_of = dict(zip(paths, names, strict=True))
        kept_names = [name_of[p] for p in kept]
        if kept:
            g.enroll_many(kept_names, emb, [os.fspath(p) for p in kept], card=embedder.card)
        counts: dict[str, int] = {}
        for n in kept_names:
            counts[n] = counts.get(n, 0) + 1
        if len(set(names)) <= 20:
            for n in dict.fromkeys(names):
                typer.echo(f"enrolled {n}: {counts.get(n, 0)} images")
        typer.echo(
            f"{'created' if created else 'updated'} gallery {gallery}: {len(kept)} images of "
            f"{len(counts)} identities enrolled, {len(skipped)} skipped; {g.num_identities} "
            f"identities, {len(g)} images in all"
        )


# --------------------------------------------------------------------------- identify
def identify(
    images: Annotated[list[Path], typer.Argument(help="probe photos")],
    gallery: GalleryOpt,
    model: ModelOpt = "dlib-resnet-v1",
    k: Annotated[int, typer.Option("--k", help="identities to list per photo")] = 5,
    threshold: Annotated[float | None, typer.Option(help="cosine similarity to accept the best identity (default: the gallery's calibrated one, else the model's impostor tail at --far for this gallery's size, else the card's)")] = None,
    far: Annotated[float, typer.Option("--far", help="open-set false-accept rate of the default threshold")] = 0.01,
    by: Annotated[str, typer.Option("--by", help="identity score: max or mean cosine over its images")] = "max",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object per photo")] = False,
    center_fallback: FallbackOpt = False,
) -> None:
    """Who is in each photo? The top-k identities with cosine scores and the open-set decision
    (``unknown`` when the best score is below the threshold)."""
    from facemetric.gallery import UNKNOWN

    if by not in ("max", "mean"):
        raise FacemetricError(f"--by: expected max or mean, got {by!r}")
    if k < 1:
        raise FacemetricError(f"--k: expected an integer >= 1, got {k}")
    g = _open_gallery(gallery)
    with g:
        embedder = _load(model, center_fallback)
        g.check_model(embedder.card)
        if threshold is not None:
            t, source = _given_threshold(threshold)
        else:
            try:
                t, source = g.default_threshold(embedder.card, by=by, far=far)
            except FacemetricError as exc:
                raise _threshold_hint(exc) from None
        emb, kept, skipped = embed_paths(embedder, list(images))
        results = dict.fromkeys(images)
        if kept and len(g) > 0:
            for p, matches in zip(kept, g.search(emb, k=k, by=by, card=embedder.card), strict=True):
                results[p] = matches
        for p in images:
            matches = results[p]
            if p in skipped:
                row = {"image": str(p), "identity": None, "known": False, "error": skipped[p], "matches": []}
            else:
                matches = matches or []
                best = matches[0] if matches else None
                known = best is not None and best.score >= t
                row = {
                    "image": str(p),
                    "identity": best.identity if known else UNKNOWN,
                    "known": known,
                    "score": None if best is None else best.score,
                    "matches": [{"identity": m.identity, "score": m.score} for m in matches],
                }
            row["threshold"] = t
            if as_json:
                typer.echo(json.dumps(row))
                continue
            if "error" in row:
                typer.echo(f"{p}: skipped ({row['error']})")
                continue
            score = "" if row["score"] is None else f" (score {row['score']:.4f}, threshold {t:.4f})"
            typer.echo(f"{p}: {row['identity']}{score}")
            for rank, m in enumerate(row["matches"], 1):
                typer.echo(f"  {rank}. {m['identity']:<30} {m['score']:.4f}")
        if not as_json:
            typer.echo(f"threshold {t:.4f} ({source}), by {by}")


# --------------------------------------------------------------------------- gallery list / remove
def gallery_list(gallery: GalleryOpt) -> None:
    """Identities with their image counts."""
    from facemetric.gallery.model import model_label

    with _open_gallery(gallery) as g:
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
    with _open_gallery(gallery) as g:
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
    model: ModelOpt = "dlib-resnet-v1",
    center_fallback: FallbackOpt = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Calibrate the open-set threshold on labelled probes at a target FAR and store it in the
    gallery (``identify`` then uses it by default)."""
    from facemetric.data.folder import IdentityFolder

    if by not in ("max", "mean"):
        raise FacemetricError(f"--by: expected max or mean, got {by!r}")
    data = IdentityFolder(folder)
    with _open_gallery(gallery) as g:
        embedder = _load(model, center_fallback)
        g.check_model(embedder.card)
        emb, kept, skipped = embed_paths(embedder, list(data.paths), quiet=quiet)
        for p, why in skipped.items():
            typer.echo(f"skipped {p}: {why}")
        if not kept:
            raise FacemetricError(f"{folder}: no probe photo could be embedded")
        labels = [p.parent.name for p in kept]
        cal = g.calibrate(emb, labels, card=embedder.card, far=far, by=by)
        g.set_calibration(cal, by=by)
        tar = f"TAR {cal.tar:.4f} ({cal.num_genuine} genuine)" if cal.num_genuine else "no genuine probes (none of enrolled people)"
        typer.echo(
            f"threshold {cal.threshold:.4f} at FAR {cal.far:.4g} (target {far:g}; {cal.num_impostor} "
            f"impostor scores), {tar}; stored in {gallery}"
        )


# --------------------------------------------------------------------------- cluster
def _find_images(folder: Path) -> list[Path]:
    from facemetric.data.image_io import IMAGE_EXTENSIONS

    exts = {e.lower() for e in IMAGE_EXTENSIONS}
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in exts and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def cluster(
    folder: Annotated[Path | None, typer.Argument(help="folder of photos (searched recursively); optional with --embeddings")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory (clusters.csv, index.html, thumbs/)")] = Path("clusters"),
    model: ModelOpt = "dlib-resnet-v1",
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
    import csv

    from facemetric.cluster import cluster_embeddings, clustering_metrics
    from facemetric.report.cluster_html import write_cluster_report

    truth: list[str] | None = None
    if embeddings is not None:
        from facemetric.eval.embedding_set import EmbeddingSet

        s = EmbeddingSet.load(embeddings)
        if people is not None or min_images != 1:
            s = s.select(people_path(people, Path(s.meta.get("data") or ".")), min_images)
        if len(s) == 0:
            raise FacemetricError(f"{embeddings}: holds no embeddings")
        kept = [Path(p) for p in s.paths.tolist()]
        skipped: dict[Path, str] = {Path(p): why for p, why in (s.meta.get("skipped") or {}).items()}
        emb, truth, card, source_name = s.embeddings, s.identities.tolist(), s.card, str(s.meta.get("model"))
        folder = folder or (Path(s.meta["data"]) if s.meta.get("data") else None)
    else:
        if folder is None:
            raise FacemetricError("cluster: give a FOLDER of photos or --embeddings FILE")
        if not folder.is_dir():
            raise FacemetricError(f"{folder}: folder not found")
        if min_images != 1 or people is not None:
            from facemetric.data.folder import IdentityFolder

            paths = list(IdentityFolder(folder, min_images=min_images, identities=people_path(people, folder)).paths)
        else:
            paths = _find_images(folder)
        if not paths:
            raise FacemetricError(f"{folder}: no images found")
        embedder = _load(model, center_fallback)
        card, source_name = embedder.card, model
        emb, kept, skipped = embed_paths(embedder, paths, quiet=quiet)
        for p, why in skipped.items():
            typer.echo(f"skipped {p}: {why}")
        if not kept:
            raise FacemetricError(f"{folder}: no face found in any of {len(paths)} images")
        rel = [p.relative_to(folder) for p in kept]
        if all(len(r.parts) == 2 for r in rel):
            truth = [r.parts[0] for r in rel]
    t, source = cluster_threshold(card, len(kept), threshold)
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    start = time.perf_counter()
    labels = cluster_embeddings(e, method=method, threshold=t, k=min(k, len(kept)))
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "clusters.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "cluster"])
        for p, c in zip(kept, labels.tolist(), strict=True):
            w.writerow([os.fspath(p), c])
    metrics = None
    if truth is not None:
        metrics = clustering_metrics(truth, labels)
        metrics.update(method=method, threshold=t, k=k, skipped=len(skipped), seconds=round(seconds, 3))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if thumbnails:
        write_cluster_report(out, kept, labels, folder=folder, metrics=metrics,
                             title=f"Clusters of {folder if folder is not None else embeddings}",
                             settings=f"{source_name}, {method}, threshold {t:.3f} ({source}), k {k}")
    sizes = np.bincount(labels)
    typer.echo(
        f"{len(kept)} photos -> {sizes.size} clusters ({int((sizes == 1).sum())} singletons; largest "
        f"{', '.join(str(s) for s in sorted(sizes, reverse=True)[:5])}); {len(skipped)} skipped; "
        f"threshold {t:.3f} ({source}); clustered in {seconds:.2f} s"
    )
    if metrics is not None:
        typer.echo(
            f"vs folder labels: pairwise F {metrics['pairwise_f1']:.4f}, BCubed F "
            f"{metrics['bcubed_f1']:.4f}, NMI {metrics['nmi']:.4f}"
        )
    typer.echo(f"report: {out / 'index.html'}" if thumbnails else f"clusters: {out / 'clusters.csv'}")
