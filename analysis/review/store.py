"""The meeting-review database: verdicts on queries, review queues and per-checkpoint outcome snapshots.

SQLite by default (one file; WAL, `synchronous=FULL`, a busy timeout), the same code on PostgreSQL through a
database URL for a team server (docs/conventions.md, "The store"). SQLAlchemy Core with bound parameters only.
Verdicts are append-only: a changed verdict is a new row, and the latest row (highest id, not the timestamp:
the clocks of several dashboards may disagree) per (dataset, checkpoint, query, direction, reviewer) is current.
Every write returns only after its COMMIT returned, so a verdict the UI confirms survives a crash or a kill.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from chtn.directions import DIRECTIONS
from chtn.errors import CHTNError

VERDICTS: tuple[str, ...] = ("model error", "label noise", "ambiguous", "data problem", "acceptable")
DB_ENV = "CHTN_REVIEW_DB"
MAX_NOTE_CHARS = 1_000_000  # notes are stored verbatim up to this; longer -> ReviewStoreError
MAX_REVIEWER_CHARS = 200
BUSY_TIMEOUT_S = 10.0  # how long a write waits for another writer's lock (SQLite) before it is an error
CONNECT_TIMEOUT_S = 10  # how long connecting to a PostgreSQL server may take (libpq's minimum is 2)
COLUMNS = ["id", "dataset", "checkpoint", "checkpoint_name", "query_id", "direction"]
COLUMNS += ["verdict", "note", "reviewer", "queue_id", "created_at"]
OUTCOME_COLUMNS = ["query_id", "direction", "ap", "own_rank", "mis_retrieved"]
CHANGE_LOCATION = "choose another location (--review-db, the sidebar, or $CHTN_REVIEW_DB)"


class ReviewStoreError(CHTNError):
    """A database failure the user can act on (read-only, locked, unreachable, not ours, too new), in plain words."""


class RepeatedDecision(ReviewStoreError):
    """The decision asked for is the comparison's current one already (`existing` is its stored row)."""

    def __init__(self, message: str, existing: dict) -> None:
        super().__init__(message)
        self.existing = existing


class UTCDateTime(sa.TypeDecorator):
    """Timezone-aware UTC datetimes on both backends: SQLite's DATETIME drops the zone (stored as naive UTC here),
    PostgreSQL's timestamptz returns the session's zone (converted back to UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()
schema_versions = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),  # one row per applied migration
    sa.Column("applied_at", UTCDateTime, nullable=False),
)
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
DECISIONS = ("GO", "NO-GO", "GO with override")
# What makes a decision a new one: a record equal to the comparison's current decision in all of these repeats it.
DECISION_IDENTITY = ("decision", "override_reason", "deciders", "rationale", "rule_sha256", "gate")
_APPEND_ONLY = ("verdicts", "decisions")


def _append_only(conn: sa.Connection) -> None:
    """Triggers that refuse UPDATE and DELETE on verdicts and decisions: append-only is the database's rule too,
    not only this module's (fixed DDL; no value of anyone's goes into it)."""
    if conn.dialect.name == "sqlite":
        for table in _APPEND_ONLY:
            for action in ("UPDATE", "DELETE"):
                conn.execute(
                    sa.text(
                        f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                        f"BEGIN SELECT RAISE(ABORT, '{table} are append-only: add a new row instead'); END"
                    )
                )
        return
    conn.execute(
        sa.text(
            "CREATE OR REPLACE FUNCTION chtn_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION '% are append-only: add a new row instead', TG_TABLE_NAME; END $$"
        )
    )
    for table in _APPEND_ONLY:
        conn.execute(
            sa.text(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION chtn_append_only()"
            )
        )


def _add_decisions(conn: sa.Connection) -> None:
    """The go/no-go decision records, append-only (migration 3)."""
    decisions_table.create(conn)
    _append_only(conn)


# Migrations, hand-written rather than Alembic: one small schema shipped inside the app and migrated on open needs
# no revision files, autogenerate or CLI. Step i (1-based) brings a database from version i-1 to i; steps are only
# ever appended. A step that changes an existing table must use ALTER, not today's Table objects.
MIGRATIONS: tuple[Callable[[sa.Connection], None], ...] = (
    lambda conn: metadata.create_all(conn, tables=[schema_versions, verdicts_table, queues_table]),
    lambda conn: outcomes_table.create(conn),  # outcome snapshots, so later checkpoints can say what changed
    _add_decisions,  # go/no-go decision records
)
SCHEMA_VERSION = len(MIGRATIONS)
MIGRATION_LOCK = 0x43_48_54_4E  # PostgreSQL advisory lock key ("CHTN"): one migrator at a time
DECISION_LOCK = MIGRATION_LOCK + 1  # one decision writer at a time, so a repeat is seen (SQLite: BEGIN IMMEDIATE)


def default_location(environ: Mapping[str, str] | None = None) -> str:
    """$CHTN_REVIEW_DB if set, else $XDG_DATA_HOME/chtn/review.sqlite (XDG_DATA_HOME defaulting to ~/.local/share;
    a relative value is ignored, as the XDG spec says)."""
    environ = os.environ if environ is None else environ
    if environ.get(DB_ENV):
        return environ[DB_ENV]
    data_home = environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(data_home):
        data_home = str(Path(environ.get("HOME") or Path.home()) / ".local" / "share")
    return str(Path(data_home) / "chtn" / "review.sqlite")


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


def _database_url(location: str | Path) -> sa.URL:
    """A plain path is an SQLite file; `sqlite:///` and `postgresql[+psycopg]://` URLs are used as given
    (plain `postgresql://` through psycopg 3)."""
    text = str(location)
    if "://" not in text:
        return sa.URL.create("sqlite", database=str(Path(text).expanduser().absolute()))
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError:
        url = None
    if url is not None and url.drivername in ("postgresql", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if url is not None and url.drivername == "sqlite" and url.database not in (None, "", ":memory:"):
        return url.set(database=str(Path(url.database).expanduser().absolute()))
    raise ReviewStoreError(
        f"The review database location {text.split('://')[0]}://... is not one CHTN can use: give a file path "
        "(SQLite), sqlite:///path/review.sqlite or postgresql://user@host/database."
    )


def _describe(url: sa.URL) -> str:
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    host = url.host or url.query.get("host") or "localhost"
    port = url.port or url.query.get("port") or 5432
    return f"PostgreSQL database {url.database} on {host}:{port}"


def _sqlite_connections(engine: sa.Engine, busy_timeout_s: float) -> None:
    """SQLAlchemy's pysqlite recipe: we emit BEGIN ourselves, BEGIN IMMEDIATE for writes, so that two transactions
    that both read and then write cannot deadlock on upgrading their locks; pragmas on every new connection."""

    @sa.event.listens_for(engine, "connect")
    def connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # sqlite3 emits no BEGIN (nor a COMMIT before DDL)
        # PRAGMAs take no bound parameters; the only value is an int computed here.
        for pragma in (f"busy_timeout = {int(busy_timeout_s * 1000)}", "journal_mode = WAL", "synchronous = FULL"):
            dbapi_connection.execute(f"PRAGMA {pragma}")
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @sa.event.listens_for(engine, "begin")
    def begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("chtn_write") else "BEGIN")


def _insert_ignoring_duplicates(conn: sa.Connection, table: sa.Table, keys: list[str]) -> sa.Insert:
    """INSERT ... ON CONFLICT DO NOTHING on the given unique key, the first writer wins (both backends' dialect)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=keys)


def _frame(rows: Sequence[sa.Row]) -> pd.DataFrame:
    frame = pd.DataFrame([tuple(row) for row in rows], columns=COLUMNS)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def _inserted_id(result: sa.CursorResult) -> int:
    """The primary key of the one row an INSERT added."""
    key = result.inserted_primary_key
    assert key is not None  # set by every single-row INSERT
    (row_id,) = key
    return row_id


class ReviewStore:
    """The review database at `location` (a path, `sqlite:///...` or `postgresql://...`), created and migrated on
    open. Thread-safe: it holds only an Engine (a connection pool), so one object serves every dashboard session."""

    def __init__(
        self, location: str | Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S, migrate_to: int = SCHEMA_VERSION
    ) -> None:
        """`migrate_to` is for tests, which build databases of older versions with it."""
        self.location = str(location)
        self.busy_timeout_s = busy_timeout_s
        url = _database_url(location)
        self._description = _describe(url)
        self._sqlite_path = url.database if url.get_backend_name() == "sqlite" else None
        self._where = self._sqlite_path or self._description  # how error messages name it
        if self._sqlite_path is not None:
            with self._errors():
                Path(self._sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            self._engine = sa.create_engine(url)
            _sqlite_connections(self._engine, busy_timeout_s)
        else:
            self._engine = sa.create_engine(
                url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
            )
        self._writer = self._engine.execution_options(chtn_write=True)
        try:
            self._migrate(migrate_to)
        except BaseException:
            self._engine.dispose()
            raise

    def describe(self) -> str:
        """Where the verdicts live, for the UI and CLI (never a password)."""
        return self._description

    def schema_version(self) -> int:
        with self._errors(), self._engine.connect() as conn:
            return self._version(conn)

    def close(self) -> None:
        self._engine.dispose()

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
            raise ReviewStoreError(f"Unknown verdict {verdict!r}: choose one of {', '.join(VERDICTS)}.")
        if direction not in DIRECTIONS:
            raise ReviewStoreError(f"Unknown direction {direction!r}: use 'i2t' (image to text) or 't2i'.")
        if not reviewer:
            raise ReviewStoreError("The reviewer name is empty: enter your name before saving a verdict.")
        if len(reviewer) > MAX_REVIEWER_CHARS:
            raise ReviewStoreError(f"The reviewer name is {len(reviewer):,} characters: use at most 200.")
        if len(note) > MAX_NOTE_CHARS:
            raise ReviewStoreError(
                f"The note is {len(note):,} characters: the review database keeps at most {MAX_NOTE_CHARS:,}; "
                "shorten it or link to the longer text."
            )
        row: dict[str, Any] = dict(
            dataset=dataset, checkpoint=checkpoint, checkpoint_name=checkpoint_name, query_id=query_id
        )
        row |= dict(direction=direction, verdict=verdict, note=note, reviewer=reviewer, queue_id=queue_id)
        for field, value in row.items():  # PostgreSQL text cannot hold NUL; refused on SQLite too, for one behaviour
            if value is not None and "\x00" in value:
                raise ReviewStoreError(
                    f"The {field} contains a NUL character (\\x00), which cannot be stored: remove it."
                )
        row["created_at"] = datetime.now(UTC)
        with self._errors(), self._writer.begin() as conn:
            row_id = _inserted_id(conn.execute(sa.insert(verdicts_table).values(**row)))
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
        with self._errors(), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        columns = ["checkpoint", "checkpoint_name", "n_verdicts", "last_id", "last_at"]
        frame = pd.DataFrame([tuple(row) for row in rows], columns=columns)
        frame["last_at"] = pd.to_datetime(frame["last_at"], utc=True)
        return frame

    # Queues and outcome snapshots -------------------------------------------------------------------------------

    def save_queue(self, queue_id: str, *, dataset: str, checkpoint: str, spec: dict, created_by: str) -> None:
        """Keep a review queue's spec; the first save of an id wins (the id is a content hash of the spec)."""
        row = dict(id=queue_id, dataset=dataset, checkpoint=checkpoint, spec=json.dumps(spec), created_by=created_by)
        with self._errors(), self._writer.begin() as conn:
            conn.execute(
                _insert_ignoring_duplicates(conn, queues_table, ["id"]).values(**row, created_at=datetime.now(UTC))
            )

    def queue(self, queue_id: str) -> dict | None:
        """The saved queue {"id", "dataset", "checkpoint", "spec", "created_by", "created_at"}, or None."""
        with self._errors(), self._engine.connect() as conn:
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
        with self._errors(), self._writer.begin() as conn:
            exists = conn.execute(sa.select(o.id).where(o.dataset == dataset, o.checkpoint == checkpoint).limit(1))
            if rows and exists.first() is None:
                keys = ["dataset", "checkpoint", "query_id", "direction"]  # a concurrent snapshot's rows win
                insert = _insert_ignoring_duplicates(conn, outcomes_table, keys)
                conn.execute(
                    insert.values(dataset=dataset, checkpoint=checkpoint, checkpoint_name=checkpoint_name), rows
                )

    def outcomes(self, dataset: str, checkpoint: str) -> pd.DataFrame:
        """The checkpoint's outcome snapshot (OUTCOME_COLUMNS), empty if none was saved."""
        o = outcomes_table.c
        query = sa.select(*(o[name] for name in OUTCOME_COLUMNS)).where(
            o.dataset == dataset, o.checkpoint == checkpoint
        )
        with self._errors(), self._engine.connect() as conn:
            rows = conn.execute(query.order_by(o.id)).all()
        frame = pd.DataFrame([tuple(row) for row in rows], columns=OUTCOME_COLUMNS)
        return frame.astype({"ap": "float64", "own_rank": "int64", "mis_retrieved": "bool"})

    # Internals --------------------------------------------------------------------------------------------------

    # Decisions ---------------------------------------------------------------------------------------------------

    def save_decision(self, **record: object) -> dict:
        """Append one go/no-go decision record (columns of the `decisions` table but id and created_at; `rules` and
        `review_counts` as JSON-ready objects) and return it as stored. A later decision supersedes, never edits.

        `RepeatedDecision` when it equals the comparison's current decision in every `DECISION_IDENTITY` field
        (a second click, or a second person recording what the room already recorded): checked inside the write
        transaction, so two dashboards pressing at once still store it once."""
        decision, reason = record.get("decision"), str(record.get("override_reason") or "").strip()
        if decision not in DECISIONS:
            raise ReviewStoreError(f"Unknown decision {decision!r}: choose one of {', '.join(DECISIONS)}.")
        if decision == "GO with override" and not reason:
            raise ReviewStoreError("A GO with override needs its reason: say why the rules are overridden.")
        if not str(record.get("deciders") or "").strip():
            raise ReviewStoreError("Name the deciders (who took this decision) before recording it.")
        row = {**record, "override_reason": reason, "created_at": datetime.now(UTC)}
        row["rules"], row["review_counts"] = json.dumps(row["rules"]), json.dumps(row["review_counts"])
        columns = {c.name for c in decisions_table.columns} - {"id"}
        if set(row) != columns:
            raise ValueError(f"decision record fields differ from the table: {sorted(set(row) ^ columns)}")
        for field, value in row.items():
            if isinstance(value, str) and "\x00" in value:
                raise ReviewStoreError(f"The {field} contains a NUL character (\\x00), which cannot be stored.")
        d = decisions_table.c
        pair = (d.dataset == row["dataset"], d.baseline == row["baseline"], d.candidate == row["candidate"])
        with self._errors(), self._writer.begin() as conn:
            if conn.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE already excludes other writers
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(DECISION_LOCK)))
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
            row_id = _inserted_id(conn.execute(sa.insert(decisions_table).values(**row)))
        return {"id": row_id, **row}

    def decisions(self, dataset: str, baseline: str, candidate: str) -> pd.DataFrame:
        """Every decision on this (dataset, baseline, candidate), newest first; `superseded_by` names the id of the
        decision that followed each (None for the current one)."""
        d = decisions_table.c
        query = sa.select(decisions_table).where(d.dataset == dataset, d.baseline == baseline, d.candidate == candidate)
        with self._errors(), self._engine.connect() as conn:
            rows = conn.execute(query.order_by(d.id.desc())).all()
        frame = pd.DataFrame([row._asdict() for row in rows], columns=[c.name for c in decisions_table.columns])
        frame["superseded_by"] = pd.Series([None, *frame["id"].tolist()[:-1]][: len(frame)], dtype=object)
        for column in ("rules", "review_counts"):
            frame[column] = frame[column].map(json.loads)
        return frame

    def _read_verdicts(self, query: sa.Select) -> pd.DataFrame:
        with self._errors(), self._engine.connect() as conn:
            return _frame(conn.execute(query).all())

    def _version(self, conn: sa.Connection) -> int:
        """The highest applied migration; a ReviewStoreError when the table holds something else (SQLite keeps
        text in an integer column), since then the database was not written by CHTN or was edited by hand."""
        if not sa.inspect(conn).has_table(schema_versions.name):
            return 0
        version = conn.execute(sa.select(sa.func.max(schema_versions.c.version))).scalar_one() or 0
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ReviewStoreError(
                f"The review database {self._where} records schema version {version!r}, not a whole number: it "
                f"was not written by CHTN, or its schema_version table was edited. Restore it from a backup, or "
                f"{CHANGE_LOCATION}."
            )
        return version

    def _migrate(self, target: int) -> None:
        """Bring the database to `target` (checked without a write lock first: most opens find it current)."""
        with self._errors():
            with self._engine.connect() as conn:
                version = self._version(conn)
            if version > SCHEMA_VERSION:
                raise ReviewStoreError(
                    f"The review database {self._where} has schema version {version}, newer than this CHTN knows "
                    f"({SCHEMA_VERSION}): upgrade CHTN (pip install -U chtn), or {CHANGE_LOCATION}."
                )
            if version >= target:
                return
            with self._writer.begin() as conn:
                if conn.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE already excludes other writers
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                for version in range(self._version(conn) + 1, target + 1):  # re-read: another process may have won
                    MIGRATIONS[version - 1](conn)
                    conn.execute(sa.insert(schema_versions).values(version=version, applied_at=datetime.now(UTC)))

    def _read_only_file(self, sqlite_error: str) -> bool:
        """Whether SQLite could not open or write its file because the file or its folder is not writable (sqlite
        reports that as CANTOPEN or IOERR, e.g. for its -wal/-shm files). os.access also sees `chattr +i`."""
        if self._sqlite_path is None or not sqlite_error.startswith(("SQLITE_CANTOPEN", "SQLITE_IOERR")):
            return False
        paths = [p for p in (self._sqlite_path, os.path.dirname(self._sqlite_path)) if os.path.exists(p)]
        return not all(os.access(p, os.W_OK) for p in paths)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Database and file-system failures as ReviewStoreError naming the database and what to do."""
        try:
            yield
        except sa.exc.DBAPIError as error:
            raise ReviewStoreError(self._explain(error.orig if error.orig is not None else error)) from error
        except OSError as error:
            raise ReviewStoreError(self._explain(error)) from error

    def _explain(self, error: BaseException) -> str:
        where = f"The review database {self._where}"
        name = getattr(error, "sqlite_errorname", "")  # Python 3.11+: SQLITE_BUSY, SQLITE_READONLY_DBMOVED, ...
        if name.startswith("SQLITE_READONLY") or isinstance(error, PermissionError) or self._read_only_file(name):
            return f"{where} is read-only: {CHANGE_LOCATION} or make it (and its folder) writable."
        if name.startswith("SQLITE_BUSY"):
            return (
                f"{where} is locked: another program kept writing to it for more than {self.busy_timeout_s:g} s. "
                "Try again; if it persists, close other CHTN dashboards or commands using it."
            )
        if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            return f"{where} is not a CHTN review database (or it is damaged): {CHANGE_LOCATION}."
        if name.startswith("SQLITE_FULL"):
            return f"{where} cannot grow: its disk is full. Free some space, or {CHANGE_LOCATION}."
        if name.startswith("SQLITE_CANTOPEN"):
            return f"{where} cannot be opened: check that its folder exists and is accessible, or {CHANGE_LOCATION}."
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if self._sqlite_path is None and type(error).__name__ == "OperationalError":
            return (
                f"{where} cannot be reached ({first_line}): check that the server is running and the URL's host, "
                f"port, user and database, or {CHANGE_LOCATION}."
            )
        return f"{where} failed: {first_line}. {CHANGE_LOCATION[0].upper()}{CHANGE_LOCATION[1:]} if this persists."
