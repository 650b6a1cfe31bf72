"""The meeting-review queue: a checkpoint's mis-retrieved queries (:mod:`analysis.outcomes`) with their verdict
status and what changed since the last reviewed checkpoint, and meeting queues that everyone who opens the link
sees alike.

No Streamlit here; the page ("Review") and the CLI (`chtn review`) show exactly these tables.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.outcomes import CHANGES, KINDS, changes, misretrievals
from chtn.directions import DIRECTIONS
from chtn.errors import CHTNError

STRATA = ("category", "direction", "kind")
STATUSES = ("unreviewed", "reviewed", "disputed")


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
        if set(self.directions) != set(DIRECTIONS):
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
