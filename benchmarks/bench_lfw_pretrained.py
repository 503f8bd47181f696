"""LFW View 2 (``pairs.txt``) and ORL identification with dlib-resnet-v1 through facemetric's
native pipeline, per alignment configuration.

    python benchmarks/bench_lfw_pretrained.py [--configs native,hog-port] [--lfw-limit N]
                                              [--out runs/lfw_pretrained.json]

Configurations (``--configs``; each a card ``alignment`` section, see
:mod:`facemetric.inference.alignment`):

* ``native``: the dlib-resnet-v1 card as shipped (res10 SSD -> dlib's 5-point shape predictor,
  ported -> dlib chip; fallback decided from the photo);
* ``hog-port``: dlib's HOG detector (dlib-bin) -> the ported shape predictor (= dlib's own
  pipeline, face_recognition's 98.7% setting);
* ``ssd-learned``: res10 SSD -> the learned 5-point model (``learned5`` from ``--learned``,
  with flip) -> the dlib chip from ArcFace-layout points.

For every configuration each photo is aligned once and embedded with and without flip (the
two views' raw descriptors averaged, as the card's flip rule says), so both accuracies come
from one pass. LFW: 10-fold accuracy (facemetric.eval.verification, Euclidean distance on
raw descriptors) and how the faces were found. ORL (40 people x 10 photos, 92x112 crops):
rank-1 leave-one-out identification (each photo against the other 399, Euclidean nearest
neighbour) and how the faces were found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(os.environ.get("FACEMETRIC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

CONFIGS = {
    "native": {},
    "hog-port": {"detector": "dlib-hog", "upsample": 1},
    "ssd-learned": {"landmarks": "learned5"},
}


def embed_both(embedder, paths: list[str], batch: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(no-flip, flip) raw descriptors of ``paths`` and per-photo how the face was found; a
    photo without a chip gets NaN descriptors."""
    from rich.progress import Progress

    from facemetric.data.transforms import decode_and_resize, to_tensor

    prep = embedder.preprocessing
    plain = np.full((len(paths), embedder.embedding_dim), np.nan, np.float32)
    flipped = plain.copy()
    found: dict[str, str] = {}
    with Progress(transient=True) as bar:
        task = bar.add_task("embedding", total=len(paths))
        for start in range(0, len(paths), batch):
            chunk = paths[start : start + batch]
            rows, chips = [], []
            for i, a in enumerate(embedder.aligner.align_many(chunk)):
                found[chunk[i]] = a.found.how if a.found else "unreadable"
                if a.chip is not None:
                    rows.append(start + i)
                    chips.append(decode_and_resize(a.chip, prep))
            if chips:
                x = to_tensor(np.stack(chips), prep)
                e1 = embedder.embed_batches([x], normalize=False).embeddings
                e2 = embedder.embed_batches([torch.flip(x, dims=[3])], normalize=False).embeddings
                plain[rows] = e1.numpy()
                flipped[rows] = ((e1 + e2) / 2).numpy()
            bar.advance(task, len(chunk))
    return plain, flipped, found


def how_counts(found: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in found.values():
        out[v] = out.get(v, 0) + 1
    return out


def lfw(embedder, batch: int, limit: int | None, offset: int = 0) -> dict:
    from facemetric.data.protocols import read_lfw_pairs
    from facemetric.eval.verification import evaluate_verification

    root = DATA / "lfw-deepfunneled"
    pairs = read_lfw_pairs(root / "pairs.txt", root)
    p1, p2, same, fold = pairs.paths1, pairs.paths2, np.asarray(pairs.issame), np.asarray(pairs.fold)
    if limit:  # a quick look: every k-th pair (folds kept)
        keep = np.arange(offset, len(p1))[:: max(1, len(p1) // limit)]
        p1, p2 = [p1[i] for i in keep], [p2[i] for i in keep]
        same, fold = same[keep], fold[keep]
    unique = sorted(set(p1) | set(p2))
    pos = {p: i for i, p in enumerate(unique)}
    t0 = time.perf_counter()
    plain, flipped, found = embed_both(embedder, unique, batch)
    seconds = time.perf_counter() - t0
    i1, i2 = np.array([pos[p] for p in p1]), np.array([pos[p] for p in p2])
    out = {"pairs": len(p1), "photos": len(unique), "seconds": round(seconds, 1),
           "found": how_counts(found)}
    for name, emb in (("no_flip", plain), ("flip", flipped)):
        m = evaluate_verification(emb[i1], emb[i2], issame=same, folds=fold, distance="euclidean")
        out[name] = {"accuracy": round(m["accuracy_mean"], 4), "std": round(m["accuracy_std"], 4),
                     "auc": round(m["auc"], 5)}
    return out


def orl(embedder, batch: int) -> dict:
    root = DATA / "att-faces"
    paths = sorted(str(p) for p in root.glob("s*/*.pgm"))
    labels = np.array([Path(p).parent.name for p in paths])
    plain, flipped, found = embed_both(embedder, paths, batch)
    out = {"photos": len(paths), "found": how_counts(found)}
    for name, emb in (("no_flip", plain), ("flip", flipped)):
        d = np.linalg.norm(emb[:, None] - emb[None], axis=2)
        np.fill_diagonal(d, np.inf)
        out[name] = {"rank1": round(float((labels[np.argmin(d, axis=1)] == labels).mean()), 4)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="native,hog-port")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lfw-limit", type=int, default=None, help="use about this many pairs")
    ap.add_argument("--lfw-offset", type=int, default=0, help="with --lfw-limit: first pair taken")
    ap.add_argument("--skip-lfw", action="store_true")
    ap.add_argument("--skip-orl", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--learned", default=None, help="ssd-learned: the learned5 model (run dir)")
    args = ap.parse_args()

    from facemetric import load_model
    from facemetric.inference.embedder import FaceEmbedder

    base = load_model("dlib-resnet-v1", align=False)
    results = {}
    for name in args.configs.split(","):
        if name not in CONFIGS:
            sys.exit(f"--configs: unknown {name!r}; expected {', '.join(CONFIGS)}")
        extra = dict(CONFIGS[name])
        if name == "ssd-learned":
            extra["landmark_options"] = {"path": args.learned, "flip": True}
        card = {**base.card, "alignment": {**base.card["alignment"], **extra}}
        try:
            embedder = FaceEmbedder(base.model, card)
        except Exception as exc:  # e.g. dlib-bin or the learned model missing here
            print(f"{name}: skipped ({exc})")
            continue
        r = {"alignment": embedder.aligner.spec}
        if not args.skip_orl:
            r["orl"] = orl(embedder, args.batch)
            print(f"{name}: ORL rank-1 {r['orl']['no_flip']['rank1']:.4f} (flip "
                  f"{r['orl']['flip']['rank1']:.4f}); found {r['orl']['found']}", flush=True)
        if not args.skip_lfw:
            r["lfw"] = lfw(embedder, args.batch, args.lfw_limit, args.lfw_offset)
            lf = r["lfw"]
            print(f"{name}: LFW {lf['pairs']} pairs: accuracy {lf['no_flip']['accuracy']:.4f} "
                  f"± {lf['no_flip']['std']:.4f} (flip {lf['flip']['accuracy']:.4f} ± "
                  f"{lf['flip']['std']:.4f}); found {lf['found']}; {lf['seconds']} s", flush=True)
        results[name] = r
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
