"""Time the vectorised triplet selection against loop references of the same rules.

    python benchmarks/bench_triplet_selection.py [--people 45] [--images 40] [--dim 128]

Batch: ``people x images`` L2-normalised embeddings of dimension ``dim`` (default 45 x 40 =
1,800 x 128, FaceNet-sized), clustered around one centre per identity so that semi-hard
negatives exist at margin 0.2. Compared, for the semi-hard and the random-violating rule:

* vectorised: :func:`facemetric.losses.triplet_selection.semi_hard` / ``random_violating``
  on the precomputed distance matrix (median of several runs, after a warm-up; one torch
  thread by default, like the loops -- ``--threads`` to change);
* loop A: a Python loop over anchor-positive pairs with NumPy over the negatives (the shape of
  facenet's ``select_triplets``), on the whole batch, median of ``--loop-repeats`` runs (3);
* loop B: plain Python over pairs AND negatives, timed once on the anchors of the first few
  identities and scaled linearly to the whole batch (the work is the same per anchor).

The loop references are checked to pick the same triplets (semi-hard) or to obey the same rule
(random-violating). If ``pytorch_metric_learning`` is importable its
``TripletMarginMiner(margin=0.2, type_of_triplets="semihard")`` is timed on the same batch
against facemetric's ``SemiHardMiner`` (both from the embeddings), with
squared L2 distances (``LpDistance(power=2)``) so that its rule matches ours; note that it
returns ALL semi-hard triplets, while ``semi_hard`` picks one per anchor-positive pair.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from facemetric.distances import pairwise_squared_distances
from facemetric.losses.miners import SemiHardMiner
from facemetric.losses.triplet_selection import random_violating, semi_hard

MARGIN = 0.2


def make_batch(people: int, images: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(people).repeat_interleave(images)
    shared = torch.randn(1, dim, generator=g)  # correlated centres: identities overlap a bit
    centres = F.normalize(shared + torch.randn(people, dim, generator=g), dim=1)
    noise = torch.randn(people * images, dim, generator=g) / dim**0.5
    return F.normalize(centres[labels] + noise, dim=1), labels


def timed(fn, repeats: int = 1):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


# ----------------------------------------------------------------------- loop references
def semi_hard_loop_numpy(d: np.ndarray, y: np.ndarray, margin: float):
    out = []
    for a in range(len(y)):
        neg = y != y[a]
        for p in np.flatnonzero(y == y[a]):
            if p == a:
                continue
            dap = d[a, p]
            cand = np.flatnonzero(neg & (d[a] > dap) & (d[a] < dap + margin))
            if cand.size:
                out.append((a, int(p), int(cand[np.argmin(d[a, cand])])))
    return out


def semi_hard_loop_python(d: list, y: list, margin: float, anchors: range):
    out = []
    b = len(y)
    for a in anchors:
        row = d[a]
        for p in range(b):
            if p == a or y[p] != y[a]:
                continue
            dap, hi, best = row[p], row[p] + margin, None
            for n in range(b):
                if y[n] != y[a] and dap < row[n] < hi and (best is None or row[n] < row[best]):
                    best = n
            if best is not None:
                out.append((a, p, best))
    return out


def random_violating_loop_numpy(d: np.ndarray, y: np.ndarray, margin: float, rng):
    """facenet's select_triplets: pairs a < p of an identity, a random violating negative."""
    out = []
    for a in range(len(y)):
        neg = y != y[a]
        for p in np.flatnonzero(y == y[a]):
            if p <= a:
                continue
            cand = np.flatnonzero(neg & (d[a] < d[a, p] + margin))
            if cand.size:
                out.append((a, int(p), int(cand[rng.integers(cand.size)])))
    return out


def random_violating_loop_python(d: list, y: list, margin: float, anchors: range, rng):
    out = []
    b = len(y)
    for a in anchors:
        row = d[a]
        for p in range(a + 1, b):
            if y[p] != y[a]:
                continue
            hi = row[p] + margin
            cand = [n for n in range(b) if y[n] != y[a] and row[n] < hi]
            if cand:
                out.append((a, p, cand[int(rng.integers(len(cand)))]))
    return out


# ----------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=45)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--subset-people", type=int, default=3, help="identities timed in loop B")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loop-repeats", type=int, default=3, help="runs of loop A (median)")
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: the loop references are single-threaded too)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    x, y = make_batch(args.people, args.images, args.dim)
    b = len(y)
    d = pairwise_squared_distances(x)
    d_np, y_np = d.numpy().astype(np.float32), y.numpy()
    d_list, y_list = d_np.tolist(), y_np.tolist()
    sub = range(args.subset_people * args.images)
    scale = b / len(sub)
    print(
        f"batch: {args.people} people x {args.images} images = {b} embeddings, dim {args.dim}, "
        f"margin {MARGIN}, torch threads {torch.get_num_threads()}"
    )
    print(
        "loop A = Python loop over anchor-positive pairs, NumPy over negatives, whole batch, "
        f"median of {args.loop_repeats} runs"
    )
    print(
        f"loop B = plain Python over pairs and negatives, timed once on the {len(sub)} anchors "
        f"of {args.subset_people} identities and scaled x{scale:.1f} to the whole batch"
    )

    # --- semi-hard
    semi_hard(d, y, MARGIN)  # warm-up
    t_vec, (a, p, n) = timed(lambda: semi_hard(d, y, MARGIN), args.repeats)
    vec = sorted(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    t_a, loop_a = timed(lambda: semi_hard_loop_numpy(d_np, y_np, MARGIN), args.loop_repeats)
    t_b, loop_b = timed(lambda: semi_hard_loop_python(d_list, y_list, MARGIN, sub))
    assert sorted(loop_a) == vec, "semi-hard: loop A and vectorised selections differ"
    assert loop_b == [t for t in vec if t[0] < len(sub)], "semi-hard: loop B differs"
    t_b *= scale
    print(f"semi-hard triplets selected: {len(vec)} (one per anchor-positive pair with one)")
    print(
        f"semi-hard: vectorised {t_vec:.4f} s, loop B {t_b:.2f} s (plain Python, scaled), "
        f"speed-up {t_b / t_vec:.0f}x"
    )
    print(
        f"semi-hard: vectorised {t_vec:.4f} s, loop A {t_a:.2f} s (NumPy inner), "
        f"speed-up {t_a / t_vec:.1f}x"
    )

    # --- random-violating
    gen = torch.Generator().manual_seed(0)
    random_violating(d, y, MARGIN, generator=gen)  # warm-up
    t_vec, (a, p, n) = timed(lambda: random_violating(d, y, MARGIN, generator=gen), args.repeats)
    rng = np.random.default_rng(0)
    t_a, loop_a = timed(
        lambda: random_violating_loop_numpy(d_np, y_np, MARGIN, rng), args.loop_repeats
    )
    t_b, loop_b = timed(lambda: random_violating_loop_python(d_list, y_list, MARGIN, sub, rng))
    t_b *= scale
    assert sorted((i, j) for i, j, _ in loop_a) == sorted(
        zip(a.tolist(), p.tolist(), strict=True)
    ), "random-violating: loop A and vectorised select different pairs"
    ok = (y[n] != y[a]) & (d[a, n] < d[a, p] + MARGIN)
    assert bool(ok.all()), "random-violating: a selected negative breaks the rule"
    print(f"random-violating triplets selected: {a.numel()}")
    print(
        f"random-violating: vectorised {t_vec:.4f} s, loop B {t_b:.2f} s (plain Python, "
        f"scaled), speed-up {t_b / t_vec:.0f}x"
    )
    print(
        f"random-violating: vectorised {t_vec:.4f} s, loop A {t_a:.2f} s (NumPy inner), "
        f"speed-up {t_a / t_vec:.1f}x"
    )

    # --- pytorch-metric-learning
    try:
        from pytorch_metric_learning.distances import LpDistance
        from pytorch_metric_learning.miners import TripletMarginMiner
    except ImportError:
        print("pytorch_metric_learning not importable: PML comparison skipped")
        return
    miner = TripletMarginMiner(
        margin=MARGIN, type_of_triplets="semihard", distance=LpDistance(power=2)
    )
    ours = SemiHardMiner(MARGIN)  # squared L2 on L2-normalised embeddings: semi_hard inside
    t_sh, _ = timed(lambda: ours(x, y), args.repeats)
    try:
        t_pml, (pa, _, _) = timed(lambda: miner(x, y))
    except (RuntimeError, MemoryError) as exc:  # it materialises all B*(K-1)*(B-K) triplets
        print(f"PML TripletMarginMiner(semihard) failed on this batch: {exc}")
        return
    print(
        f"PML TripletMarginMiner(semihard, squared L2): {pa.numel()} triplets -- it returns ALL "
        f"semi-hard triplets; ours picks one per anchor-positive pair"
    )
    print(
        f"semi-hard vs PML: our SemiHardMiner {t_sh:.4f} s (distances + selection, from the "
        f"embeddings like PML), PML {t_pml:.2f} s (timed once), speed-up {t_pml / t_sh:.0f}x"
    )


if __name__ == "__main__":
    main()
