"""Time face clustering (k-NN graph + chinese whispers / components / agglomerative) against
scikit-learn DBSCAN on a precomputed distance matrix, at equal quality.

    python benchmarks/bench_clustering.py [--n N --ids M] [--dim 128] [--k 20] [--threshold 0.5]

Default: two synthetic sets, 10,000 faces of 1,000 identities and 100,000 faces of 10,000
identities (with ``--n``/``--ids`` only that one), 128-D unit vectors. Identities are
Gaussian clusters on the sphere with a realistic spread: centres drawn around 16 "group"
directions (similar-looking people: impostor cosines up to ~0.4), a per-identity spread
(log-normal), and a log-normal number of images per identity; genuine-pair cosine ~0.61 +-
0.08, impostor ~0.01 +- 0.10 (printed, with TAR/FAR of pairs at the threshold). Timed:

* the k-NN graph: ``knn_search`` exact (faiss ``IndexFlatIP`` when importable, else chunked
  BLAS) and faiss IVF (approximate; recall@k against exact printed);
* each method's clustering step on that graph; the total = k-NN + step;
* DBSCAN (``metric="precomputed"``, ``eps = 1 - threshold`` cosine distance, ``min_samples``
  1 and 5; noise points counted as singletons), timing the distance matrix and the fit, only
  where the N x N float32 matrix fits under ``--dbscan-max-gib`` (10k: 0.4 GiB, yes; 100k:
  40 GiB, skipped: it does not fit in this machine's memory).

Quality (pairwise F1, BCubed F1, NMI, number of clusters) is printed for every row, so speed
is compared at equal (or stated) quality. Single run each (no warm-up: clustering is a batch
job).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from facemetric.cluster import cluster_embeddings, clustering_metrics, knn_search
from facemetric.cluster.graph import METHODS
from facemetric.index import faiss_available


def synthetic_faces(n: int, n_ids: int, dim: int = 128, seed: int = 0, groups: int = 16):
    """``(x [n, dim] float32 unit rows, labels [n])`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((groups, dim))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    centres = 0.6 * g[rng.integers(0, groups, n_ids)] + rng.standard_normal((n_ids, dim)) / np.sqrt(dim)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    w = rng.lognormal(0.0, 0.8, size=n_ids)
    y = np.sort(rng.choice(n_ids, size=n, p=w / w.sum()))
    spread = rng.lognormal(np.log(0.8), 0.15, size=n_ids)
    x = np.empty((n, dim), dtype=np.float32)
    for i in range(0, n, 50_000):
        yy = y[i : i + 50_000]
        a = centres[yy] + spread[yy, None] * rng.standard_normal((yy.size, dim)) / np.sqrt(dim)
        x[i : i + yy.size] = a / np.linalg.norm(a, axis=1, keepdims=True)
    return x, y


def pair_stats(x, y, threshold, seed=1, n_pairs=200_000):
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(y), n_pairs), rng.integers(0, len(y), n_pairs)
    keep = (y[i] != y[j])
    imp = np.sum(x[i[keep]] * x[j[keep]], 1)
    # genuine pairs: a random other image of the same identity
    starts = np.searchsorted(y, y)  # y is sorted
    counts = np.bincount(y)[y]
    a = rng.integers(0, len(y), n_pairs)
    a = a[counts[a] > 1]
    b = starts[a] + rng.integers(0, counts[a] - 1)
    b = np.where(b >= a, b + 1, b)
    gen = np.sum(x[a] * x[b], 1)
    print(f"pairs: genuine cos {gen.mean():.3f} +- {gen.std():.3f}, impostor cos {imp.mean():.3f} +- "
          f"{imp.std():.3f} (max of {imp.size:,}: {imp.max():.3f}); at threshold {threshold}: "
          f"TAR {np.mean(gen >= threshold):.4f}, FAR {np.mean(imp >= threshold):.2e}")


def quality(y, labels) -> str:
    m = clustering_metrics(y, labels)
    return (f"pairF {m['pairwise_f1']:.4f}  B3F {m['bcubed_f1']:.4f}  NMI {m['nmi']:.4f}  "
            f"clusters {m['num_clusters']:>6,}")


def dbscan(x, threshold, min_samples):
    from sklearn.cluster import DBSCAN

    t = time.perf_counter()
    d = x @ x.T
    np.subtract(1.0, d, out=d)
    np.maximum(d, 0.0, out=d)
    t_matrix = time.perf_counter() - t
    t = time.perf_counter()
    labels = DBSCAN(eps=1.0 - threshold, min_samples=min_samples, metric="precomputed").fit_predict(d)
    t_fit = time.perf_counter() - t
    del d
    noise = labels < 0
    labels = labels.copy()
    labels[noise] = labels.max() + 1 + np.arange(int(noise.sum()))  # noise -> singletons
    return t_matrix, t_fit, labels


def bench(n: int, n_ids: int, args) -> None:
    print(f"\n== {n:,} faces, {n_ids:,} identities, {args.dim}-D; k = {args.k}, threshold = "
          f"{args.threshold} (cosine) ==")
    x, y = synthetic_faces(n, n_ids, args.dim)
    sizes = np.bincount(y)
    print(f"images per identity: mean {sizes.mean():.1f}, max {sizes.max()}, "
          f"{np.count_nonzero(sizes == 1)} identities with 1 image")
    pair_stats(x, y, args.threshold)

    backend = "faiss" if faiss_available() else "exact"
    t = time.perf_counter()
    knn = knn_search(x, args.k, backend=backend)
    t_knn = time.perf_counter() - t
    print(f"k-NN graph, exact ({backend}): {t_knn:.2f} s")
    if backend == "faiss" and n <= args.torch_knn_max:
        t = time.perf_counter()
        knn_t = knn_search(x, args.k, backend="exact")
        print(f"k-NN graph, exact (chunked BLAS + torch topk): {time.perf_counter() - t:.2f} s; "
              f"same neighbours: {np.mean(knn_t.idx == knn.idx):.4f}")
    rows = []
    for method in METHODS:
        t = time.perf_counter()
        labels = cluster_embeddings(x, method, threshold=args.threshold, k=args.k, seed=0, knn=knn)
        dt = time.perf_counter() - t
        rows.append((f"{method} (exact k-NN)", t_knn, dt, quality(y, labels)))
    if faiss_available() and not args.no_ivf:
        t = time.perf_counter()
        knn_ivf = knn_search(x, args.k, backend="faiss-ivf")
        t_ivf = time.perf_counter() - t
        recall = np.mean([np.intersect1d(a, b).size for a, b in zip(knn.idx, knn_ivf.idx, strict=True)]) / args.k
        print(f"k-NN graph, faiss IVF ({int(np.sqrt(n))} lists, 1/8 probed): {t_ivf:.2f} s, "
              f"recall@{args.k} {recall:.4f}")
        t = time.perf_counter()
        labels = cluster_embeddings(x, "chinese-whispers", threshold=args.threshold, knn=knn_ivf)
        rows.append(("chinese-whispers (IVF k-NN)", t_ivf, time.perf_counter() - t, quality(y, labels)))

    gib = n * n * 4 / 2**30
    if gib <= args.dbscan_max_gib:
        for ms in (1, 5):
            t_matrix, t_fit, labels = dbscan(x, args.threshold, ms)
            rows.append((f"DBSCAN precomputed, min_samples={ms}", t_matrix, t_fit, quality(y, labels)))
    else:
        print(f"DBSCAN skipped: its precomputed distance matrix would be {n:,}^2 x 4 B = {gib:,.0f} GiB "
              f"(> --dbscan-max-gib {args.dbscan_max_gib}; this machine has far less memory), and "
              "computing it is O(N^2) = 1e10 distances")

    print(f"{'method':<38} {'graph/matrix':>12} {'cluster':>9} {'total':>9}  quality")
    for name, a, b, q in rows:
        print(f"{name:<38} {a:11.2f}s {b:8.2f}s {a + b:8.2f}s  {q}")
    db = [r for r in rows if r[0].startswith("DBSCAN")]
    if db:
        ref = min(db, key=lambda r: r[1] + r[2])
        ref_t = ref[1] + ref[2]
        for name, a, b, _ in rows:
            if not name.startswith("DBSCAN"):
                print(f"speed-up vs {ref[0]} ({ref_t:.2f} s): {name}: {ref_t / (a + b):.1f}x total, "
                      f"{ref_t / b:.0f}x clustering step alone")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, help="number of faces (with --ids: only this set)")
    ap.add_argument("--ids", type=int, help="number of identities")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--dbscan-max-gib", type=float, default=4.0)
    ap.add_argument("--torch-knn-max", type=int, default=20_000,
                    help="also time the non-faiss exact k-NN up to this many faces")
    ap.add_argument("--no-ivf", action="store_true")
    args = ap.parse_args()
    configs = [(10_000, 1_000), (100_000, 10_000)]
    if args.n or args.ids:
        n = args.n or 10_000
        configs = [(n, args.ids or max(1, n // 10))]
    for n, n_ids in configs:
        bench(n, n_ids, args)


if __name__ == "__main__":
    main()
