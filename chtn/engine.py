"""The evaluation engine: exact full-ranking AP, top-1 relevance, own-pair rank and tie groups, a block of queries at a
time, on CPU (numpy, by counting) or on a torch device (a stable sort, which GPUs do fast).

:func:`chtn.evaluate.evaluate_direction` is its one caller, and every page and command that scores a split
(Overview, ``chtn evaluate``, review queues, Compare, source bias) goes through that function.

The ranking is the protocol's (:mod:`chtn.ranking`): float32 cosine scores with the same bits however they are
computed, higher first, exactly equal scores in gallery order (lower row first). Stable position of item j in query
i's ranking::

    pos(j) = 1 + #{g : s_g > s_j} + #{g < j : s_g == s_j}

and AP = mean over the relevant items j of hits(j) / pos(j), where hits(j) is j's position among the relevant items
alone (the same formula with g restricted to relevant items). Both counts are exact integers, so AP computed from
them equals AP read off ``np.argsort(-s, kind="stable")`` (the old evaluation, kept in the tests as the reference)
up to the float64 rounding of the final sum.

Why counting on CPU: a stable ``argsort`` of a 100,000-score row costs ~9 ms on this project's 2-core machines and
even a value-only ``np.sort`` ~2.3 ms, while AP needs only the positions of the m relevant items (a twentieth of the
row with 20 classes). :func:`stable_positions` counts them from one bucketing pass over the row (a bincount of a
monotone map of the scores) and a sort of the rows that share a bucket with a relevant item, about 2m of them: ~1.4
ms a row on one core, about half the way it replaced (a value sort of the row; 100,000 items on 2 cores: 453 s
before, 238 s with threads, 123 s with a worker process per core). numpy has no "rank these m values within that
row" primitive, hence this. Blocks run one per core: in worker processes for a large gallery
(:data:`PROCESSES_FROM`), else in threads (numpy's sorts and searches release the GIL). Measured:
``docs/scale_benchmark.md``.

Own pair (query i's gallery row i): its stable rank, its exact tie group (equal float32 scores) and its four-decimal
tie group (:func:`chtn.ranking.tie_bucket`), by comparisons over the row, as :func:`chtn.ranking.rank_of` and
:func:`chtn.ranking.tie_groups` define them.

Memory: the caller scores ``block_rows(n_gallery)`` queries at a time, so one block is at most ``BLOCK_ELEMS``
scores (16 MiB of float32, plus a bool mask or two of it) whatever the split size; a row's buckets are one row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from chtn.ranking import TIE_TOLERANCE, TieGroups, tie_bucket

if TYPE_CHECKING:
    import torch

# Galleries with fewer rows are ranked by a stable argsort of the whole block (vectorised), larger ones by counting
# row by row: measured on 2 cores, 15 ms against 110 ms for the sample's 400 items, 0.5 s against 1.1 s at 2,500.
COUNT_FROM = 2048
# Scores of one block (queries x gallery): 2**22 float32 = 16 MiB.
BLOCK_ELEMS = 1 << 22
# Galleries from this many rows are ranked by one worker process per core (:func:`serve_gallery`), smaller ones by
# one thread per core. Threads share the GIL (np.bincount holds it) and take each new row-sized array's page faults
# in turn. Measured on 2 cores, one direction, processes against threads: 0.43 / 0.49 s at 5,000 items, 0.97 / 1.65 s
# at 10,000, 2.75 / 4.89 s at 20,000; a spawned worker starts in ~0.1 s plus the main module's imports.
PROCESSES_FROM = 10_000


def block_rows(n_gallery: int) -> int:
    """How many queries one block holds for a gallery of ``n_gallery`` rows (at least one)."""
    return max(1, BLOCK_ELEMS // max(n_gallery, 1))


def block_scorer(
    gallery: np.ndarray, device: torch.device | None = None
) -> Callable[[np.ndarray], np.ndarray | torch.Tensor]:
    """Scores of a block of queries against ``gallery`` (both from :func:`chtn.ranking.normalize_rows`).

    Every product and partial sum of grid values is exact in float64 (:mod:`chtn.ranking`'s docstring), so one
    float64 matmul rounded once to float32 gives the bits of :func:`chtn.ranking.cosine_scores` on any device.
    None: numpy on the CPU, into buffers each thread reuses (a fresh 16-32 MiB array per block costs its page
    faults again: measured up to 9x the matmul itself); the scores are valid until the thread's next call. A torch
    device: there.
    """
    if device is not None:
        import torch  # only for a device: the CPU path (and its worker processes) never loads torch

        on_device = torch.from_numpy(gallery).to(device, torch.float64)
        return lambda block: (torch.from_numpy(block).to(device, torch.float64) @ on_device.T).float()
    transposed = np.ascontiguousarray(gallery.astype(np.float64).T)
    buffers = threading.local()

    def score(block: np.ndarray) -> np.ndarray:
        shape = (len(block), transposed.shape[1])
        if getattr(buffers, "exact", np.empty((0, 0))).shape != shape:
            buffers.exact, buffers.scores = np.empty(shape), np.empty(shape, dtype=np.float32)
        np.matmul(block.astype(np.float64), transposed, out=buffers.exact)
        buffers.scores[...] = buffers.exact  # rounds once to float32
        return buffers.scores

    return score


@dataclass(frozen=True)
class BlockResult:
    """Per-query figures of one block of queries (all arrays have one entry per query)."""

    ap: np.ndarray  # float64, NaN where no gallery item is relevant
    top1: np.ndarray  # bool, the first-ranked item is relevant
    pair_rank: np.ndarray | None  # int64 stable rank of the own pair; None when the block has no own pairs
    pair_ties: TieGroups | None  # the own pair's four-decimal tie group
    pair_exact: TieGroups | None  # the own pair's exact tie group


# A ranking worker process's gallery, set once by serve_gallery when the process starts (never in the main process,
# and never shared between callers: each pool has its own processes).
_served: tuple[Callable[[np.ndarray], np.ndarray | torch.Tensor], np.ndarray, int | None, bool] | None = None


def serve_gallery(gallery: np.ndarray, gallery_labels: np.ndarray, at_k: int | None, paired: bool) -> None:
    """Initializer of a ranking worker process (``ProcessPoolExecutor``): keep the gallery it ranks every block
    against, and use one BLAS thread, as the pool already runs one process per core."""
    from threadpoolctl import threadpool_limits

    global _served
    threadpool_limits(1)
    _served = (block_scorer(gallery), np.asarray(gallery_labels), at_k, paired)


def rank_served(rows: np.ndarray, queries: np.ndarray, query_labels: np.ndarray) -> BlockResult:
    """:func:`rank_block` of the queries at gallery rows ``rows`` in a worker process (:func:`serve_gallery`)."""
    assert _served is not None, "rank_served runs in a process started by serve_gallery"
    score, gallery_labels, at_k, paired = _served
    return rank_block(score(queries), query_labels, gallery_labels, at_k, rows if paired else None)


def rank_block(
    scores: np.ndarray | torch.Tensor,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    at_k: int | None = None,
    pairs: np.ndarray | None = None,
) -> BlockResult:
    """Figures of a block of queries from their (b, n) float32 scores over the whole gallery.

    ``pairs``: each query's own gallery row (None: no own pairs). A torch tensor is ranked on its device by a
    stable sort; a numpy array on the CPU by counting (module docstring). Both give the same figures.
    """
    if not isinstance(scores, np.ndarray):
        return _rank_block_torch(scores, query_labels, gallery_labels, at_k, pairs)
    q_labels, g_labels, n = np.asarray(query_labels), np.asarray(gallery_labels), scores.shape[1]
    by = _by_sorting if n < COUNT_FROM else _by_counting
    ap, top1 = by(scores, q_labels, g_labels, at_k)
    if pairs is None:
        return BlockResult(ap, top1, None, None, None)
    own = scores[np.arange(len(scores)), pairs]

    def at_or_above(edges: np.ndarray) -> np.ndarray:  # per query, the rows scoring at least its edge
        return np.count_nonzero(scores >= edges[:, None], axis=1)

    greater, at_least = np.count_nonzero(scores > own[:, None], axis=1), at_or_above(own)
    bucket = tie_bucket(own, TIE_TOLERANCE)  # the four-decimal tie group: the rows from its lowest score up
    first, last = 1 + at_or_above(_lowest_in_bucket(bucket + 1)), at_or_above(_lowest_in_bucket(bucket))
    # equal scores rank in gallery order: the rows before the pair's own row with its score (only when tied)
    earlier = np.array(
        [np.count_nonzero(s[:p] == v) if t > 1 else 0 for s, p, v, t in zip(scores, pairs, own, at_least - greater)],
        dtype=np.int64,
    )
    exact = TieGroups(at_least - greater - 1, greater + 1, at_least)
    return BlockResult(ap, top1, 1 + greater + earlier, TieGroups(last - first, first, last), exact)


def _by_counting(
    scores: np.ndarray, q_labels: np.ndarray, g_labels: np.ndarray, at_k: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(AP, top-1) row by row, from the relevant items' stable positions (:func:`stable_positions`)."""
    members = {label: np.flatnonzero(g_labels == label) for label in np.unique(q_labels).tolist()}
    ap, top1 = np.full(len(scores), np.nan), np.zeros(len(scores), dtype=bool)
    for row, (s, label) in enumerate(zip(scores, q_labels.tolist())):
        if len(members[label]):
            positions = stable_positions(s, members[label])  # ascending: the i-th is the i-th hit
            ap[row], top1[row] = _ap_from_positions(positions, at_k), positions[0] == 1
    return ap, top1


def _by_sorting(
    scores: np.ndarray, q_labels: np.ndarray, g_labels: np.ndarray, at_k: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The same as :func:`_by_counting` for a small gallery, from a stable argsort of the whole block: below
    ``COUNT_FROM`` rows one vectorised sort beats a Python loop over the rows."""
    order = np.argsort(-scores, axis=1, kind="stable")
    relevant = np.take_along_axis(q_labels[:, None] == g_labels[None, :], order, axis=1)
    return ranked_ap(relevant, at_k), relevant[:, 0]


def ranked_ap(relevant: np.ndarray, at_k: int | None = None) -> np.ndarray:
    """AP per row of a (q, n) bool matrix of relevance in ranked order (MAP@k-style over the first ``at_k`` with
    it); NaN for a row with nothing relevant."""
    ranked = relevant[:, :at_k] if at_k is not None else relevant
    hits = np.cumsum(ranked, axis=1)
    precision = (hits / np.arange(1, ranked.shape[1] + 1) * ranked).sum(axis=1)
    retrieved = ranked.sum(axis=1)
    ap = np.divide(precision, retrieved, out=np.zeros(len(ranked)), where=retrieved > 0)
    return np.where(relevant.any(axis=1), ap, np.nan)


def stable_positions(s: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The 1-based positions of gallery rows ``items`` in the stable ranking of the score row ``s``, ascending
    (which item holds which position is not kept: AP needs only the positions).

    Counted, not read off a sort of the row (module docstring). Why it is exact: the rows are put in buckets by a
    map of the score that never decreases (:func:`_bucketing`), so every row in a higher bucket than an item
    scores strictly higher, and a row in a lower bucket strictly lower. An item's rows above are then all the rows
    of the higher buckets (a cumulative count of the buckets) plus the rows of its own bucket that score higher,
    found in a sort of the rows sharing a bucket with some item: about twice the items, not the whole row. Exactly
    equal scores always share a bucket, so that sort also finds the rows tied with an item; those with a lower
    index rank before it (:func:`_earlier_equal`).
    """
    if not len(items):
        return np.zeros(0, dtype=np.int64)
    values = np.sort(s[items])[::-1]  # the items' scores descending: positions ascending
    bucket_of = _bucketing(values[-1], s.max(), len(s))
    buckets = bucket_of(s)
    above = len(s) - np.cumsum(np.bincount(buckets, minlength=len(s) + 1))  # rows in the buckets above each bucket
    holding = np.zeros(len(s) + 1, dtype=bool)
    holding[buckets[items]] = True
    candidates = np.flatnonzero(holding[buckets])  # ascending rows
    ordered = np.sort(s[candidates])
    in_bucket = bucket_of(values)
    up_to_bucket = np.searchsorted(bucket_of(ordered), in_bucket, side="right")  # never decreasing, like the scores
    up_to_value = np.searchsorted(ordered, values, side="right")
    positions = 1 + above[in_bucket] + up_to_bucket - up_to_value
    shared = (up_to_value >= 2) & (ordered[np.maximum(up_to_value - 2, 0)] == values)  # [up_to_value - 1] is its own
    if shared.any():
        tied = items[np.isin(s[items], values[shared])]
        # in the order of values[shared] (scores descending), a lower index first among equal scores: its earlier
        # rows are fewer, so the positions stay ascending
        tied = tied[np.lexsort((tied, -s[tied]))]
        positions[shared] += _earlier_equal(s, tied, candidates)
    return positions


def _bucketing(lowest: np.float32, highest: np.float32, n: int) -> Callable[[np.ndarray], np.ndarray]:
    """A map of float32 scores to buckets 0..n that never decreases: n equal-width buckets from ``lowest`` to
    ``highest`` (1..n), and 0 below. Every step (a float64 difference, a product with a finite scale >= 0, a sum,
    clip, truncation) preserves order, so it never decreases whatever the rounding (float64 cannot overflow on a
    float32 difference, so no inf * 0); an unlucky rounding only merges buckets, which costs time, not exactness."""
    span = float(highest) - float(lowest)
    scale = n / span if span > 0 else 0.0

    def bucket_of(x: np.ndarray) -> np.ndarray:
        scaled = x.astype(np.float64)
        scaled -= float(lowest)
        scaled *= scale
        scaled += 1.0
        return np.clip(scaled, 0, n, out=scaled).astype(np.intp)

    return bucket_of


def _earlier_equal(s: np.ndarray, items: np.ndarray, among: np.ndarray) -> np.ndarray:
    """For each row of ``items``, the rows of ``s`` with exactly its score and a lower index; ``among`` (ascending)
    holds every row that could share an item's score."""
    candidates = among[np.isin(s[among], s[items])]  # ascending rows
    grouped = np.argsort(s[candidates], kind="stable")  # by score, then by row
    keys = s[candidates][grouped]
    earlier = np.empty(len(candidates), dtype=np.int64)
    earlier[grouped] = np.arange(len(candidates)) - np.searchsorted(keys, keys, side="left")
    return earlier[np.searchsorted(candidates, items)]


def _ap_from_positions(positions: np.ndarray, at_k: int | None) -> float:
    """AP from the ascending stable positions of all relevant items (the i-th of them is the i-th hit)."""
    hits = np.arange(1, len(positions) + 1)
    if at_k is not None:
        kept = positions <= at_k
        return float((hits[kept] / positions[kept]).sum() / kept.sum()) if kept.any() else 0.0
    return float((hits / positions).mean())


def _lowest_in_bucket(bucket: np.ndarray) -> np.ndarray:
    """The smallest float32 whose :func:`chtn.ranking.tie_bucket` is at least ``bucket`` (element-wise).

    The bucket never decreases with the score, so the scores in buckets >= b are exactly the scores >= this value:
    one comparison pass instead of a float64 bucket per score. Starts from the bucket's edge and steps one float32
    at a time (a step is ~1e-7, far below the 1e-4 tolerance, so a few steps at most).
    """
    x = ((bucket - 0.5) * TIE_TOLERANCE).astype(np.float32)
    down, up = np.float32(-np.inf), np.float32(np.inf)
    while True:
        below = np.nextafter(x, down)
        lower = tie_bucket(below, TIE_TOLERANCE) >= bucket  # a smaller float32 is still in the bucket
        higher = tie_bucket(x, TIE_TOLERANCE) < bucket  # x itself is not yet in it
        if not (lower.any() or higher.any()):
            return x
        x = np.where(lower, below, np.where(higher, np.nextafter(x, up), x))


def _rank_block_torch(
    scores: torch.Tensor,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    at_k: int | None,
    pairs: np.ndarray | None,
) -> BlockResult:
    """The same figures on the scores' device: one stable descending sort per row (ties keep gallery order)."""
    import torch

    device = scores.device
    q_labels = torch.as_tensor(np.asarray(query_labels), device=device)
    g_labels = torch.as_tensor(np.asarray(gallery_labels), device=device)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    relevant = g_labels[order] == q_labels[:, None]
    del order
    n_relevant = relevant.sum(dim=1)
    ranked = relevant[:, :at_k] if at_k is not None else relevant
    hits = ranked.cumsum(dim=1, dtype=torch.float64)
    positions = torch.arange(1, ranked.shape[1] + 1, device=device, dtype=torch.float64)
    precision_sum = (hits / positions * ranked).sum(dim=1)
    retrieved = ranked.sum(dim=1)
    ap = torch.where(retrieved > 0, precision_sum / retrieved.clamp(min=1), 0.0)
    ap = torch.where(n_relevant > 0, ap, torch.nan)
    top1 = relevant[:, 0] if relevant.shape[1] else torch.zeros(len(scores), dtype=torch.bool, device=device)
    result_ap, result_top1 = ap.cpu().numpy(), top1.cpu().numpy()
    if pairs is None:
        return BlockResult(result_ap, result_top1, None, None, None)
    own_rows = torch.as_tensor(pairs, device=device)
    own = scores.gather(1, own_rows[:, None])
    greater = (scores > own).sum(dim=1)
    at_least = (scores >= own).sum(dim=1)
    columns = torch.arange(scores.shape[1], device=device)
    earlier = ((scores == own) & (columns < own_rows[:, None])).sum(dim=1)
    buckets = torch.floor(scores.double() / TIE_TOLERANCE + 0.5)  # chtn.ranking.tie_bucket, on the device
    own_bucket = torch.floor(own.double() / TIE_TOLERANCE + 0.5)
    first = 1 + (buckets > own_bucket).sum(dim=1)
    last = (buckets >= own_bucket).sum(dim=1)

    def host(*tensors: torch.Tensor) -> list[np.ndarray]:
        return [t.cpu().numpy().astype(np.int64) for t in tensors]

    (rank,) = host(1 + greater + earlier)
    ties = TieGroups(*host(last - first, first, last))
    exact = TieGroups(*host(at_least - greater - 1, greater + 1, at_least))
    return BlockResult(result_ap, result_top1, rank, ties, exact)
