"""1:N identification: closed-set rank-k / CMC and open-set DIR@FAR (NIST FRVT definitions).

A gallery holds enrolled images with identity labels; probes are searched against it. The
score of a probe ``q`` for identity ``c`` is the cosine similarity aggregated over ``c``'s
gallery images: ``max`` (default) or ``mean`` (see :mod:`facemetric.index.search`). A probe
is *mated* when its label is enrolled, *non-mated* otherwise.

* rank of a mated probe = ``1 + #{identities c != true : S(q, c) > S(q, true)}`` (ties are
  resolved in favour of the true identity).
* ``CMC(r)`` = fraction of mated probes with rank ``<= r``; ``rank_1 = CMC(1)``, ...
* Open set, at threshold ``t`` (Phillips et al., "Face recognition vendor test 2002";
  Grother et al., NIST FRVT 1:N): ``DIR(t)`` = fraction of mated probes whose true identity
  is at rank 1 with ``S >= t``; ``FAR(t)`` (false-positive identification rate) = fraction of
  non-mated probes whose top score is ``>= t``. ``DIR@FAR=a`` uses the lowest ``t`` with
  ``FAR(t) <= a`` (:func:`facemetric.eval.open_set.threshold_at_far`: just above the
  ``(k+1)``-th highest non-mated top score, ``k`` = largest count with ``k / n <= a``);
  levels with fewer than ``1 / a`` non-mated probes are skipped (listed).

Scores come in blocks of probes x identities (``max`` via a scatter-max of blocks of image
scores), so memory stays bounded for large galleries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facemetric.errors import FacemetricError
from facemetric.eval.open_set import card_open_set_threshold, check_far, threshold_at_far
from facemetric.index.search import as_embeddings, identity_score_blocks

FAR_LEVELS = (1e-3, 1e-2, 1e-1)


def _far_key(level: float) -> str:
    return f"{level:.0e}"


def _check_labels(labels: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(labels)
    if a.ndim != 1:
        raise FacemetricError(f"{name}: expected a 1-D array of labels, got shape {a.shape}")
    if a.size != n:
        raise FacemetricError(f"{name}: expected {n} labels (one per embedding), got {a.size}")
    return a


def identification_scores(
    gallery_embeddings: Any,
    gallery_labels: Any,
    probe_embeddings: Any,
    probe_labels: Any,
    by: str = "max",
) -> dict[str, np.ndarray]:
    """Per probe: ``true_score`` (score of its own identity; nan if non-mated), ``rank``
    (0 if non-mated), ``top_score``, ``top_identity`` (index into ``identities``), ``mated``;
    plus ``identities`` (the sorted distinct gallery labels)."""
    g = as_embeddings(gallery_embeddings, "gallery_embeddings")
    p = as_embeddings(probe_embeddings, "probe_embeddings", g.shape[1])
    gl = _check_labels(gallery_labels, g.shape[0], "gallery_labels")
    pl = _check_labels(probe_labels, p.shape[0], "probe_labels")
    try:
        identities, row_identity = np.unique(gl, return_inverse=True)
        pos = np.searchsorted(identities, pl)
    except TypeError:
        raise FacemetricError("probe_labels: labels must be comparable with gallery_labels") from None
    pos = np.clip(pos, 0, identities.size - 1)
    mated = identities[pos] == pl
    own = np.where(mated, pos, -1)
    nq = p.shape[0]
    true_score = np.full(nq, np.nan)
    rank = np.zeros(nq, dtype=np.int64)
    top_score = np.empty(nq)
    top_identity = np.empty(nq, dtype=np.int64)
    for q0, s in identity_score_blocks(p, g, row_identity.astype(np.int64), identities.size, by):
        sl = slice(q0, q0 + s.shape[0])
        top_identity[sl] = s.argmax(axis=1)
        top_score[sl] = s.max(axis=1)
        o = own[sl]
        m = o >= 0
        ts = np.full(s.shape[0], np.nan)
        ts[m] = s[np.flatnonzero(m), o[m]]
        true_score[sl] = ts
        r = np.zeros(s.shape[0], dtype=np.int64)
        r[m] = 1 + np.count_nonzero(s[m] > ts[m, None], axis=1)
        rank[sl] = r
    return {
        "true_score": true_score,
        "rank": rank,
        "top_score": top_score,
        "top_identity": top_identity,
        "mated": mated,
        "identities": identities,
    }


def evaluate_identification(
    gallery_embeddings: Any,
    gallery_labels: Any,
    probe_embeddings: Any,
    probe_labels: Any,
    by: str = "max",
    ranks: Sequence[int] = (1, 5),
    far_levels: Sequence[float] = FAR_LEVELS,
    max_rank: int | None = None,
    thresholds: Sequence[float] = (),
) -> dict[str, Any]:
    """Closed-set rank-k and CMC on the mated probes, open-set DIR@FAR on all probes.

    ``thresholds``: also the open-set ``far`` and ``dir`` at these given cosine thresholds
    (key ``at_threshold``: a list of ``{"threshold", "far", "dir"}``).

    Keys: ``rank_<r>`` for each of ``ranks``; ``cmc`` (``CMC(1..R)``, ``R = max_rank`` or the
    number of identities); ``dir_at_far`` / ``far_at_threshold`` / ``threshold_at_far``
    (``{"1e-03": ...}``), ``dir_at_far_skipped``; ``num_mated``, ``num_non_mated``,
    ``num_identities``, ``num_gallery``, ``by``. Plain Python values (JSON-serialisable);
    closed-set keys are nan without mated probes.
    """
    r = identification_scores(gallery_embeddings, gallery_labels, probe_embeddings, probe_labels, by)
    mated = r["mated"]
    m_ident = int(r["identities"].size)
    levels = [check_far(lv, "far_levels") for lv in far_levels]
    for k in ranks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise FacemetricError(f"ranks: expected integers >= 1, got {k!r}")
    n_mated = int(mated.sum())
    n_non = int((~mated).sum())
    length = m_ident if max_rank is None else min(int(max_rank), m_ident)
    if n_mated:
        hist = np.bincount(r["rank"][mated], minlength=m_ident + 1)[1:]
        cmc = np.cumsum(hist) / n_mated
    else:
        cmc = np.full(m_ident, np.nan)
    out: dict[str, Any] = {}
    for k in ranks:
        out[f"rank_{k}"] = float(cmc[min(k, m_ident) - 1])
    out["cmc"] = cmc[:length].tolist()
    dir_at, far_at, thr_at, skipped = {}, {}, {}, []
    non_top = r["top_score"][~mated]
    hit = (r["rank"] == 1) & mated
    for lv in levels:
        if n_non * lv < 1.0 - 1e-9:
            skipped.append(_far_key(lv))
            continue
        t = threshold_at_far(non_top, lv)
        thr_at[_far_key(lv)] = t
        far_at[_far_key(lv)] = float(np.count_nonzero(non_top >= t) / n_non)
        dir_at[_far_key(lv)] = (
            float(np.count_nonzero(hit & (r["true_score"] >= t)) / n_mated) if n_mated else float("nan")
        )
    at_threshold = []
    for t in thresholds:
        t = float(t)
        at_threshold.append({
            "threshold": t,
            "far": float(np.count_nonzero(non_top >= t) / n_non) if n_non else float("nan"),
            "dir": float(np.count_nonzero(hit & (r["true_score"] >= t)) / n_mated) if n_mated else float("nan"),
        })
    if at_threshold:
        out["at_threshold"] = at_threshold
    out.update(
        {
            "dir_at_far": dir_at,
            "far_at_threshold": far_at,
            "threshold_at_far": thr_at,
            "dir_at_far_skipped": skipped,
            "num_mated": n_mated,
            "num_non_mated": n_non,
            "num_identities": m_ident,
            "num_gallery": int(np.asarray(gallery_labels).size),
            "by": by,
        }
    )
    return out


@dataclass(frozen=True)
class GalleryProbeSplit:
    """Indices into the labelled set: ``gallery`` (enrolled), ``probes``, and ``mated`` (per
    probe: its identity is enrolled)."""

    gallery: np.ndarray
    probes: np.ndarray
    mated: np.ndarray

    @property
    def num_mated(self) -> int:
        return int(self.mated.sum())

    @property
    def num_non_mated(self) -> int:
        return int((~self.mated).sum())


def gallery_probe_split(
    labels: Any, seed: int = 0, n_enrol: int = 1, impostor_fraction: float = 0.0
) -> GalleryProbeSplit:
    """An identification split of any labelled set (e.g. an identity folder such as LFW).

    Identities with more than ``n_enrol`` images are *enrollable*: ``n_enrol`` random images
    of each are enrolled, the others become mated probes -- except that a random
    ``impostor_fraction`` of the enrollable identities is held out entirely. Identities with
    at most ``n_enrol`` images and the held-out ones give the non-mated (impostor) probes,
    all their images. (LFW with ``n_enrol=1``: the 1,680 people with >= 2 images enrolled
    once each, their other images mated probes, the 4,069 single-image people impostors.)
    Deterministic for a ``seed``; index arrays are sorted.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise FacemetricError(f"labels: expected a non-empty 1-D array, got shape {y.shape}")
    if isinstance(n_enrol, bool) or not isinstance(n_enrol, (int, np.integer)) or n_enrol < 1:
        raise FacemetricError(f"n_enrol: expected an integer >= 1, got {n_enrol!r}")
    try:
        f = float(impostor_fraction)
    except (TypeError, ValueError):
        raise FacemetricError(f"impostor_fraction: expected a number in [0, 1), got {impostor_fraction!r}") from None
    if not 0.0 <= f < 1.0:
        raise FacemetricError(f"impostor_fraction: expected a number in [0, 1), got {impostor_fraction!r}")
    rng = np.random.default_rng(seed)
    _, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    enrollable = np.flatnonzero(counts > n_enrol)
    if enrollable.size == 0:
        raise FacemetricError(f"labels: no identity has more than n_enrol={n_enrol} images to enrol and probe")
    n_hold = int(round(f * enrollable.size))
    held = rng.choice(enrollable, n_hold, replace=False) if n_hold else np.zeros(0, np.int64)
    enrolled = np.zeros(counts.size, dtype=bool)
    enrolled[enrollable] = True
    enrolled[held] = False
    if not enrolled.any():
        raise FacemetricError("impostor_fraction: leaves no identity enrolled")
    # a random order of the images, then the first n_enrol of each enrolled identity
    order = rng.permutation(y.size)
    by_ident = order[np.argsort(inv[order], kind="stable")]
    starts = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    pos_in_ident = np.empty(y.size, dtype=np.int64)
    pos_in_ident[by_ident] = np.arange(y.size) - np.repeat(starts[:-1], counts)
    in_gallery = enrolled[inv] & (pos_in_ident < n_enrol)
    gallery = np.flatnonzero(in_gallery)
    probes = np.flatnonzero(~in_gallery)
    return GalleryProbeSplit(gallery, probes, enrolled[inv[probes]])


def identification_report(
    embeddings: Any,
    n_enrol: int = 1,
    impostor_fraction: float = 0.0,
    seed: int = 0,
    repeats: int = 1,
    by: str = "max",
    ranks: Sequence[int] = (1, 5, 10),
    far_levels: Sequence[float] = FAR_LEVELS,
    max_rank: int = 50,
    default_far: float = 0.01,
) -> dict[str, Any]:
    """Identification on a labelled :class:`~facemetric.eval.embedding_set.EmbeddingSet`:
    :func:`gallery_probe_split` (``n_enrol``, ``impostor_fraction``) then
    :func:`evaluate_identification` on cosine scores of the L2-normalised embeddings.

    With ``repeats > 1`` the split is drawn with seeds ``seed .. seed + repeats - 1`` (useful
    on small sets such as ORL) and every metric is the mean over the draws, with ``<key>_std``
    beside it and the draws under ``runs``. Keys: those of :func:`evaluate_identification`
    (``rank_<r>``, ``cmc`` up to ``max_rank``, ``dir_at_far``, ...) plus ``protocol``
    (the split's settings and sizes) and ``data`` (the set's summary). When the model card
    has an impostor tail, ``default_threshold`` gives the size-aware open-set threshold for
    ``default_far`` (:mod:`facemetric.eval.open_set`, as ``facemetric identify`` uses it)
    with the ``far`` and ``dir`` it achieves on this split.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise FacemetricError(f"repeats: expected an integer >= 1, got {repeats!r}")
    unit = embeddings.unit()
    ids = embeddings.identities
    runs = []
    for r in range(int(repeats)):
        split = gallery_probe_split(ids, seed=seed + r, n_enrol=n_enrol, impostor_fraction=impostor_fraction)
        n_ref = split.gallery.size if by == "max" else int(np.unique(ids[split.gallery]).size)
        default_t = card_open_set_threshold(embeddings.card, n_ref, default_far)
        res = evaluate_identification(
            unit[split.gallery], ids[split.gallery], unit[split.probes], ids[split.probes],
            by=by, ranks=ranks, far_levels=far_levels, max_rank=max_rank,
            thresholds=() if default_t is None else (default_t,),
        )
        if default_t is not None:
            res["default_threshold"] = {**res.pop("at_threshold")[0], "far_target": default_far}
        res["seed"] = seed + r
        runs.append(res)
    out: dict[str, Any] = dict(runs[0]) if repeats == 1 else _mean_of_runs(runs, ranks)
    out.pop("seed", None)
    out["protocol"] = {
        "n_enrol": int(n_enrol),
        "impostor_fraction": float(impostor_fraction),
        "seed": int(seed),
        "repeats": int(repeats),
        "by": by,
        "score": "cosine similarity of L2-normalised embeddings",
        "enrolled_identities": runs[0]["num_identities"],
        "gallery_images": runs[0]["num_gallery"],
        "mated_probes": runs[0]["num_mated"],
        "non_mated_probes": runs[0]["num_non_mated"],
    }
    out["data"] = embeddings.summary()
    if repeats > 1:
        out["runs"] = runs
    return out


def _mean_of_runs(runs: list[dict[str, Any]], ranks: Sequence[int]) -> dict[str, Any]:
    """Mean (and ``_std``) over split draws of the scalar and per-FAR metrics; CMC averaged."""
    out: dict[str, Any] = dict(runs[0])
    for k in ranks:
        v = np.array([r[f"rank_{k}"] for r in runs])
        out[f"rank_{k}"], out[f"rank_{k}_std"] = float(v.mean()), float(v.std())
    length = min(len(r["cmc"]) for r in runs)
    out["cmc"] = np.mean([r["cmc"][:length] for r in runs], axis=0).tolist()
    for key in ("dir_at_far", "far_at_threshold", "threshold_at_far"):
        levels = set.intersection(*(set(r[key]) for r in runs))
        out[key] = {lv: float(np.mean([r[key][lv] for r in runs])) for lv in sorted(levels)}
        if key == "dir_at_far":
            out["dir_at_far_std"] = {lv: float(np.std([r[key][lv] for r in runs])) for lv in sorted(levels)}
    for key in ("num_mated", "num_non_mated", "num_identities", "num_gallery"):
        out[key] = float(np.mean([r[key] for r in runs]))
    if all("default_threshold" in r for r in runs):
        out["default_threshold"] = {
            k: float(np.mean([r["default_threshold"][k] for r in runs]))
            for k in ("threshold", "far", "dir", "far_target")
        }
    return out


__all__ = [
    "FAR_LEVELS",
    "GalleryProbeSplit",
    "evaluate_identification",
    "gallery_probe_split",
    "identification_report",
    "identification_scores",
]
