"""Cross-modal retrieval evaluation (MAP) for image<->text models.

Protocol: query set = gallery = test split; every image queries all texts (I->T)
and every text queries all images (T->I) by cosine similarity. An item is
relevant when it shares the query's category label. AP is taken over the full
ranked list ("MAP@all") unless ``at_k`` is given, in which case "MAP@k" is AP over
the top k normalised by the number of relevant items retrieved in the top k (the
definition used by cross-modal papers, e.g. MAP@50); it is 0 if none is retrieved.

Scores and ties are those of :mod:`chtn.ranking`, the module the explorer and the CLI
rank with too: float32 cosine scores with the same bits for one query or a batch; a
tie means exactly equal scores and is broken stably by gallery index (lower index
ranks first, like MATLAB's stable sort). Near-ties (common with softmax features) are
ordered by their value, however small the gap. Queries with no relevant item in the
gallery have undefined AP (NaN): they are excluded from the mean and counted in
``EvaluationReport.summary()``.

Instance-level figures (query i's own pair is gallery row i): the protocol rank of the
pair (``paired_rank``, stable tie-break), its tie group (items whose score rounds to the
same multiple of ``TIE_TOLERANCE``: "tied to four decimals", the order among which the model
did not make), and own-pair
recall@k and median rank under an explicit tie rule: exactly tied items are taken in a
uniformly random order (tie-aware expected values, McSherry & Najork, ECIR 2008). A pair
exactly tied with t other items over ranks [a, a + t] has rank r with probability
1 / (t + 1) for each r there, so it counts min(1, max(0, k - a + 1) / (t + 1)) towards
recall@k, and its expected rank is a + t / 2. The gallery-order tie-break would instead
favour pairs that happen to come first in the file.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from chtn.cpus import usable_cores
from chtn.directions import Direction
from chtn.engine import (
    PROCESSES_FROM,
    BlockResult,
    block_rows,
    block_scorer,
    rank_block,
    rank_served,
    ranked_ap,
    serve_gallery,
)
from chtn.metrics import RECALL_AT
from chtn.progress import Progress, of_count, within
from chtn.ranking import TIE_TOLERANCE, TieGroups, normalize_rows

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class RetrievalEval:
    """Per-direction result."""

    direction: Direction
    map: float  # mean AP over queries that have >=1 relevant item
    ap: np.ndarray  # (n_queries,) AP per query, NaN where undefined
    paired_rank: np.ndarray  # (n_queries,) 1-based rank of the paired item (same row), -1 if unpaired
    top1_correct: np.ndarray  # (n_queries,) bool: is the top-1 result relevant
    at_k: int | None  # None for MAP over the full ranking
    query_labels: np.ndarray  # (n_queries,) category index of each query (for per-category breakdowns)
    paired_ties: TieGroups | None  # (n_queries,) arrays: the pair's four-decimal tie group; None if unpaired
    paired_exact: TieGroups | None  # (n_queries,) arrays: the items scoring exactly as the pair; None if unpaired

    def own_pair_recall(self, k: int) -> float:
        """Tie-aware expected share of queries whose own pair ranks in the top k (module docstring); NaN if unpaired."""
        if self.paired_exact is None:
            return float("nan")
        first, size = self.paired_exact.first, self.paired_exact.others + 1
        return float(np.mean(np.clip((k - first + 1) / size, 0.0, 1.0)))

    def own_pair_expected_rank(self) -> np.ndarray:
        """(n_queries,) expected rank of each query's own pair with its exact ties in random order (-1 if unpaired)."""
        if self.paired_exact is None:
            return np.full(len(self.ap), -1.0)
        return (self.paired_exact.first + self.paired_exact.last) / 2


def average_precision(scores: np.ndarray, relevant: np.ndarray, at_k: int | None = None) -> float:
    """AP of one query given gallery scores (n_g,) and a bool relevance mask (n_g,).

    Ranks by descending score with a stable tie-break by gallery index; NaN if
    nothing is relevant. With ``at_k``, computes MAP@k-style AP over the top k.
    """
    relevant = np.asarray(relevant, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return float(ranked_ap(relevant[order][None, :], at_k)[0])


def evaluate_direction(
    query: np.ndarray,
    gallery: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    direction: Direction,
    at_k: int | None = None,
    device: str | torch.device | None = None,
    block_queries: int | None = None,
    progress: Progress | None = None,
    sharded: bool = False,
) -> RetrievalEval:
    """Rank the gallery for every query by cosine similarity and score it.

    Scores are :func:`chtn.ranking.cosine_scores` (the same bits on every device), computed and ranked by
    :mod:`chtn.engine` one block of queries at a time, so memory stays bounded however large the split is. On
    the CPU (``device`` None or "cpu") the engine counts, one block per core at once; on another torch device
    (e.g. "cuda") it scores and sorts there. ``block_queries`` (default :func:`chtn.engine.block_rows`, and at
    most a world-th of the queries) sets the block; ``sharded`` (every process of a torchrun launch calls this at
    once, see :mod:`chtn.shards`): each process ranks every world-th block, and all of them receive every result.
    Query i's paired item is gallery row i; if the sets differ in size ``paired_rank`` is all -1 and there are no
    tie groups. ``progress`` hears after each block.
    """
    q_labels, g_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    if len(query) != len(q_labels) or len(gallery) != len(g_labels):
        raise ValueError("embeddings and labels must have the same number of rows")
    q, g = normalize_rows(query), normalize_rows(gallery)
    n_q, paired = len(q), len(q) == len(g) and len(q) > 0
    ap, top1 = np.full(n_q, np.nan), np.zeros(n_q, dtype=bool)
    rank = np.full(n_q, -1, dtype=np.int64)
    ties, exact = (TieGroups(*np.zeros((3, n_q), dtype=np.int64)) for _ in range(2))
    target = None
    if device is not None:
        import torch  # only for a device: the CPU path (the dashboard's) never loads PyTorch

        target = torch.device(device)
    on_device = target is not None and target.type != "cpu"
    shard, shards = _shard() if sharded else (0, 1)
    step = block_queries or max(1, min(block_rows(len(g)), -(-n_q // shards)))  # by default a block per process
    blocks = [np.arange(start, min(start + step, n_q)) for start in range(0, n_q if len(g) else 0, step)]

    mine = blocks[shard::shards]
    results, done, total = [], 0, sum(len(rows) for rows in mine)
    workers = 1 if on_device or len(mine) < 2 else usable_cores()[0]
    with _ranking_pool(workers, g, g_labels, at_k, paired, shards) as pool:
        if isinstance(pool, ProcessPoolExecutor):  # each worker scores against its own copy of the gallery
            ranked = pool.map(rank_served, mine, [q[rows] for rows in mine], [q_labels[rows] for rows in mine])
        else:
            score = block_scorer(g, target if on_device else None)
            ranked = pool.map(
                lambda rows: rank_block(score(q[rows]), q_labels[rows], g_labels, at_k, rows if paired else None), mine
            )
        for rows, block in zip(mine, ranked):
            results.append((rows, block))
            done += len(rows)
            if progress is not None:
                progress(*of_count(done, total, f"Ranking {direction.replace('2', '→').upper()} queries"))
    if shards > 1:
        import torch

        gathered: list[list[tuple[np.ndarray, BlockResult]]] = [[] for _ in range(shards)]
        torch.distributed.all_gather_object(gathered, results)
        results = [result for part in gathered for result in part]
    for rows, block in results:
        ap[rows], top1[rows] = block.ap, block.top1
        if block.pair_rank is not None and block.pair_ties is not None and block.pair_exact is not None:
            rank[rows] = block.pair_rank
            for whole, part in ((ties, block.pair_ties), (exact, block.pair_exact)):
                whole.others[rows], whole.first[rows], whole.last[rows] = part.others, part.first, part.last
    defined = ~np.isnan(ap)
    mean_ap = float(ap[defined].mean()) if defined.any() else float("nan")
    if not paired:
        return RetrievalEval(direction, mean_ap, ap, rank, top1, at_k, q_labels, None, None)
    return RetrievalEval(direction, mean_ap, ap, rank, top1, at_k, q_labels, ties, exact)


def _ranking_pool(
    workers: int, gallery: np.ndarray, gallery_labels: np.ndarray, at_k: int | None, paired: bool, shards: int
) -> Executor:
    """Where the blocks are ranked: one worker process per core for a large gallery ranked by this process alone
    (:data:`chtn.engine.PROCESSES_FROM`), else threads (numpy's sorts and searches release the GIL). A torchrun
    process is already one of one per core, so it uses threads. The workers are forked from a process that runs
    one thread (a command, a script: no imports to repeat, and no main-module guard asked of a user's script) and
    spawned from one that runs several (the dashboard's server), where a fork could copy a lock some other thread
    holds and deadlock."""
    if workers < 2 or shards > 1 or len(gallery) < PROCESSES_FROM:
        return ThreadPoolExecutor(workers)
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn"),
        initializer=serve_gallery,
        initargs=(gallery, gallery_labels, at_k, paired),
    )


def _shard() -> tuple[int, int]:
    """(rank, world size) of this process when torchrun started it and its process group is up, else (0, 1)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class EvaluationReport:
    """Both retrieval directions plus the category names, with tabular views."""

    i2t: RetrievalEval
    t2i: RetrievalEval
    label_names: list[str]

    @property
    def mean_map(self) -> float:
        """Average of the I->T and T->I MAP, the headline number."""
        return (self.i2t.map + self.t2i.map) / 2

    def per_category(self) -> pd.DataFrame:
        """Mean AP of each category's queries (NaN APs skipped), one row per label name."""

        def category_means(r: RetrievalEval) -> pd.Series:
            means = pd.Series(r.ap).groupby(r.query_labels).mean()  # pandas mean skips NaN
            return means.reindex(range(len(self.label_names)))

        i2t, t2i = category_means(self.i2t).to_numpy(), category_means(self.t2i).to_numpy()
        counts = np.bincount(self.i2t.query_labels, minlength=len(self.label_names))
        return pd.DataFrame(
            {"category": self.label_names, "n": counts, "ap_i2t": i2t, "ap_t2i": t2i, "ap_mean": (i2t + t2i) / 2}
        )

    def per_query(self, ids: Sequence[str], texts: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per query per direction (i2t rows first) for error analysis.

        ``paired_rank`` is the protocol rank of the query's own pair; ``paired_tied_with`` the other items
        with its score to four decimals (``chtn.ranking.tie_groups``) and ``paired_tie_first``/``_last`` the ranks
        they span together;
        ``paired_expected_rank`` its rank with exact ties in random order (the rule of the recall figures).
        Paired columns are -1 when query set and gallery differ.
        """
        frames = []
        for r in (self.i2t, self.t2i):
            if len(ids) != len(r.ap) or (texts is not None and len(texts) != len(r.ap)):
                raise ValueError("ids/texts must have one entry per query")
            ties = r.paired_ties or TieGroups(*np.full((3, len(r.ap)), -1))
            frame = pd.DataFrame(
                {
                    "id": list(ids),
                    "direction": r.direction,
                    "category": [self.label_names[i] for i in r.query_labels],
                    "ap": r.ap,
                    "paired_rank": r.paired_rank,
                    "paired_tied_with": ties.others,
                    "paired_tie_first": ties.first,
                    "paired_tie_last": ties.last,
                    "paired_expected_rank": r.own_pair_expected_rank(),
                    "top1_correct": r.top1_correct,
                }
            )
            if texts is not None:
                frame["text"] = list(texts)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def summary(self) -> dict:
        """Headline numbers; n_queries and n_undefined are summed over both directions.

        Own-pair figures per direction (NaN when query set and gallery differ): ``pair_recall@1``,
        ``pair_recall@10`` and ``pair_median_rank`` under the tie-aware rule of the module docstring, and
        ``pair_median_stable_rank``, the median of the protocol rank (the per-query table's column).
        """
        k = self.i2t.at_k
        out = {
            "map_i2t": self.i2t.map,
            "map_t2i": self.t2i.map,
            "map_mean": self.mean_map,
            "at_k": k,
            "metric": "MAP@all" if k is None else f"MAP@{k}",
            "n_queries": len(self.i2t.ap) + len(self.t2i.ap),
            "n_undefined": int(np.isnan(self.i2t.ap).sum() + np.isnan(self.t2i.ap).sum()),
        }
        for r in (self.i2t, self.t2i):
            paired, d = r.paired_exact is not None, r.direction
            for k in RECALL_AT:
                out[f"pair_recall@{k}_{d}"] = r.own_pair_recall(k)
            out[f"pair_median_rank_{d}"] = float(np.median(r.own_pair_expected_rank())) if paired else float("nan")
            out[f"pair_median_stable_rank_{d}"] = float(np.median(r.paired_rank)) if paired else float("nan")
        out["pair_tie_rule"] = "exactly tied items in random order (tie-aware expected values, McSherry & Najork 2008)"
        out["tie_tolerance"] = TIE_TOLERANCE
        return out


def evaluate_embeddings(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    at_k: int | None = None,
    device: str | torch.device | None = None,
    block_queries: int | None = None,
    progress: Progress | None = None,
    sharded: bool = False,
) -> EvaluationReport:
    """Evaluate I->T and T->I retrieval; row i of each modality is a pair with category labels[i]. ``device``: where
    to score and rank (None: the CPU, by counting; "cuda": on the GPU), with the same figures either way; the other
    options as :func:`evaluate_direction`."""
    labels = np.asarray(labels)
    halves = (None, None) if progress is None else (within(progress, 0, 0.5), within(progress, 0.5, 1))
    return EvaluationReport(
        evaluate_direction(image_emb, text_emb, labels, labels, "i2t", at_k, device, block_queries, halves[0], sharded),
        evaluate_direction(text_emb, image_emb, labels, labels, "t2i", at_k, device, block_queries, halves[1], sharded),
        list(label_names),
    )


# Part of the key of a cached evaluation (chtn.gallery.evaluate_gallery): bump it when the figures of the same
# embeddings would change (the protocol, the tie rule, the stored fields), so no cache outlives its meaning.
EVALUATION_FORMAT = 1
_TIES = ("others", "first", "last")


def report_arrays(report: EvaluationReport) -> dict[str, np.ndarray]:
    """The report as named arrays (plain dtypes, no objects), for an `.npz` that loads without pickle."""
    arrays: dict[str, np.ndarray] = {"label_names": np.array(report.label_names, dtype=str)}
    for r in (report.i2t, report.t2i):
        d = r.direction
        arrays |= {f"{d}_ap": r.ap, f"{d}_rank": r.paired_rank, f"{d}_top1": r.top1_correct}
        arrays |= {f"{d}_labels": r.query_labels, f"{d}_at_k": np.array(-1 if r.at_k is None else r.at_k)}
        for name, groups in (("ties", r.paired_ties), ("exact", r.paired_exact)):
            if groups is not None:
                arrays |= {f"{d}_{name}_{field}": getattr(groups, field) for field in _TIES}
    return arrays


def report_from_arrays(arrays: Mapping[str, np.ndarray]) -> EvaluationReport:
    """The report :func:`report_arrays` stored (``KeyError`` if a field is missing)."""

    def direction(d: Direction) -> RetrievalEval:
        ap = np.asarray(arrays[f"{d}_ap"])
        defined = ~np.isnan(ap)
        groups = [
            TieGroups(*(np.asarray(arrays[f"{d}_{name}_{field}"]) for field in _TIES))
            if f"{d}_{name}_others" in arrays
            else None
            for name in ("ties", "exact")
        ]
        at_k = int(arrays[f"{d}_at_k"])
        mean_ap = float(ap[defined].mean()) if defined.any() else float("nan")
        return RetrievalEval(
            d,
            mean_ap,
            ap,
            np.asarray(arrays[f"{d}_rank"]),
            np.asarray(arrays[f"{d}_top1"]),
            None if at_k < 0 else at_k,
            np.asarray(arrays[f"{d}_labels"]),
            *groups,
        )

    return EvaluationReport(direction("i2t"), direction("t2i"), [str(n) for n in arrays["label_names"]])
