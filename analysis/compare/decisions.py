"""The go/no-go decision records of comparisons: their table and migration (the `decisions` schema of
:mod:`analysis.store`, kept in the review database beside the verdicts), recording a decision and reading a
comparison's log, and the review evidence a decision is taken on.

Append-only like verdicts: a later decision supersedes, none is edited (docs/conventions.md).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

from analysis.review.store import ReviewStore
from analysis.store import (
    MIGRATION_LOCK,
    Schema,
    Store,
    StoreError,
    UTCDateTime,
    append_only,
    inserted_id,
    lock,
    metadata,
)

decisions_table = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("dataset", sa.Text, nullable=False),  # dataset fingerprint
    sa.Column("baseline", sa.Text, nullable=False),  # content hashes
    sa.Column("candidate", sa.Text, nullable=False),
    sa.Column("baseline_name", sa.Text, nullable=False),
    sa.Column("candidate_name", sa.Text, nullable=False),
    sa.Column("decision", sa.Text, nullable=False),  # GO | NO-GO | GO with override
    sa.Column("override_reason", sa.Text, nullable=False),
    sa.Column("deciders", sa.Text, nullable=False),
    sa.Column("rationale", sa.Text, nullable=False),
    sa.Column("rule_source", sa.Text, nullable=False),
    sa.Column("rule_text", sa.Text, nullable=False),
    sa.Column("rule_sha256", sa.Text, nullable=False),
    sa.Column("resamples", sa.Integer, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("gate", sa.Text, nullable=False),  # what the rules said: GO | NO-GO, and the summary
    sa.Column("rules", sa.Text, nullable=False),  # JSON: every evaluated rule with its figures
    sa.Column("review_counts", sa.Text, nullable=False),  # JSON: verdict counts on the candidate's regressions
    sa.Column("code_version", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("decisions_by_pair", "dataset", "baseline", "candidate"),
    sqlite_autoincrement=True,
)


def _add_decisions(conn: sa.Connection) -> None:
    """The decision records, append-only."""
    decisions_table.create(conn)
    append_only(conn, [decisions_table.name])


SCHEMA = Schema("decisions", (_add_decisions,), linear=(3,))  # the single sequence's version 3 added them
DECISIONS = ("GO", "NO-GO", "GO with override")
# What makes a decision a new one: a record equal to the comparison's current decision in all of these repeats it.
DECISION_IDENTITY = ("decision", "override_reason", "deciders", "rationale", "rule_sha256", "gate")
DECISION_LOCK = MIGRATION_LOCK + 1  # one decision writer at a time, so a repeat is seen (SQLite: BEGIN IMMEDIATE)


class RepeatedDecision(StoreError):
    """The decision asked for is the comparison's current one already (`existing` is its stored row)."""

    def __init__(self, message: str, existing: dict) -> None:
        super().__init__(message)
        self.existing = existing


def _checked(store: Store) -> Store:
    """The store, opened with this schema: without it a fresh database has no decisions table."""
    if SCHEMA not in store.schemas:
        raise ValueError("the store was opened without the decisions schema: pass also=(decisions.SCHEMA,)")
    return store


def save_decision(store: Store, **record: object) -> dict:
    """Append one go/no-go decision record (columns of the `decisions` table but id and created_at; `rules` and
    `review_counts` as JSON-ready objects) and return it as stored. A later decision supersedes, never edits.

    `RepeatedDecision` when it equals the comparison's current decision in every `DECISION_IDENTITY` field
    (a second click, or a second person recording what the room already recorded): checked inside the write
    transaction, so two dashboards pressing at once still store it once."""
    decision, reason = record.get("decision"), str(record.get("override_reason") or "").strip()
    if decision not in DECISIONS:
        raise StoreError(f"Unknown decision {decision!r}: choose one of {', '.join(DECISIONS)}.")
    if decision == "GO with override" and not reason:
        raise StoreError("A GO with override needs its reason: say why the rules are overridden.")
    if not str(record.get("deciders") or "").strip():
        raise StoreError("Name the deciders (who took this decision) before recording it.")
    row = {**record, "override_reason": reason, "created_at": datetime.now(UTC)}
    row["rules"], row["review_counts"] = json.dumps(row["rules"]), json.dumps(row["review_counts"])
    columns = {c.name for c in decisions_table.columns} - {"id"}
    if set(row) != columns:
        raise ValueError(f"decision record fields differ from the table: {sorted(set(row) ^ columns)}")
    for field, value in row.items():
        if isinstance(value, str) and "\x00" in value:
            raise StoreError(f"The {field} contains a NUL character (\\x00), which cannot be stored.")
    d = decisions_table.c
    pair = (d.dataset == row["dataset"], d.baseline == row["baseline"], d.candidate == row["candidate"])
    with _checked(store).writing() as conn:
        lock(conn, DECISION_LOCK)
        current = conn.execute(sa.select(decisions_table).where(*pair).order_by(d.id.desc()).limit(1)).first()
        if current is not None and all(
            str(getattr(current, f)).strip() == str(row[f]).strip() for f in DECISION_IDENTITY
        ):
            raise RepeatedDecision(
                f"This decision is already recorded: #{current.id}, {current.decision} by {current.deciders} "
                f"at {current.created_at:%Y-%m-%d %H:%M} UTC, is the comparison's current decision, with the "
                "same reason, rationale and rules. Nothing was added; to record it again, say in the rationale "
                "what is new.",
                current._asdict(),
            )
        row_id = inserted_id(conn.execute(sa.insert(decisions_table).values(**row)))
    return {"id": row_id, **row}


def decisions(store: Store, dataset: str, baseline: str, candidate: str) -> pd.DataFrame:
    """Every decision on this (dataset, baseline, candidate), newest first; `superseded_by` names the id of the
    decision that followed each (None for the current one)."""
    d = decisions_table.c
    query = sa.select(decisions_table).where(d.dataset == dataset, d.baseline == baseline, d.candidate == candidate)
    with _checked(store).reading() as conn:
        rows = conn.execute(query.order_by(d.id.desc())).all()
    frame = pd.DataFrame([row._asdict() for row in rows], columns=[c.name for c in decisions_table.columns])
    frame["superseded_by"] = pd.Series([None, *frame["id"].tolist()[:-1]][: len(frame)], dtype=object)
    for column in ("rules", "review_counts"):
        frame[column] = frame[column].map(json.loads)
    return frame


def regression_review(
    store: ReviewStore | None, queries: pd.DataFrame, dataset: str, baseline: str, candidate: str
) -> tuple[list[dict], list[dict], dict[str, int]]:
    """From the review database (None: none): the decision log of this comparison (newest first), the reviewers'
    notes on the candidate's regressions and the count of their current verdicts. Empty without a store."""
    if store is None:
        return [], [], {}
    log = decisions(store, dataset, baseline, candidate)
    current = store.current_verdicts(dataset, candidate)
    broken = queries[queries["change"] == "broken"]
    keys = set(zip(broken["query_id"], broken["direction"]))
    on_regressions = (
        current[[k in keys for k in zip(current["query_id"], current["direction"])]] if len(current) else current
    )
    notes = [
        {"query_id": r.query_id, "direction": r.direction, "verdict": r.verdict, "note": r.note, "reviewer": r.reviewer}
        for r in on_regressions.itertuples()
        if r.note.strip()
    ]
    counts = {str(k): int(v) for k, v in on_regressions["verdict"].value_counts().items()} if len(current) else {}
    decision_log = [{k: v for k, v in row.items() if k not in ("rule_text",)} for row in log.to_dict("records")]
    return decision_log, notes, counts
