"""Generated verification pairs: balanced genuine/impostor pairs with fold ids, seeded.

Folds follow the LFW protocol's spirit: when there are at least ``n_folds`` identities, the
identities are split into folds and every pair of a fold uses only that fold's identities
(identity-disjoint folds); otherwise (e.g. the 10 digits) the images are split into folds,
stratified by identity, and pairs use images of their own fold only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facemetric.errors import DataError


@dataclass
class PairList:
    """Pairs of dataset indices: ``first[i]``, ``second[i]``, ``issame[i]``, ``fold[i]``."""

    first: np.ndarray
    second: np.ndarray
    issame: np.ndarray
    fold: np.ndarray

    def __len__(self) -> int:
        return int(self.first.shape[0])


def _sample_fold(
    members: dict[int, np.ndarray], n_genuine: int, n_impostor: int, rng: np.random.Generator
) -> list[tuple[int, int, bool]]:
    ids = [k for k in members if len(members[k]) > 0]
    multi = [k for k in ids if len(members[k]) >= 2]
    if not multi or len(ids) < 2:
        raise DataError("pairs: a fold needs an identity with 2+ images and 2+ identities")
    out: list[tuple[int, int, bool]] = []
    seen: set[tuple[int, int]] = set()
    max_tries = 50 * (n_genuine + n_impostor) + 1000
    tries = 0
    while sum(1 for p in out if p[2]) < n_genuine:
        tries += 1
        if tries > max_tries:
            raise DataError(f"pairs: cannot draw {n_genuine} distinct genuine pairs in a fold")
        k = multi[rng.integers(len(multi))]
        a, b = rng.choice(members[k], size=2, replace=False)
        key = (min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            out.append((int(a), int(b), True))
    tries = 0
    while sum(1 for p in out if not p[2]) < n_impostor:
        tries += 1
        if tries > max_tries:
            raise DataError(f"pairs: cannot draw {n_impostor} distinct impostor pairs in a fold")
        k1, k2 = rng.choice(len(ids), size=2, replace=False)
        a = rng.choice(members[ids[k1]])
        b = rng.choice(members[ids[k2]])
        key = (min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            out.append((int(a), int(b), False))
    return out


def generate_pairs(
    labels: np.ndarray, pairs_per_fold: int = 600, n_folds: int = 10, seed: int = 0
) -> PairList:
    """Draw ``pairs_per_fold`` pairs per fold (half genuine, half impostor), without repeats."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise DataError("labels: expected a non-empty 1-D array of identity ids")
    if n_folds < 2 or pairs_per_fold < 2:
        raise DataError(f"pairs: expected n_folds >= 2 and pairs_per_fold >= 2, got {n_folds}, {pairs_per_fold}")
    rng = np.random.default_rng(seed)
    identities = np.unique(labels)
    fold_members: list[dict[int, np.ndarray]] = [{} for _ in range(n_folds)]
    if len(identities) >= 2 * n_folds:
        order = rng.permutation(identities)
        for f in range(n_folds):
            for k in order[f::n_folds]:
                fold_members[f][int(k)] = np.flatnonzero(labels == k)
    else:
        for k in identities:
            members = rng.permutation(np.flatnonzero(labels == k))
            for f in range(n_folds):
                fold_members[f][int(k)] = members[f::n_folds]
    n_genuine = pairs_per_fold // 2
    rows: list[tuple[int, int, bool, int]] = []
    for f in range(n_folds):
        fold_pairs = _sample_fold(fold_members[f], n_genuine, pairs_per_fold - n_genuine, rng)
        rows.extend((a, b, s, f) for a, b, s in fold_pairs)
    arr = np.array([(a, b, s, f) for a, b, s, f in rows], dtype=np.int64)
    return PairList(first=arr[:, 0], second=arr[:, 1], issame=arr[:, 2].astype(bool), fold=arr[:, 3])
