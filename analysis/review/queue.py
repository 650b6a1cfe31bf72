"""The meeting-review queue: a checkpoint's mis-retrieved queries, their severity, verdict status, what changed
since the last reviewed checkpoint, and meeting queues that everyone who opens the link sees alike.

No Streamlit here; the page ("Review") and the CLI (`chtn review`) show exactly these tables. Every score and
rank comes from :mod:`chtn.ranking` (bit-exact whatever the batch), so a queue rebuilt on another machine from
the same checkpoint and data lists the same queries.

A query is **mis-retrieved** when one of these holds (its *kind* is the first that does):
- ``wrong_top1``: its top-1 result belongs to another category;
- ``low_ap``: its average precision is below ``LOW_AP``;
- ``pair_outranked``: items of other categories outrank its own pair (the pair's rank exceeds the number of
  relevant items). On the sample, the own pair ranks beyond 10 for half the queries, most of them behind
  relevant items only, which is not an error.

**Severity** (0..1, higher first) is the mean of three depths: 1 - AP; how far down the first relevant result
comes (log rank / log gallery size: a confident wrong top-1 pushes every relevant item down); and how far down
the own pair comes (same scale).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from chtn.directions import DIRECTIONS
from chtn.errors import CHTNError
from chtn.evaluate import EvaluationReport
from chtn.gallery import Gallery
from chtn.ranking import cosine_scores
from chtn.search import query_side

LOW_AP = 0.5
KINDS = {"wrong_top1": "wrong top-1", "low_ap": "low AP", "pair_outranked": "own pair outranked"}
STRATA = ("category", "direction", "kind")
STATUSES = ("unreviewed", "reviewed", "disputed")
# A query mis-retrieved under both checkpoints "changed" when its AP moved by at least this much.
CHANGE_AP = 0.05
CHANGES = {"new regression": 0, "worse": 1, "better": 2, "same": 3, "not reviewed before": 4}
_BLOCK = 512  # queries scored at once: a (512 x gallery) float32 block


@dataclass(frozen=True)
class QueueSpec:
    """A meeting queue: `size` items drawn per stratum round-robin, in an order fixed by `seed`.

    Strata are the combinations of the chosen `strata` fields over the mis-retrieved items that pass the filters
    (empty filter = all). Each round takes one item from every stratum (strata in seeded order, items within a
    stratum by `pick`: seeded random, or most severe first) until `size` items are taken; the queue is then shown
    most severe first. The randomness is a hash of (seed, query, direction): the same on every machine and every
    numpy version.
    """

    size: int = 30
    seed: int = 0
    strata: tuple[str, ...] = STRATA
    pick: str = "random"  # random | severe
    directions: tuple[str, ...] = DIRECTIONS
    categories: tuple[str, ...] = field(default=())
    kinds: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 1 <= self.size <= 10_000:
            problems.append(f"size must be a whole number from 1 to 10000, got {self.size!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            problems.append(f"seed must be a whole number >= 0, got {self.seed!r}")
        for name, allowed in (("strata", STRATA), ("directions", DIRECTIONS), ("kinds", tuple(KINDS))):
            unknown = [v for v in getattr(self, name) if v not in allowed]
            if unknown:
                problems.append(f"{name} may hold {', '.join(allowed)}; got {', '.join(map(str, unknown))}")
        if not self.directions:
            problems.append("directions must name at least one of i2t, t2i")
        if self.pick not in ("random", "severe"):
            problems.append(f"pick must be random or severe, got {self.pick!r}")
        if problems:
            raise CHTNError("Invalid queue spec: " + "; ".join(problems) + ".")

    def queue_id(self, checkpoint: str, dataset: str) -> str:
        """Content id of this spec on one checkpoint and dataset (what the URL and the store name a queue by)."""
        text = json.dumps({"spec": asdict(self), "checkpoint": checkpoint, "dataset": dataset}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        """In words, e.g. "30 items · seed 0 · strata category × direction × kind · random within a stratum"."""
        filters = [
            f"{name} {', '.join(getattr(self, name))}" for name in ("categories", "kinds") if getattr(self, name)
        ]
        if set(self.directions) != {"i2t", "t2i"}:
            filters.append(f"directions {', '.join(self.directions)}")
        return " · ".join(
            [
                f"{self.size} items",
                f"seed {self.seed}",
                f"strata {' × '.join(self.strata) or 'none'}",
                f"{self.pick} within a stratum",
                *filters,
            ]
        )

    def to_params(self) -> dict[str, str]:
        """URL query parameters (defaults left out) that :meth:`from_params` reads back."""
        default, params = QueueSpec(), {}
        for key, value in asdict(self).items():
            if value != getattr(default, key):
                params[key] = ",".join(value) if isinstance(value, tuple) else str(value)
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> QueueSpec:
        """A spec from URL parameters or `key=value` pairs; a `CHTNError` naming the bad field."""
        values: dict[str, Any] = {}  # parsed per field below; QueueSpec checks the values it is given
        for key, text in params.items():
            if key not in cls.__dataclass_fields__:
                continue  # other URL parameters (checkpoint, item, ...)
            if key in ("size", "seed"):
                if not str(text).strip().isdecimal() or len(str(text).strip()) > 6:
                    raise CHTNError(f"Invalid queue spec: {key} must be a whole number, got {text!r}.")
                values[key] = int(text)
            elif key == "pick":
                values[key] = str(text)
            else:
                values[key] = tuple(v.strip() for v in str(text).split(",") if v.strip())
        return cls(**values)

    @classmethod
    def parse(cls, text: str) -> QueueSpec:
        """A spec from `size=30,seed=1,strata=category+kind` (list values joined by `+`) or a JSON object."""
        text = text.strip()
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise CHTNError(f"Invalid queue spec: not valid JSON ({exc.msg} at character {exc.pos}).") from None
            except RecursionError:  # json's parser recurses once per nesting level
                raise CHTNError("Invalid queue spec: the JSON is nested too deeply; give one flat object.") from None
            except ValueError:  # an integer of over 4,300 digits
                raise CHTNError("Invalid queue spec: a number in the JSON has too many digits.") from None
            if not isinstance(obj, dict):
                raise CHTNError('Invalid queue spec: the JSON must be an object such as {"size": 30, "seed": 0}.')
            unknown = sorted(set(obj) - set(cls.__dataclass_fields__))
            if unknown:
                raise CHTNError(f"Invalid queue spec: unknown field(s) {', '.join(unknown)}.")
            return cls.from_params({key: _json_param(key, value) for key, value in obj.items()})
        params = {}
        parts = [p.strip() for p in text.split(",")] if text else []
        for position, part in enumerate(parts, start=1):
            if not part:
                raise CHTNError(
                    f"Invalid queue spec: item {position} of {len(parts)} is empty (two commas in a row, or a comma "
                    "at the start or end); write field=value items separated by single commas, e.g. size=30,seed=0."
                )
            key, eq, value = part.partition("=")
            if not eq or key.strip() not in cls.__dataclass_fields__:
                raise CHTNError(
                    f"Invalid queue spec: {part!r} is not field=value with a field among "
                    f"{', '.join(cls.__dataclass_fields__)} (e.g. size=30,seed=0,strata=category+direction)."
                )
            if value.strip() and "" in (v.strip() for v in value.split("+")):
                raise CHTNError(
                    f"Invalid queue spec: {part!r} has an empty value between '+' signs; join the values with single "
                    "'+' signs, e.g. strata=category+direction."
                )
            params[key.strip()] = value.replace("+", ",")
        return cls.from_params(params)


def _json_param(key: str, value: object) -> str:
    """A JSON spec field as the text `QueueSpec.from_params` reads: a whole number for size and seed, a string for
    pick, a list of strings (or one comma-separated string) for the others; a `CHTNError` naming the field else."""
    if key in ("size", "seed"):
        if isinstance(value, int) and not isinstance(value, bool) or isinstance(value, str):
            return str(value)  # from_params checks the digits and the range
        example = 30 if key == "size" else 0
        raise CHTNError(
            f'Invalid queue spec: {key} must be a whole number (e.g. "{key}": {example}), got {value!r:.80}.'
        )
    if key == "pick":
        if isinstance(value, str):
            return value
        raise CHTNError(f'Invalid queue spec: pick must be "random" or "severe", got {value!r:.80}.')
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ",".join(value)
    raise CHTNError(
        f'Invalid queue spec: {key} must be a list of strings (e.g. "{key}": ["a", "b"]), got {value!r:.80}.'
    )


def _first_relevant(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1-based rank of each row's best relevant item under the ordering convention (score desc, row asc);
    0 where a row has no relevant item."""
    masked = np.where(relevant, scores, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    best_row = np.argmax(masked == best, axis=1)[:, None]  # lowest row among the relevant items at that score
    columns = np.arange(scores.shape[1])[None, :]
    before = (scores > best) | ((scores == best) & (columns < best_row))
    return np.where(relevant.any(axis=1), before.sum(axis=1) + 1, 0)


def query_outcomes(gallery: Gallery, report: EvaluationReport, label_names: Sequence[str]) -> pd.DataFrame:
    """Every query of both directions with its outcome: one row per (query, direction), i2t first.

    Columns: row, query_id, direction, category, ap, own_rank, own_tied_with, n_relevant, first_relevant,
    top1_row, top1_id, top1_category, top1_score, kind ('' when retrieved well), mis_retrieved, severity.
    """
    ids = np.asarray(gallery.data.ids)
    names = np.asarray(label_names)
    counts = np.bincount(gallery.labels, minlength=len(label_names))
    frames = []
    for side in (report.i2t, report.t2i):
        queries, targets = query_side(gallery, side.direction)
        n = len(queries)
        first = np.empty(n, dtype=np.int64)
        top1 = np.empty(n, dtype=np.int64)
        top1_score = np.empty(n, dtype=np.float32)
        for lo in range(0, n, _BLOCK):
            scores = cosine_scores(queries[lo : lo + _BLOCK], targets)
            relevant = gallery.labels[None, :] == side.query_labels[lo : lo + _BLOCK, None]
            first[lo : lo + _BLOCK] = _first_relevant(scores, relevant)
            top1[lo : lo + _BLOCK] = np.argmax(scores, axis=1)  # first maximum: the lowest row, as ranking ties
            top1_score[lo : lo + _BLOCK] = scores[np.arange(len(scores)), top1[lo : lo + _BLOCK]]
        n_relevant = counts[side.query_labels]
        own = side.paired_rank
        kind = np.select(
            [~side.top1_correct, side.ap < LOW_AP, own > n_relevant], list(KINDS), default=""
        )  # NaN AP compares False: a query without relevant items is judged by its top-1 only
        depth = np.log(np.maximum(np.stack([first, own]), 1)) / np.log(max(len(targets), 2))
        severity = (np.nan_to_num(1 - side.ap, nan=1.0) + depth[0] + depth[1]) / 3
        frames.append(
            pd.DataFrame(
                {
                    "row": np.arange(n),
                    "query_id": ids,
                    "direction": side.direction,
                    "category": names[side.query_labels],
                    "ap": side.ap,
                    "own_rank": own,
                    "own_tied_with": side.paired_ties.others if side.paired_ties is not None else -1,
                    "n_relevant": n_relevant,
                    "first_relevant": first,
                    "top1_row": top1,
                    "top1_id": ids[top1],
                    "top1_category": names[gallery.labels[top1]],
                    "top1_score": top1_score,
                    "kind": kind,
                    "mis_retrieved": kind != "",
                    "severity": severity,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def misretrievals(outcomes: pd.DataFrame) -> pd.DataFrame:
    """The mis-retrieved queries, most severe first (ties: direction, then query row)."""
    wrong = outcomes[outcomes["mis_retrieved"]]
    return wrong.sort_values(["severity", "direction", "row"], ascending=[False, True, True], kind="stable")


def snapshot(outcomes: pd.DataFrame) -> pd.DataFrame:
    """What the store keeps of a checkpoint's outcomes, so later checkpoints can say what changed."""
    return outcomes[["query_id", "direction", "ap", "own_rank", "mis_retrieved"]].reset_index(drop=True)


def verdict_status(current: pd.DataFrame) -> pd.DataFrame:
    """Per (query_id, direction) with current verdicts (the store's latest row per reviewer): status (reviewed when
    every reviewer agrees, else disputed), the verdict(s) in words, reviewers, and the notes."""
    columns = ["query_id", "direction", "status", "verdict", "reviewers", "notes"]
    if current.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (query_id, direction), group in current.groupby(["query_id", "direction"], sort=False):
        tally = group["verdict"].value_counts()
        notes = [f"{r.reviewer}: {r.note}" for r in group.itertuples() if r.note.strip()]
        rows.append(
            {
                "query_id": query_id,
                "direction": direction,
                "status": "reviewed" if len(tally) == 1 else "disputed",
                "verdict": "; ".join(f"{v} ×{n}" if n > 1 else v for v, n in tally.items()),
                "reviewers": ", ".join(sorted(group["reviewer"])),
                "notes": "\n".join(notes),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def changes(items: pd.DataFrame, previous: pd.DataFrame) -> pd.Series:
    """How each item's outcome changed since a previous checkpoint's snapshot (`CHANGES`; "not reviewed before"
    when there is no snapshot or the query was not in it)."""
    if previous.empty:
        return pd.Series("not reviewed before", index=items.index)
    before = previous.set_index(["query_id", "direction"])
    keys = pd.MultiIndex.from_frame(items[["query_id", "direction"]])
    was_wrong = before["mis_retrieved"].reindex(keys).to_numpy()
    old_ap = before["ap"].reindex(keys).to_numpy(dtype=float)
    delta = items["ap"].to_numpy(dtype=float) - old_ap
    now_wrong = items["mis_retrieved"].to_numpy(dtype=bool)
    known = pd.notna(was_wrong)
    was = np.where(known, was_wrong, False).astype(bool)
    label = np.select(
        [~known, now_wrong & ~was, delta <= -CHANGE_AP, delta >= CHANGE_AP],
        ["not reviewed before", "new regression", "worse", "better"],
        default="same",
    )
    return pd.Series(label, index=items.index)


def annotate(outcomes: pd.DataFrame, current: pd.DataFrame, previous: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every query's outcome with its verdict status (from the store's current verdicts) and the change since
    `previous` (the last reviewed checkpoint's snapshot; None: none). Adds status, verdict, reviewers, notes, change."""
    table = outcomes.merge(verdict_status(current), on=["query_id", "direction"], how="left")
    table["status"] = table["status"].fillna("unreviewed")
    for column in ("verdict", "reviewers", "notes"):
        table[column] = table[column].fillna("")
    table["change"] = changes(table, previous if previous is not None else pd.DataFrame())
    return table


def filter_table(
    table: pd.DataFrame,
    categories: Sequence[str] = (),
    directions: Sequence[str] = (),
    statuses: Sequence[str] = (),
    changed_only: bool = False,
) -> pd.DataFrame:
    """Rows passing every given filter (empty = no filter), numbered by a 1-based `position`. `changed_only` keeps
    new regressions, worse and better items, new regressions first (then by severity)."""
    keep = np.ones(len(table), dtype=bool)
    for column, wanted in (("category", categories), ("direction", directions), ("status", statuses)):
        if wanted:
            keep &= table[column].isin(list(wanted)).to_numpy()
    if changed_only:
        keep &= table["change"].isin(["new regression", "worse", "better"]).to_numpy()
    out = table[keep]
    if changed_only:
        order = out["change"].map(CHANGES)
        out = out.assign(_order=order).sort_values(["_order", "severity"], ascending=[True, False], kind="stable")
        out = out.drop(columns="_order")
    return out.reset_index(drop=True).assign(position=np.arange(1, len(out) + 1))


def counts(table: pd.DataFrame) -> dict[str, int]:
    """Items by verdict status, and in all: what the page shows at the top ("reviewed 12 of 30")."""
    tally = table["status"].value_counts() if len(table) else pd.Series(dtype=int)
    return {"total": len(table), **{s: int(tally.get(s, 0)) for s in STATUSES}}


def _draw_key(seed: int, *parts: object) -> str:
    """A seeded pseudo-random sort key, the same on every machine and library version."""
    return hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).hexdigest()


def meeting_queue(annotated: pd.DataFrame, spec: QueueSpec) -> pd.DataFrame:
    """The spec's items among the mis-retrieved queries (see `QueueSpec`), most severe first, with a 1-based
    `position`."""
    pool = misretrievals(annotated)
    pool = pool[pool["direction"].isin(spec.directions)]
    if spec.categories:
        pool = pool[pool["category"].isin(spec.categories)]
    if spec.kinds:
        pool = pool[pool["kind"].isin(spec.kinds)]
    if spec.pick == "random":
        order = [_draw_key(spec.seed, q, d) for q, d in zip(pool["query_id"], pool["direction"])]
        pool = pool.assign(_key=order).sort_values("_key", kind="stable").drop(columns="_key")
    else:
        pool = pool.sort_values("severity", ascending=False, kind="stable")
    strata = list(spec.strata)
    groups = [g for _, g in pool.groupby(strata, sort=True)] if strata else [pool]
    groups.sort(key=lambda g: _draw_key(spec.seed, *g.iloc[0][strata]) if strata else "")
    taken: list[Hashable] = []  # pool index labels
    depth = 0
    while len(taken) < spec.size and any(depth < len(g) for g in groups):
        for group in groups:
            if depth < len(group) and len(taken) < spec.size:
                taken.append(group.index[depth])
        depth += 1
    queue = pool.loc[taken].sort_values(["severity", "direction", "row"], ascending=[False, True, True])
    return queue.reset_index(drop=True).assign(position=lambda q: np.arange(1, len(q) + 1))


def queue_from_items(annotated: pd.DataFrame, items: Sequence[Sequence[str]]) -> pd.DataFrame:
    """A stored queue's items ((query_id, direction) pairs, in their order) looked up in :func:`annotate`'s table,
    with a 1-based `position`; items the data no longer holds are dropped."""
    keys = pd.DataFrame([tuple(item) for item in items], columns=["query_id", "direction"])
    queue = keys.merge(annotated, on=["query_id", "direction"], how="inner")
    return queue.assign(position=np.arange(1, len(queue) + 1))
