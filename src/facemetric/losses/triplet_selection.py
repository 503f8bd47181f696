"""Online triplet selection on the batch distance matrix (FaceNet and successors).

Every strategy is a function ``fn(d, labels, margin, ...) -> (a, p, n)`` of the squared
distance matrix ``d [B, B]`` of one batch and its integer ``labels [B]``; it returns three
``LongTensor`` index vectors of equal length, one entry per selected triplet
``(anchor, positive, negative)`` with ``labels[a] == labels[p]``, ``a != p`` and
``labels[n] != labels[a]``. Selection is not differentiated: call the strategies on a detached
matrix (:class:`facemetric.losses.triplet.TripletLoss` does).

All strategies are vectorised; none loops in Python over anchors, pairs or negatives.
:func:`semi_hard` and :func:`random_violating` on a CPU float32 matrix (batches up to 65,536)
sort only each row's *band* -- the negatives below the row's largest ``d(a,p) + margin``, the
only ones any pair of the row can choose -- as packed integer keys ``(row, distance,
column)`` in one flat NumPy sort, and answer every pair with one ``searchsorted``
(:func:`_band_keys`); elsewhere they sort whole rows of the masked negative distances
(:func:`_sort_rows`). Both paths pick exactly the same triplets (ties to the lowest column),
and :func:`random_violating` draws the same uniforms in the same order on both. :func:`all_violating` materialises a ``[pairs, B]``
mask and does so in chunks of pairs when that mask would be large (for a 1,800-image batch: a
handful of chunks), which bounds its memory and is not a per-pair loop.

Strategies, by name (:data:`STRATEGIES`):

* ``"semi-hard"`` -- :func:`semi_hard`, FaceNet's semi-hard negatives (Schroff et al. 2015);
* ``"random-violating"`` -- :func:`random_violating`, ``select_triplets`` of the
  davidsandberg/facenet repository;
* ``"hard"`` (alias ``"batch-hard"``) -- :func:`batch_hard`, Hermans et al. 2017;
* ``"all"`` -- :func:`all_violating`, every margin-violating triplet.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from facemetric.distances import pairwise_squared_distances  # noqa: F401  (re-export)

Triplets = tuple[Tensor, Tensor, Tensor]

#: largest number of elements of the ``[pairs, B]`` mask :func:`all_violating` builds at once
_CHUNK_ELEMENTS = 1 << 24


def label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(positive, negative)`` boolean ``[B, B]`` masks.

    ``positive[a, p]``: same label and ``a != p``; ``negative[a, n]``: different label.
    """
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def count_valid_triplets(labels: Tensor) -> int:
    """Number of valid ``(a, p, n)``: ``sum_a #positives(a) * #negatives(a)`` (ordered pairs)."""
    pos, neg = label_masks(labels)
    return int((pos.sum(dim=1) * neg.sum(dim=1)).sum())


def _empty(device: torch.device) -> Triplets:
    e = torch.empty(0, dtype=torch.long, device=device)
    return e, e.clone(), e.clone()


def _sort_rows(values: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.sort(values, dim=1, stable=True)``: each row ascending, ties in index order.

    On the CPU in float32 this packs every entry into one int64 key (an order-preserving
    integer image of the float in the high 32 bits, the column in the low 32 bits) and sorts
    the keys with NumPy, which is several times faster than ``torch.sort`` on the CPU and gives
    the same result (the keys are unique, so their order is the stable order). Other devices
    and dtypes use ``torch.sort(stable=True)``.
    """
    rows, cols = values.shape
    if values.device.type != "cpu" or values.dtype != torch.float32 or cols >= 2**31:
        return torch.sort(values, dim=1, stable=True)
    bits = (values.detach() + 0.0).numpy().view(np.int32)  # + 0.0 turns -0.0 into +0.0
    key = np.empty((rows, cols), dtype=np.int64)
    halves = key.view(np.int32).reshape(rows, cols, 2)  # little-endian: [low, high]
    if not np.little_endian:  # pragma: no cover
        halves = halves[..., ::-1]
    # monotone float -> int32 map: negative floats get their magnitude bits flipped
    np.bitwise_and(bits >> 31, 0x7FFFFFFF, out=halves[..., 1])
    halves[..., 1] ^= bits
    halves[..., 0] = np.arange(cols, dtype=np.int32)
    key.sort(axis=1)
    high = halves[..., 1]
    sorted_values = (high ^ ((high >> 31) & 0x7FFFFFFF)).view(np.float32)
    return torch.from_numpy(sorted_values), torch.from_numpy(halves[..., 0].astype(np.int64))


def _sorted_negatives(d: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's negative distances in ascending order (non-negatives as ``+inf`` at the end)
    and the column index of every sorted entry; ties between negatives keep index order."""
    same = labels[:, None] == labels[None, :]
    return _sort_rows(d.masked_fill(same, float("inf")))


def _positive_table(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every anchor's positives as a padded ``[B, K]`` table (K = largest identity size).

    Row ``a`` lists the batch indices of ``a``'s identity in ascending order; ``valid`` is
    False for padding and for ``a`` itself. Built from one sort of the labels.
    """
    b = labels.shape[0]
    order = torch.argsort(labels, stable=True)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    j = torch.arange(int(counts.max()), device=labels.device)
    slot = starts[inverse][:, None] + j[None, :]
    idx = order[slot.clamp(max=b - 1)]
    rows = torch.arange(b, device=labels.device)[:, None]
    valid = (j[None, :] < counts[inverse][:, None]) & (idx != rows)
    return idx, valid


#: entries of the distance matrix handled per block of rows on the packed-key path
_BLOCK_ELEMENTS = 1 << 17
#: largest batch the packed-key path handles (row and column take 16 bits each of the key)
_KEY_PATH_MAX_BATCH = 1 << 16
_U16 = np.uint64(16)
_U48 = np.uint64(48)


def _use_key_path(d: Tensor) -> bool:
    """Whether :func:`semi_hard` / :func:`random_violating` take the packed-key path."""
    return d.device.type == "cpu" and d.dtype == torch.float32 and d.shape[0] <= _KEY_PATH_MAX_BATCH


def _order_bits(values: np.ndarray, signed: bool) -> np.ndarray:
    """Order-preserving unsigned integer image of float32 ``values`` (as uint64, < 2**32).

    With ``signed=False`` (every value has its sign bit clear: distances) the bit patterns
    already order like the floats. With ``signed=True`` the general map: negative floats get
    their magnitude bits flipped, the sign bit is toggled, and ``-0.0`` maps like ``+0.0``.
    Keys and queries compared with each other must use the same ``signed``.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    if not signed:
        return values.view(np.uint32).astype(np.uint64)
    bits = (values + np.float32(0.0)).view(np.int32)
    bits = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).view(np.uint32) ^ np.uint32(0x80000000)
    return bits.astype(np.uint64)


def _same_identity_flat(pos_idx: np.ndarray, pos_ok: np.ndarray) -> np.ndarray:
    """Sorted flat indices ``a * B + j`` of the same-identity entries of the ``[B, B]``
    matrix (every anchor's positives and the diagonal), from the positive table."""
    b = pos_idx.shape[0]
    rows = np.broadcast_to(np.arange(b)[:, None], pos_idx.shape)
    flat = np.concatenate([(rows * b + pos_idx)[pos_ok], np.arange(b) * (b + 1)])
    flat.sort()
    return flat


def _band_keys(
    d: np.ndarray,
    same_flat: np.ndarray,
    hi: np.ndarray,
    signed: bool,
    rows: slice,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The negatives of rows ``rows`` with ``d[a, n] < hi[a]`` as sorted uint64 keys.

    Key of ``(a, n)``: ``a << 48 | u(d[a, n]) << 16 | n`` with ``u`` the order-preserving
    integer image of the float32 distance (:func:`_order_bits`). One flat sort of the keys
    orders every row's band by distance, ties by column: the order of a stable row sort of the
    negatives, restricted to the band. The same-identity entries (``same_flat``, from
    :func:`_same_identity_flat`) are left out. Returns the keys,
    ``starts [rows + 1]`` (row ``r``'s keys are ``keys[starts[r - rows.start]:...+1]``) and
    the ``signed`` flag of :func:`_order_bits` the queries must use (``signed`` as given, or
    True if a band value has its sign bit set).
    """
    b = d.shape[1]
    r0, r1 = rows.start, rows.stop
    block = d[r0:r1]
    mask = block < hi[r0:r1, None]
    lo_hi = np.searchsorted(same_flat, [r0 * b, r1 * b])
    mask.ravel()[same_flat[lo_hi[0] : lo_hi[1]] - r0 * b] = False
    flat = np.flatnonzero(mask)  # row-major; far cheaper than a 2-D nonzero or a boolean take
    starts = np.searchsorted(flat, np.arange(r1 - r0 + 1, dtype=np.int64) * b)
    # row << 48 | col == flat_in_block + row * 2**48 - local_row * b
    row_term = np.arange(r0, r1, dtype=np.int64) << 48
    row_term -= np.arange(r1 - r0, dtype=np.int64) * b
    offset = np.repeat(row_term, np.diff(starts))
    offset += flat
    values = block.ravel()[flat]
    signed = signed or bool(np.signbit(values).any())
    key = _order_bits(values, signed)
    key <<= _U16
    key += offset.view(np.uint64)
    key.sort()
    return key, starts, signed


def _row_blocks(b: int) -> list[slice]:
    """Blocks of whole rows of about :data:`_BLOCK_ELEMENTS` entries: each block's matrix
    slice, mask and keys stay in the CPU cache (a chunking of the work, not a loop over
    anchors)."""
    rows = max(1, _BLOCK_ELEMENTS // max(b, 1))
    return [slice(r, min(b, r + rows)) for r in range(0, b, rows)]


def _key_path_inputs(
    d: Tensor, labels: Tensor, valid: Tensor, d_ap: Tensor, margin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy views: ``(d, d_ap, d_ap + margin)`` (the sum in float32, as the sort path
    computes it)."""
    d_ap = d_ap.detach()
    return d.detach().contiguous().numpy(), d_ap.numpy(), (d_ap + margin).numpy()


def _query(rows: np.ndarray, values: np.ndarray, col: int, signed: bool) -> np.ndarray:
    """Keys ``row << 48 | u(value) << 16 | col`` to search the keys of :func:`_band_keys`."""
    q = _order_bits(values, signed) << _U16
    q |= np.uint64(col)
    q |= rows.astype(np.uint64) << _U48
    return q


def _semi_hard_keys(
    d: Tensor, labels: Tensor, pos_idx: Tensor, valid: Tensor, d_ap: Tensor, margin: float
) -> Triplets:
    """:func:`semi_hard` on a CPU float32 matrix without sorting whole rows.

    Only negatives below the row's ``max_p d(a,p) + margin`` can be chosen for any pair of
    the row, so only they are sorted (:func:`_band_keys`, by blocks of rows); for a pair,
    the first band key after ``(a, d(a,p), col=max)`` is the first negative strictly farther
    than the positive, ties to the lowest column -- the sort path's choice.
    """
    dn, dap, upper = _key_path_inputs(d, labels, valid, d_ap, margin)
    ok_pos, pidx = valid.numpy(), pos_idx.numpy()
    hi = np.where(ok_pos, upper, np.float32(-np.inf)).max(axis=1)
    a, j = np.nonzero(ok_pos)  # row-major: sorted by anchor
    q_lo, q_hi = dap[a, j], upper[a, j]
    signed = bool(np.signbit(q_lo).any() or np.signbit(q_hi).any())
    n = np.full(a.size, -1, dtype=np.int64)
    same_flat = _same_identity_flat(pidx, ok_pos)
    blocks = _row_blocks(d.shape[0])
    bounds = np.searchsorted(a, [blk.start for blk in blocks] + [d.shape[0]])
    first_keys, upper_keys = _query(a, q_lo, 0xFFFF, signed), _query(a, q_hi, 0, signed)
    for i, rows in enumerate(blocks):
        qs = slice(bounds[i], bounds[i + 1])
        if qs.start == qs.stop:
            continue
        keys, _, sgn = _band_keys(dn, same_flat, hi, signed, rows)
        if keys.size == 0:
            continue
        q_first, q_upper = first_keys[qs], upper_keys[qs]
        if sgn != signed:  # a negative distance in this block: the general order map
            q_first = _query(a[qs], q_lo[qs], 0xFFFF, sgn)
            q_upper = _query(a[qs], q_hi[qs], 0, sgn)
        pos = np.searchsorted(keys, q_first, side="right")
        found = keys[np.minimum(pos, keys.size - 1)]
        # same row and d(a, n) < d(a, p) + margin  <=>  key below (a, u(d_ap + margin), 0)
        ok = (pos < keys.size) & (found < q_upper)
        n[qs] = np.where(ok, (found & np.uint64(0xFFFF)).astype(np.int64), -1)
    ok = n >= 0
    a_t = torch.from_numpy(a[ok].astype(np.int64))
    return a_t, pos_idx[a_t, torch.from_numpy(j[ok].astype(np.int64))], torch.from_numpy(n[ok])


def _random_violating_keys(
    d: Tensor,
    labels: Tensor,
    pos_idx: Tensor,
    valid: Tensor,
    d_ap: Tensor,
    margin: float,
    generator: torch.Generator | None,
) -> Triplets:
    """:func:`random_violating` on a CPU float32 matrix without sorting whole rows.

    A pair's eligible negatives (``d(a,n) < d(a,p) + margin``) are a prefix of the row's
    negatives sorted by ``(distance, column)``; only the row's band below
    ``max_p d(a,p) + margin`` is sorted (:func:`_band_keys`, by blocks of rows). The count
    comes from one ``searchsorted`` and the chosen negative is ``band[floor(u * count)]``: the
    same uniforms, in the same pair order, pick the same negatives as the sort path.
    """
    b = d.shape[0]
    dn, _, upper = _key_path_inputs(d, labels, valid, d_ap, margin)
    ok_pos, pidx = valid.numpy(), pos_idx.numpy()
    pairs = ok_pos & (pidx > np.arange(b)[:, None])  # anchor before positive
    gen_device = generator.device if generator is not None else torch.device("cpu")
    n_pairs = int(pairs.sum())
    u = torch.rand(n_pairs, generator=generator, dtype=torch.float64, device=gen_device)
    u = u.cpu().numpy()
    hi = np.where(pairs, upper, np.float32(-np.inf)).max(axis=1)
    a, j = np.nonzero(pairs)  # row-major: the order in which the uniforms were drawn
    q_hi = upper[a, j]
    signed = bool(np.signbit(q_hi).any())
    n = np.full(a.size, -1, dtype=np.int64)
    same_flat = _same_identity_flat(pidx, ok_pos)
    blocks = _row_blocks(b)
    bounds = np.searchsorted(a, [blk.start for blk in blocks] + [b])
    upper_keys = _query(a, q_hi, 0, signed)
    for i, rows in enumerate(blocks):
        qs = slice(bounds[i], bounds[i + 1])
        if qs.start == qs.stop:
            continue
        keys, starts, sgn = _band_keys(dn, same_flat, hi, signed, rows)
        if keys.size == 0:
            continue
        q_upper = upper_keys[qs] if sgn == signed else _query(a[qs], q_hi[qs], 0, sgn)
        first = starts[a[qs] - rows.start]
        count = np.searchsorted(keys, q_upper, side="left") - first
        k = np.minimum(np.floor(u[qs] * count).astype(np.int64), count - 1)
        picked = keys[np.minimum(first + np.maximum(k, 0), keys.size - 1)]
        n[qs] = np.where(count > 0, (picked & np.uint64(0xFFFF)).astype(np.int64), -1)
    ok = n >= 0
    a_t = torch.from_numpy(a[ok].astype(np.int64))
    return a_t, pos_idx[a_t, torch.from_numpy(j[ok].astype(np.int64))], torch.from_numpy(n[ok])


def semi_hard(d: Tensor, labels: Tensor, margin: float) -> Triplets:
    """FaceNet's semi-hard negatives, one triplet per anchor-positive pair.

    For EVERY ordered anchor-positive pair ``(a, p)`` of the batch (``a != p``, same label;
    both ``(a, p)`` and ``(p, a)``, as the paper uses all anchor-positive pairs) choose the
    hardest semi-hard negative: the ``n`` of another identity with the smallest ``d(a, n)``
    subject to ``d(a, p) < d(a, n) < d(a, p) + margin``. Pairs without such a negative produce
    no triplet. Ties between negatives at the same distance go to the lowest batch index.
    Triplets are returned sorted by ``(a, p)``.

    This is the TF-addons / FaceNet semi-hard choice (the closest negative farther than the
    positive) restricted to the margin band: a negative outside the band, at
    ``d(a, n) >= d(a, p) + margin``, would give ``max(0, d(a,p) - d(a,n) + margin) = 0``, so
    such pairs are dropped instead of contributing zero-loss triplets (TF-addons falls back to
    the farthest negative when no semi-hard one exists; we do not).

    Vectorised: each anchor's negative distances are sorted once; ``searchsorted`` finds, for
    all pairs at once, the first negative strictly farther than the positive.
    """
    b = d.shape[0]
    if b == 0:
        return _empty(d.device)
    labels = labels.to(d.device)
    pos_idx, valid = _positive_table(labels)
    d_ap = d.gather(1, pos_idx)
    if _use_key_path(d):
        return _semi_hard_keys(d, labels, pos_idx, valid, d_ap, margin)
    sorted_d, order = _sorted_negatives(d, labels)
    # first sorted position with d(a, n) > d(a, p) (right=True: strictly greater)
    first = torch.searchsorted(sorted_d, d_ap.contiguous(), right=True)
    first_c = first.clamp(max=b - 1)
    ok = valid & (first < b) & (sorted_d.gather(1, first_c) < d_ap + margin)
    a, j = ok.nonzero(as_tuple=True)
    return a, pos_idx[a, j], order[a, first_c[a, j]]


def random_violating(
    d: Tensor, labels: Tensor, margin: float, generator: torch.Generator | None = None
) -> Triplets:
    """The facenet repository's ``select_triplets``: one random violating negative per pair.

    For each anchor-positive pair with ``a`` before ``p`` in the batch (each unordered pair of
    an identity once; anchor = the earlier index), pick ONE negative uniformly at random among
    those of another identity with ``d(a, n) - d(a, p) < margin``, evaluated as
    ``d(a, n) < d(a, p) + margin`` (identical up to float rounding). This includes negatives
    closer than the positive, as in facenet's code, where the semi-hard clause
    ``pos_dist_sqr < neg_dists_sqr`` is commented out. Pairs with no such negative produce no
    triplet. Triplets are returned sorted by ``(a, p)``.

    Vectorised random choice: the eligible negatives of a pair are the first ``c`` entries of
    the anchor's sorted negative distances; a uniform ``u`` in ``[0, 1)`` per pair selects
    position ``floor(u * c)``. The uniforms (float64) come from ``generator`` (the global CPU
    generator if ``None``), one per unordered pair ``a < p`` of the batch, eligible or not, so
    the random stream advances by an amount that depends only on the labels.
    """
    b = d.shape[0]
    if b == 0:
        return _empty(d.device)
    labels = labels.to(d.device)
    pos_idx, valid = _positive_table(labels)
    d_ap = d.gather(1, pos_idx)
    if _use_key_path(d):
        return _random_violating_keys(d, labels, pos_idx, valid, d_ap, margin, generator)
    sorted_d, order = _sorted_negatives(d, labels)
    # number of negatives with d(a, n) < d(a, p) + margin (left side: strictly less)
    count = torch.searchsorted(sorted_d, (d_ap + margin).contiguous(), right=False)
    rows = torch.arange(b, device=d.device)[:, None]
    pairs = valid & (pos_idx > rows)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(int(pairs.sum()), generator=generator, dtype=torch.float64, device=gen_device)
    u_table = torch.zeros(pos_idx.shape, dtype=torch.float64, device=d.device)
    u_table[pairs] = u.to(d.device)
    a, j = (pairs & (count > 0)).nonzero(as_tuple=True)
    c = count[a, j]
    k = torch.minimum((u_table[a, j] * c).floor().long(), c - 1)
    return a, pos_idx[a, j], order[a, k]


def batch_hard(d: Tensor, labels: Tensor, margin: float) -> Triplets:
    """Batch-hard mining (Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss").

    For each anchor with at least one positive and one negative in the batch: its hardest
    positive (largest ``d(a, p)``) and hardest negative (smallest ``d(a, n)``); one triplet per
    anchor. Ties go to the lowest batch index. ``margin`` is unused (kept for a uniform
    signature): the triplet is selected whether or not it violates the margin.
    """
    if d.shape[0] == 0:
        return _empty(d.device)
    labels = labels.to(d.device)
    pos, neg = label_masks(labels)
    p = d.masked_fill(~pos, float("-inf")).argmax(dim=1)
    n = d.masked_fill(~neg, float("inf")).argmin(dim=1)
    a = (pos.any(dim=1) & neg.any(dim=1)).nonzero(as_tuple=True)[0]
    return a, p[a], n[a]


def all_violating(d: Tensor, labels: Tensor, margin: float) -> Triplets:
    """Every valid triplet with ``d(a, p) - d(a, n) + margin > 0`` (a non-zero loss term).

    All ordered anchor-positive pairs and all negatives; triplets are returned sorted by
    ``(a, p, n)``. The ``[pairs, B]`` violation mask is built in chunks of pairs so that at
    most about 16M elements exist at once.
    """
    b = d.shape[0]
    if b == 0:
        return _empty(d.device)
    labels = labels.to(d.device)
    pos, neg = label_masks(labels)
    pa, pp = pos.nonzero(as_tuple=True)
    step = max(1, _CHUNK_ELEMENTS // b)
    out_a, out_p, out_n = [], [], []
    for start in range(0, pa.shape[0], step):  # chunks of pairs, not a loop over pairs
        ca, cp = pa[start : start + step], pp[start : start + step]
        viol = neg[ca] & (d[ca, cp][:, None] - d[ca] + margin > 0)
        rows, n = viol.nonzero(as_tuple=True)
        out_a.append(ca[rows])
        out_p.append(cp[rows])
        out_n.append(n)
    if not out_a:
        return _empty(d.device)
    return torch.cat(out_a), torch.cat(out_p), torch.cat(out_n)


#: strategy name -> selection function (``random_violating`` also takes ``generator=``)
STRATEGIES: dict[str, Callable[..., Triplets]] = {
    "semi-hard": semi_hard,
    "random-violating": random_violating,
    "hard": batch_hard,
    "batch-hard": batch_hard,
    "all": all_violating,
}

#: strategies whose selection is random (they take a ``generator``)
RANDOM_STRATEGIES = frozenset({"random-violating"})
