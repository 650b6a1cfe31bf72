"""The meeting-review records over the shared database (:mod:`analysis.store`): verdicts on queries, review queues
and per-checkpoint outcome snapshots (tables in :mod:`analysis.review.schema`).

Verdicts are append-only: a changed verdict is a new row, and the latest row (highest id, not the timestamp:
the clocks of several dashboards may disagree) per (dataset, checkpoint, query, direction, reviewer) is current.
Every write returns only after its COMMIT returned, so a verdict the UI confirms survives a crash or a kill.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from analysis.review.schema import SCHEMA, outcomes_table, queues_table, verdicts_table
from analysis.store import BUSY_TIMEOUT_S, Schema, Store, StoreError, insert_ignoring_duplicates, inserted_id
from chtn.directions import DIRECTIONS

VERDICTS: tuple[str, ...] = ("model error", "label noise", "ambiguous", "data problem", "acceptable")
MAX_NOTE_CHARS = 1_000_000  # notes are stored verbatim up to this; longer -> StoreError
MAX_REVIEWER_CHARS = 200
COLUMNS = ["id", "dataset", "checkpoint", "checkpoint_name", "query_id", "direction"]
COLUMNS += ["verdict", "note", "reviewer", "queue_id", "created_at"]
OUTCOME_COLUMNS = ["query_id", "direction", "ap", "own_rank", "mis_retrieved"]


@dataclass(frozen=True)
class Verdict:
    """One stored verdict row."""

    id: int
    dataset: str
    checkpoint: str
    checkpoint_name: str
    query_id: str
    direction: str
    verdict: str
    note: str
    reviewer: str
    queue_id: str | None
    created_at: datetime  # timezone-aware UTC


def _frame(rows: Sequence[sa.Row]) -> pd.DataFrame:
    frame = pd.DataFrame([tuple(row) for row in rows], columns=COLUMNS)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


class ReviewStore(Store):
    """The review database at `location` with the review schema, and `also` other features' schemas (the
    dashboard's one store serves the Compare page's decisions too), created and migrated on open."""

    def __init__(
        self,
        location: str | Path,
        *,
        also: Sequence[Schema] = (),
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        migrate_to: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(location, (SCHEMA, *also), busy_timeout_s=busy_timeout_s, migrate_to=migrate_to)

    # Verdicts ---------------------------------------------------------------------------------------------------

    def save_verdict(
        self,
        *,
        dataset: str,
        checkpoint: str,
        checkpoint_name: str,
        query_id: str,
        direction: str,
        verdict: str,
        note: str,
        reviewer: str,
        queue_id: str | None = None,
    ) -> Verdict:
        """Append one verdict (a changed verdict is a new row) and return the stored row once it is committed."""
        reviewer = reviewer.strip()
        if verdict not in VERDICTS:
            raise StoreError(f"Unknown verdict {verdict!r}: choose one of {', '.join(VERDICTS)}.")
        if direction not in DIRECTIONS:
            raise StoreError(f"Unknown direction {direction!r}: use 'i2t' (image to text) or 't2i'.")
        if not reviewer:
            raise StoreError("The reviewer name is empty: enter your name before saving a verdict.")
        if len(reviewer) > MAX_REVIEWER_CHARS:
            raise StoreError(f"The reviewer name is {len(reviewer):,} characters: use at most 200.")
        if len(note) > MAX_NOTE_CHARS:
            raise StoreError(
                f"The note is {len(note):,} characters: the review database keeps at most {MAX_NOTE_CHARS:,}; "
                "shorten it or link to the longer text."
            )
        row: dict[str, Any] = dict(
            dataset=dataset, checkpoint=checkpoint, checkpoint_name=checkpoint_name, query_id=query_id
        )
        row |= dict(direction=direction, verdict=verdict, note=note, reviewer=reviewer, queue_id=queue_id)
        for field, value in row.items():  # PostgreSQL text cannot hold NUL; refused on SQLite too, for one behaviour
            if value is not None and "\x00" in value:
                raise StoreError(f"The {field} contains a NUL character (\\x00), which cannot be stored: remove it.")
        row["created_at"] = datetime.now(UTC)
        with self.writing() as conn:
            row_id = inserted_id(conn.execute(sa.insert(verdicts_table).values(**row)))
        return Verdict(id=row_id, **row)

    def verdicts(self, dataset: str, checkpoint: str | None = None) -> pd.DataFrame:
        """Every verdict row (the full history) of the dataset, optionally of one checkpoint, ordered by id."""
        query = sa.select(verdicts_table).where(verdicts_table.c.dataset == dataset)
        if checkpoint is not None:
            query = query.where(verdicts_table.c.checkpoint == checkpoint)
        return self._read_verdicts(query.order_by(verdicts_table.c.id))

    def current_verdicts(self, dataset: str, checkpoint: str) -> pd.DataFrame:
        """The latest row per (query_id, direction, reviewer) of one checkpoint, ordered by id."""
        v = verdicts_table.c
        latest = (
            sa.select(sa.func.max(v.id))
            .where(v.dataset == dataset, v.checkpoint == checkpoint)
            .group_by(v.query_id, v.direction, v.reviewer)
        )
        return self._read_verdicts(sa.select(verdicts_table).where(v.id.in_(latest)).order_by(v.id))

    def query_history(self, dataset: str, query_id: str, direction: str) -> pd.DataFrame:
        """Every checkpoint's verdict rows for one query, newest first."""
        v = verdicts_table.c
        query = sa.select(verdicts_table).where(v.dataset == dataset, v.query_id == query_id, v.direction == direction)
        return self._read_verdicts(query.order_by(v.id.desc()))

    def reviewed_checkpoints(self, dataset: str) -> pd.DataFrame:
        """Checkpoints of the dataset with verdicts (name and time of their latest row), latest reviewed first."""
        v = verdicts_table.c
        summary = (
            sa.select(v.checkpoint, sa.func.count().label("n_verdicts"), sa.func.max(v.id).label("last_id"))
            .where(v.dataset == dataset)
            .group_by(v.checkpoint)
            .subquery()
        )
        query = (
            sa.select(summary.c.checkpoint, v.checkpoint_name, summary.c.n_verdicts, summary.c.last_id, v.created_at)
            .join(verdicts_table, v.id == summary.c.last_id)
            .order_by(summary.c.last_id.desc())
        )
        with self.reading() as conn:
            rows = conn.execute(query).all()
        columns = ["checkpoint", "checkpoint_name", "n_verdicts", "last_id", "last_at"]
        frame = pd.DataFrame([tuple(row) for row in rows], columns=columns)
        frame["last_at"] = pd.to_datetime(frame["last_at"], utc=True)
        return frame

    # Queues and outcome snapshots -------------------------------------------------------------------------------

    def save_queue(self, queue_id: str, *, dataset: str, checkpoint: str, spec: dict, created_by: str) -> None:
        """Keep a review queue's spec; the first save of an id wins (the id is a content hash of the spec)."""
        row = dict(id=queue_id, dataset=dataset, checkpoint=checkpoint, spec=json.dumps(spec), created_by=created_by)
        with self.writing() as conn:
            conn.execute(
                insert_ignoring_duplicates(conn, queues_table, ["id"]).values(**row, created_at=datetime.now(UTC))
            )

    def queue(self, queue_id: str) -> dict | None:
        """The saved queue {"id", "dataset", "checkpoint", "spec", "created_by", "created_at"}, or None."""
        with self.reading() as conn:
            row = conn.execute(sa.select(queues_table).where(queues_table.c.id == queue_id)).mappings().first()
        return None if row is None else {**row, "spec": json.loads(row["spec"])}

    def save_outcomes(self, *, dataset: str, checkpoint: str, checkpoint_name: str, outcomes: pd.DataFrame) -> None:
        """Snapshot every query's outcome under a checkpoint, once: if a snapshot exists, do nothing."""
        o = outcomes_table.c
        columns = [outcomes[name].tolist() for name in OUTCOME_COLUMNS]  # tolist(): Python scalars, not numpy's
        rows = [
            dict(query_id=str(q), direction=d, ap=float(ap), own_rank=int(rank), mis_retrieved=bool(mis))
            for q, d, ap, rank, mis in zip(*columns)
        ]
        with self.writing() as conn:
            exists = conn.execute(sa.select(o.id).where(o.dataset == dataset, o.checkpoint == checkpoint).limit(1))
            if rows and exists.first() is None:
                keys = ["dataset", "checkpoint", "query_id", "direction"]  # a concurrent snapshot's rows win
                insert = insert_ignoring_duplicates(conn, outcomes_table, keys)
                conn.execute(
                    insert.values(dataset=dataset, checkpoint=checkpoint, checkpoint_name=checkpoint_name), rows
                )

    def outcomes(self, dataset: str, checkpoint: str) -> pd.DataFrame:
        """The checkpoint's outcome snapshot (OUTCOME_COLUMNS), empty if none was saved."""
        o = outcomes_table.c
        query = sa.select(*(o[name] for name in OUTCOME_COLUMNS)).where(
            o.dataset == dataset, o.checkpoint == checkpoint
        )
        with self.reading() as conn:
            rows = conn.execute(query.order_by(o.id)).all()
        frame = pd.DataFrame([tuple(row) for row in rows], columns=OUTCOME_COLUMNS)
        return frame.astype({"ap": "float64", "own_rank": "int64", "mis_retrieved": "bool"})

    def _read_verdicts(self, query: sa.Select) -> pd.DataFrame:
        with self.reading() as conn:
            return _frame(conn.execute(query).all())
