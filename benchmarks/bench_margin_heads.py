"""Time our normalised-softmax heads against pytorch-metric-learning's on equal work.

    python benchmarks/bench_margin_heads.py [--dim 512] [--batch 256] [--classes 10000]
        [--repeats 10] [--threads N] [--heads normface,arcface,...] [--device cpu|cuda]

Problem: ``batch`` embeddings of dimension ``dim`` and ``classes`` classes (default 256 x 512,
10,000 classes). The embeddings lie around their class's weight direction with norms spread
over [10, 110] (so that target angles, SphereFace's ``||x||`` and MagFace's magnitude vary).
Compared, for each head that both libraries have (``s = 64`` wherever a scale applies):

* ``normface``          <-> ``NormalizedSoftmaxLoss(temperature=1/s)``
* ``cosface`` (m 0.35)  <-> ``CosFaceLoss(margin=0.35, scale=s)``
* ``arcface`` (m 0.5)   <-> ``ArcFaceLoss(margin=degrees(0.5), scale=s)`` (PML's margin is in degrees)
* ``sphereface`` (m 4, ``base=0, lambda_min=0``: plain A-Softmax, no annealing)
  <-> ``SphereFaceLoss(margin=4, scale=1)``
* ``subcenter-arcface`` (K 3) <-> ``SubCenterArcFaceLoss(sub_centers=3, margin=degrees(0.5))``

Both get the SAME class weights (ours ``.weight`` is ``[C*K, D]`` with row ``j*K + k``, PML's
``.W`` is its transpose ``[D, C*K]`` with column ``j*K + k``), the same embeddings and labels;
the two loss values are asserted to agree (relative tolerance 1e-4) and printed, with the
relative difference ``||g_ours - g_PML|| / ||g_PML||`` of the embedding gradients, before
anything is timed. Timed: forward + backward (gradients reset between runs), median of
``--repeats`` runs after 2 warm-ups, ours and PML's runs interleaved so that load from other
processes affects both alike; ``torch.set_num_threads(--threads)`` (default: all available
cores). Our ``adaface`` and ``magface`` (no PML equivalent) are timed alone for reference.
Without ``pytorch_metric_learning`` only ours are timed. ``--device cuda`` synchronises around
each run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from facemetric.losses import build_loss

SCALE = 64.0
ALL_HEADS = ("normface", "cosface", "arcface", "sphereface", "subcenter-arcface", "adaface", "magface")
SUB_CENTERS = 3
REL_TOL = 1e-4
WARMUPS = 2


def ours(name: str, dim: int, classes: int):
    if name == "sphereface":
        return build_loss(name, embedding_dim=dim, num_classes=classes, margin=4, base=0.0, lambda_min=0.0)
    if name == "cosface":
        return build_loss(name, embedding_dim=dim, num_classes=classes, margin=0.35, scale=SCALE)
    if name in ("arcface", "subcenter-arcface"):
        extra = {"sub_centers": SUB_CENTERS} if name == "subcenter-arcface" else {}
        return build_loss(name, embedding_dim=dim, num_classes=classes, margin=0.5, scale=SCALE, **extra)
    return build_loss(name, embedding_dim=dim, num_classes=classes, scale=SCALE)


def pml(name: str, dim: int, classes: int):
    """PML's equivalent of our head ``name`` (None where it has none)."""
    from pytorch_metric_learning import losses

    margin_deg = float(np.degrees(0.5))
    if name == "normface":
        return losses.NormalizedSoftmaxLoss(classes, dim, temperature=1.0 / SCALE)
    if name == "cosface":
        return losses.CosFaceLoss(classes, dim, margin=0.35, scale=SCALE)
    if name == "arcface":
        return losses.ArcFaceLoss(classes, dim, margin=margin_deg, scale=SCALE)
    if name == "sphereface":
        return losses.SphereFaceLoss(classes, dim, margin=4, scale=1)
    if name == "subcenter-arcface":
        return losses.SubCenterArcFaceLoss(
            num_classes=classes, embedding_size=dim, margin=margin_deg, scale=SCALE,
            sub_centers=SUB_CENTERS,
        )
    return None


def make_embeddings(weight: torch.Tensor, labels: torch.Tensor, sub_centers: int, seed: int = 0):
    """Embeddings near a (random) sub-center of their class, angles ~40-80 deg, norms 10-110."""
    g = torch.Generator().manual_seed(seed)
    b, d = labels.numel(), weight.shape[1]
    k = torch.randint(sub_centers, (b,), generator=g)
    centre = F.normalize(weight[labels * sub_centers + k].detach(), dim=1)
    noise = F.normalize(torch.randn(b, d, generator=g), dim=1)
    mix = torch.rand(b, 1, generator=g) * 0.8 + 0.2  # weight of the class direction
    direction = F.normalize(mix * centre + (1 - mix) * noise, dim=1)
    norms = torch.rand(b, 1, generator=g) * 100 + 10
    return direction * norms


def fwd_bwd_timer(loss, x, labels, device: torch.device):
    """A function that runs forward + backward once (gradients reset) and returns its seconds."""

    def run() -> float:
        x.grad = None
        loss.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss(x, labels).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    return run


def median_times(runs, repeats: int) -> list[float]:
    """Median seconds of each of ``runs`` after the warm-ups, the runs interleaved (alternating
    order) so that load from other processes affects each of them alike."""
    for run in runs:
        for _ in range(WARMUPS):
            run()
    times = [[] for _ in runs]
    for r in range(repeats):
        order = range(len(runs)) if r % 2 == 0 else reversed(range(len(runs)))
        for i in order:
            times[i].append(runs[i]())
    return [statistics.median(t) for t in times]


def value_and_grad(loss, x, labels):
    x.grad = None
    loss.zero_grad(set_to_none=True)
    value = loss(x, labels)
    value.backward()
    return float(value.detach()), x.grad.detach().clone()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--classes", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)),
        help="torch threads (default: all available cores)",
    )
    ap.add_argument(
        "--heads", default=",".join(ALL_HEADS), help=f"comma-separated subset of {','.join(ALL_HEADS)}"
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    unknown = sorted(set(heads) - set(ALL_HEADS))
    if unknown:
        ap.error(f"--heads: unknown {unknown}; choose from {', '.join(ALL_HEADS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    try:
        import pytorch_metric_learning

        have_pml = True
        pml_version = pytorch_metric_learning.__version__
    except ImportError:
        have_pml = False
        print("pytorch_metric_learning not importable: timing facemetric's heads only")

    print(
        f"problem: batch {args.batch} x dim {args.dim}, {args.classes} classes, s = {SCALE:g}, "
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}"
        + (f", pytorch-metric-learning {pml_version}" if have_pml else "")
    )
    print(f"timed: forward + backward, median of {args.repeats} runs after {WARMUPS} warm-ups")
    print()

    g = torch.Generator().manual_seed(1)
    labels_cpu = torch.randint(args.classes, (args.batch,), generator=g)
    labels = labels_cpu.to(device)
    rows = []  # (head, ours ms, pml ms or None)
    for name in heads:
        torch.manual_seed(0)
        head = ours(name, args.dim, args.classes)
        k = getattr(head, "sub_centers", 1)
        x = make_embeddings(head.weight, labels_cpu, k).to(device).requires_grad_(True)
        head = head.to(device)
        other = pml(name, args.dim, args.classes) if have_pml else None
        if other is not None:
            assert tuple(other.W.shape) == tuple(head.weight.t().shape), (other.W.shape, head.weight.shape)
            with torch.no_grad():
                other.W.copy_(head.weight.detach().t())
            other = other.to(device)
            v_ours, g_ours = value_and_grad(head, x, labels)
            v_pml, g_pml = value_and_grad(other, x, labels)
            rel = abs(v_ours - v_pml) / max(abs(v_pml), 1e-12)
            grad_rel = float((g_ours - g_pml).norm() / g_pml.norm().clamp_min(1e-30))
            print(
                f"{name:<18} loss: facemetric {v_ours:.6f}, PML {v_pml:.6f}, rel. diff {rel:.1e}; "
                f"embedding-gradient rel. diff {grad_rel:.1e}"
            )
            assert rel <= REL_TOL, f"{name}: losses differ: facemetric {v_ours!r}, PML {v_pml!r}"
        runs = [fwd_bwd_timer(head, x, labels, device)]
        if other is not None:
            runs.append(fwd_bwd_timer(other, x, labels, device))
        t_ours, *t_pml = median_times(runs, args.repeats)
        rows.append((name, t_ours, t_pml[0] if t_pml else None))

    print()
    print(f"{'head':<18} {'facemetric ms':>14} {'PML ms':>10} {'PML/ours':>9}")
    for name, t_ours, t_pml in rows:
        if t_pml is None:
            note = "(no PML equivalent)" if have_pml else ""
            print(f"{name:<18} {t_ours * 1e3:>14.2f} {'-':>10} {'-':>9}  {note}".rstrip())
        else:
            print(f"{name:<18} {t_ours * 1e3:>14.2f} {t_pml * 1e3:>10.2f} {t_pml / t_ours:>8.2f}x")
    if any(t is not None for _, _, t in rows):
        print("PML/ours > 1 means facemetric is faster")


if __name__ == "__main__":
    main()
