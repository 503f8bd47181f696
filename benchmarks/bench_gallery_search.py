"""Time 1:N gallery search (exact torch matmul, faiss IndexFlatIP) against NumPy linear scans.

    python benchmarks/bench_gallery_search.py [--n N --dim D] [--queries 1000] [--no-gallery]

Default: two random galleries, 1,000,000 x 128 and 100,000 x 512 (float32, L2-normalised,
generated in chunks of 100k rows); with ``--n``/``--dim`` only that one. Queries are noisy
copies of random gallery rows (so the right answer is known). For each gallery, top-10 by
cosine, timed as:

* latency: one query (median of ``--repeats`` runs after a warm-up);
* throughput: a batch of ``--queries`` queries (default 1,000; one run after a warm-up).

Compared:

* exact: :func:`facemetric.index.search.topk_inner_product` (chunked BLAS matmul +
  ``torch.topk`` merging; the gallery's ``index="exact"``);
* faiss flat: ``IndexFlatIP`` (exact), when faiss is importable (its build time is printed);
* plain reference: a NumPy per-query linear scan computing every distance and sorting them all
  (``np.linalg.norm(X - q, axis=1)`` then ``argsort``, face_recognition's ``face_distance`` +
  a sort), timed on a few queries and scaled linearly to the batch;
* NumPy matvec: a better-written per-query scan (``X @ q`` + ``argpartition``), also scaled;
* gallery: ``Gallery.search`` end to end (identities of 10 images, ``by="max"``, the card
  check; ``index="auto"`` (faiss flat when importable) and ``"exact"``), after
  ``Gallery.enroll_many`` of the whole set (time printed); top-1 identity must be right.

All top-10 lists are checked to agree (row ids) with the plain reference on its queries.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from facemetric.gallery import Gallery
from facemetric.index import faiss_available, topk_inner_product

K = 10


def random_unit(n: int, dim: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for i in range(0, n, chunk):
        a = rng.standard_normal((min(chunk, n - i), dim), dtype=np.float32)
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        out[i : i + a.shape[0]] = a
    return out


def make_queries(x: np.ndarray, nq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.choice(x.shape[0], nq, replace=False)
    q = x[src] + 0.5 * rng.standard_normal((nq, x.shape[1]), dtype=np.float32) / np.sqrt(x.shape[1])
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), src


def timed(fn, repeats: int = 1):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def plain_scan(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(x - q, axis=1)
    return np.argsort(d, kind="stable")[:K]


def matvec_scan(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    s = x @ q
    top = np.argpartition(-s, K)[:K]
    return top[np.argsort(-s[top], kind="stable")]


def bench(n: int, dim: int, args) -> None:
    print(f"\n== gallery {n:,} x {dim} (float32, {n * dim * 4 / 2**20:,.0f} MiB), top-{K} by cosine ==")
    t0 = time.perf_counter()
    x = random_unit(n, dim, seed=dim)
    q, src = make_queries(x, args.queries, seed=1)
    print(f"generated in {time.perf_counter() - t0:.1f} s; batch = {args.queries} queries")
    rows: list[tuple[str, float, float]] = []  # name, latency s, batch s

    # --- plain reference and NumPy matvec (subset, scaled)
    sub = q[: args.plain_queries]
    t_plain, ref = timed(lambda: [plain_scan(x, v) for v in sub])
    t_plain /= len(sub)
    sub2 = q[: args.matvec_queries]
    t_mv, mv = timed(lambda: [matvec_scan(x, v) for v in sub2])
    t_mv /= len(sub2)
    assert all(np.array_equal(a, b) for a, b in zip(ref, mv, strict=False)), "matvec differs"
    top1 = np.mean([r[0] == s for r, s in zip(ref, src, strict=False)])
    print(f"plain reference: {len(sub)} queries timed, {t_plain:.3f} s/query; top-1 = source "
          f"row for {top1:.0%}")
    rows.append(("plain NumPy scan (norm + argsort)", t_plain, t_plain * len(q)))
    rows.append(("NumPy matvec + argpartition", t_mv, t_mv * len(q)))

    # --- torch exact
    topk_inner_product(q[:1], x, K)
    t_lat, _ = timed(lambda: topk_inner_product(q[:1], x, K), args.repeats)
    topk_inner_product(q[:8], x, K)
    t_batch, (s_t, r_t) = timed(lambda: topk_inner_product(q, x, K))
    for i, r in enumerate(ref):
        assert np.array_equal(r_t[i], r), "exact top-10 differs from the reference"
    rows.append(("exact (BLAS matmul + torch topk)", t_lat, t_batch))

    # --- faiss flat
    if faiss_available():
        import faiss

        t_build, index = timed(lambda: _flat(faiss, x))
        index.search(q[:1], K)
        t_lat, _ = timed(lambda: index.search(q[:1], K), args.repeats)
        t_batch, (_, r_f) = timed(lambda: index.search(q, K))
        for i, r in enumerate(ref):
            assert np.array_equal(r_f[i], r), "faiss top-10 differs from the reference"
        rows.append((f"faiss IndexFlatIP ({faiss.omp_get_max_threads()} threads)", t_lat, t_batch))
        print(f"faiss IndexFlatIP build: {t_build:.2f} s")
    else:
        print("faiss not importable: faiss rows skipped")

    # --- the gallery, end to end
    if not args.no_gallery:
        card = {"name": "bench", "backbone": {"name": "random"}, "embedding_dim": dim,
                "preprocessing": {}, "created": "bench"}
        with tempfile.TemporaryDirectory() as tmp:
            g = Gallery.create(f"{tmp}/g", card)
            names = [f"id{i}" for i in range(n // 10 + 1)]
            t_enrol, _ = timed(lambda: g.enroll_many([names[i // 10] for i in range(n)], x))
            t_open, _ = timed(lambda: g.search(q[:1], k=K, card=card))  # loads + builds index
            kind = g._vector_index.index_for(g.snapshot()).kind
            print(f"gallery: enroll_many of {n:,} vectors in {t_enrol:.1f} s; first search "
                  f"(snapshot load + {kind} index) {t_open:.2f} s")
            for index in ("auto", "exact"):
                t_lat, _ = timed(lambda index=index: g.search(q[:1], k=K, card=card, index=index), args.repeats)
                t_batch, hits = timed(lambda index=index: g.search(q, k=K, card=card, index=index))
                ok = np.mean([h[0].identity == names[s // 10] for h, s in zip(hits, src, strict=True)])
                assert ok > 0.99, f"gallery top-1 identity correct for only {ok:.1%}"
                label = f"auto = faiss {kind}" if index == "auto" else index
                rows.append((f"Gallery.search (identities, max, {label})", t_lat, t_batch))
            g.close()

    base_lat, base_batch = rows[0][1], rows[0][2]
    print(f"{'method':<50} {'1 query':>10} {'batch':>10} {'q/s':>9} {'vs plain (1q)':>14} {'vs plain (batch)':>16}")
    for name, lat, batch in rows:
        scaled = " (scaled)" if name.startswith(("plain", "NumPy")) else ""
        print(f"{name:<50} {lat * 1e3:8.1f}ms {batch:9.2f}s {len(q) / batch:9.0f} "
              f"{base_lat / lat:13.1f}x {base_batch / batch:15.1f}x{scaled}")


def _flat(faiss, x):
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, help="gallery size (with --dim: only this gallery)")
    ap.add_argument("--dim", type=int, help="embedding dimension")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--plain-queries", type=int, default=3, help="queries timed in the plain scan")
    ap.add_argument("--matvec-queries", type=int, default=20)
    ap.add_argument("--no-gallery", action="store_true", help="skip the Gallery end-to-end rows")
    args = ap.parse_args()
    configs = [(1_000_000, 128), (100_000, 512)]
    if args.n or args.dim:
        configs = [(args.n or 100_000, args.dim or 128)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; faiss "
          f"{'available' if faiss_available() else 'not importable'}")
    for n, dim in configs:
        bench(n, dim, args)


if __name__ == "__main__":
    main()
