"""The review tables: verdicts on queries, review queues and per-checkpoint outcome snapshots, and their migrations
(the `review` schema of :mod:`analysis.store`)."""

from __future__ import annotations

import sqlalchemy as sa

from analysis.store import Schema, UTCDateTime, append_only, metadata

verdicts_table = sa.Table(
    "verdicts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("dataset", sa.Text, nullable=False),  # dataset fingerprint
    sa.Column("checkpoint", sa.Text, nullable=False),  # checkpoint content hash
    sa.Column("checkpoint_name", sa.Text, nullable=False),
    sa.Column("query_id", sa.Text, nullable=False),
    sa.Column("direction", sa.Text, nullable=False),
    sa.Column("verdict", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("reviewer", sa.Text, nullable=False),
    sa.Column("queue_id", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("verdicts_by_checkpoint", "dataset", "checkpoint"),
    sa.Index("verdicts_by_query", "dataset", "query_id", "direction"),
    sqlite_autoincrement=True,  # ids are never reused, so "highest id" is "latest" even across a crash
)
queues_table = sa.Table(
    "queues",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # a content hash of the spec
    sa.Column("dataset", sa.Text, nullable=False),
    sa.Column("checkpoint", sa.Text, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # JSON
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
outcomes_table = sa.Table(
    "outcomes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("dataset", sa.Text, nullable=False),
    sa.Column("checkpoint", sa.Text, nullable=False),
    sa.Column("checkpoint_name", sa.Text, nullable=False),
    sa.Column("query_id", sa.Text, nullable=False),
    sa.Column("direction", sa.Text, nullable=False),
    sa.Column("ap", sa.Float, nullable=False),
    sa.Column("own_rank", sa.Integer, nullable=False),
    sa.Column("mis_retrieved", sa.Boolean, nullable=False),
    sa.UniqueConstraint("dataset", "checkpoint", "query_id", "direction", name="one_outcome_per_query"),
)

SCHEMA = Schema(
    "review",
    (
        lambda conn: metadata.create_all(conn, tables=[verdicts_table, queues_table]),
        lambda conn: outcomes_table.create(conn),  # outcome snapshots, so later checkpoints can say what changed
        lambda conn: append_only(conn, [verdicts_table.name]),  # a changed verdict is a new row, in SQL too
    ),
    linear=(1, 2, 3),  # the single sequence's versions 1 and 2 created these tables, its version 3 the triggers
)
