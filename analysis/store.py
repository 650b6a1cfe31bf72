"""The database every feature's records live in: where it is, how to connect, the errors a user sees, and the
migrations that bring each feature's schema up to date on open. Features define their tables and migrations (a
`Schema`: review's verdicts, compare's decisions) and open one `Store` with the schemas they need.

SQLite by default (one file; WAL, `synchronous=FULL`, a busy timeout), the same code on PostgreSQL through a
database URL for a team server (docs/conventions.md, "The store"). SQLAlchemy Core with bound parameters only.
Every write returns only after its COMMIT returned, so what the UI confirms survives a crash or a kill.

Versions: each schema has its own sequence, one `schema_migrations` row per applied step. Before that, one
sequence (`schema_version`, versions 1-3) covered every table; a schema names the old versions that applied its
first steps (`Schema.linear`), so such a database is recognised and never migrated twice. Every migrated database
also gets the row `LINEAR_END` there, which a CHTN from before per-schema versions reads as "newer than I know".
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from chtn.errors import CHTNError

DB_ENV = "CHTN_REVIEW_DB"
BUSY_TIMEOUT_S = 10.0  # how long a write waits for another writer's lock (SQLite) before it is an error
CONNECT_TIMEOUT_S = 10  # how long connecting to a PostgreSQL server may take (libpq's minimum is 2)
CHANGE_LOCATION = "choose another location (--review-db, the sidebar, or $CHTN_REVIEW_DB)"
MIGRATION_LOCK = 0x43_48_54_4E  # PostgreSQL advisory lock key ("CHTN"): one migrator at a time
LINEAR_END = 4  # the schema_version row that ends the single sequence (its last step was 3)


class StoreError(CHTNError):
    """A database failure the user can act on (read-only, locked, unreachable, not ours, too new), in plain words."""


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


metadata = sa.MetaData()  # every feature's tables, so two features cannot define the same table name
schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("component", sa.Text, primary_key=True),  # a Schema's name
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),  # one row per applied step
    sa.Column("applied_at", UTCDateTime, nullable=False),
)
linear_versions = sa.Table(  # the single sequence of the versions before per-schema ones; only read and ended now
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)

Migration = Callable[[sa.Connection], None]


@dataclass(frozen=True)
class Schema:
    """One feature's tables as migrations, hand-written rather than Alembic: a small schema shipped inside the app
    and migrated on open needs no revision files, autogenerate or CLI. Step i (1-based) brings the schema from
    version i-1 to i; steps are only ever appended. A step that changes an existing table must use ALTER, not
    today's Table objects. `linear[i]`: the old single-sequence version that applied step i+1, if one did."""

    name: str
    migrations: tuple[Migration, ...]
    linear: tuple[int, ...] = ()

    @property
    def latest(self) -> int:
        return len(self.migrations)


def append_only(conn: sa.Connection, tables: Sequence[str]) -> None:
    """Triggers that refuse UPDATE and DELETE on `tables`: append-only is the database's rule too, not only the
    code's (fixed DDL from the callers' table names; no value of anyone's goes into it)."""
    if conn.dialect.name == "sqlite":
        for table in tables:
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
    for table in tables:
        conn.execute(
            sa.text(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION chtn_append_only()"
            )
        )


def lock(conn: sa.Connection, key: int) -> None:
    """Hold the PostgreSQL advisory lock `key` until this transaction ends; on SQLite the write transaction's
    BEGIN IMMEDIATE already excludes other writers."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def insert_ignoring_duplicates(conn: sa.Connection, table: sa.Table, keys: list[str]) -> sa.Insert:
    """INSERT ... ON CONFLICT DO NOTHING on the given unique key, the first writer wins (both backends' dialect)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=keys)


def inserted_id(result: sa.CursorResult) -> int:
    """The primary key of the one row an INSERT added."""
    key = result.inserted_primary_key
    assert key is not None  # set by every single-row INSERT
    (row_id,) = key
    return row_id


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
    raise StoreError(
        f"The review database location {text.split('://')[0]}://... is not one CHTN can use: give a file path "
        "(SQLite), sqlite:///path/review.sqlite or postgresql://user@host/database."
    )


def _describe(url: sa.URL) -> str:
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    host = url.host or url.query.get("host") or "localhost"
    port = url.port or url.query.get("port") or 5432
    return f"PostgreSQL database {url.database} on {host}:{port}"


def _write_ahead_log(dbapi_connection: sqlite3.Connection, busy_timeout_s: float) -> None:
    """Put the file in WAL mode (persistent, so only its first opener changes it). SQLite answers "database is
    locked" at once, without its busy handler, when several connections switch a new file at the same moment
    (6 threads opening one new file failed 71 times in 400 on SQLite 3.40), so the switch is retried here until
    the busy timeout has passed."""
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_connections(engine: sa.Engine, busy_timeout_s: float) -> None:
    """SQLAlchemy's pysqlite recipe: we emit BEGIN ourselves, BEGIN IMMEDIATE for writes, so that two transactions
    that both read and then write cannot deadlock on upgrading their locks; pragmas on every new connection."""

    @sa.event.listens_for(engine, "connect")
    def connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # sqlite3 emits no BEGIN (nor a COMMIT before DDL)
        # PRAGMAs take no bound parameters; the only value is an int computed here.
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        _write_ahead_log(dbapi_connection, busy_timeout_s)
        dbapi_connection.execute("PRAGMA synchronous = FULL")
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @sa.event.listens_for(engine, "begin")
    def begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("chtn_write") else "BEGIN")


@dataclass(frozen=True)
class _Versions:
    """What a database records of its versions: per-schema maxima, and the old single sequence's rows."""

    recorded: dict[str, int]  # schema name -> highest schema_migrations row
    linear: set[int]  # schema_version rows

    def current(self, schema: Schema) -> int:
        """The schema's version: its own rows, or else the steps that old single-sequence versions applied."""
        return max(self.recorded.get(schema.name, 0), sum(v in self.linear for v in schema.linear))


class Store:
    """The database at `location` (a path, `sqlite:///...` or `postgresql://...`), created and its `schemas`
    migrated on open; other schemas' tables in the same database are left alone. Thread-safe: it holds only an
    Engine (a connection pool), so one object serves every dashboard session."""

    def __init__(
        self,
        location: str | Path,
        schemas: Sequence[Schema],
        *,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        migrate_to: Mapping[str, int] | None = None,
    ) -> None:
        """`migrate_to` (schema name -> version; default: each one's latest) is for tests, which build databases
        of older versions with it."""
        self.location = str(location)
        self.schemas = tuple(schemas)
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
        targets = {schema.name: schema.latest for schema in self.schemas} | dict(migrate_to or {})
        try:
            self._migrate(targets)
        except BaseException:
            self._engine.dispose()
            raise

    def describe(self) -> str:
        """Where the records live, for the UI and CLI (never a password)."""
        return self._description

    def schema_versions(self) -> dict[str, int]:
        """The version of each schema this store was opened with."""
        with self.reading() as conn:
            versions = self._versions(conn)
        return {schema.name: versions.current(schema) for schema in self.schemas}

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        """A connection to read with; failures as StoreError."""
        with self._errors(), self._engine.connect() as conn:
            yield conn

    @contextmanager
    def writing(self) -> Iterator[sa.Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed when the block ends; failures as StoreError.
        Other exceptions roll it back and pass unchanged."""
        with self._errors(), self._writer.begin() as conn:
            yield conn

    # Migrations -------------------------------------------------------------------------------------------------

    def _whole(self, version: object, what: str, table: str) -> int:
        """A recorded version, or a StoreError when it is something else (SQLite keeps text in an integer column),
        since then the database was not written by CHTN or was edited by hand."""
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise StoreError(
                f"The review database {self._where} records {what}version {version!r}, not a whole number: it "
                f"was not written by CHTN, or its {table} table was edited. Restore it from a backup, or "
                f"{CHANGE_LOCATION}."
            )
        return version

    def _versions(self, conn: sa.Connection) -> _Versions:
        """The recorded versions; a StoreError when one of this store's schemas is newer than this CHTN knows."""
        inspector = sa.inspect(conn)
        linear: set[int] = set()
        if inspector.has_table(linear_versions.name):
            rows = conn.execute(sa.select(linear_versions.c.version)).scalars()
            linear = {self._whole(version, "schema ", linear_versions.name) for version in rows}
        recorded: dict[str, int] = {}
        if inspector.has_table(schema_migrations.name):
            m = schema_migrations.c
            for name, version in conn.execute(sa.select(m.component, m.version)):
                version = self._whole(version, f"{name} schema ", schema_migrations.name)
                recorded[name] = max(recorded.get(name, 0), version)
        versions = _Versions(recorded, linear)
        for schema in self.schemas:
            if (current := versions.current(schema)) > schema.latest:
                raise StoreError(
                    f"The review database {self._where} has {schema.name} schema version {current}, newer than "
                    f"this CHTN knows ({schema.latest}): upgrade CHTN (pip install -U chtn), or {CHANGE_LOCATION}."
                )
        return versions

    def _pending(self, versions: _Versions, targets: Mapping[str, int]) -> bool:
        """Whether a schema has steps to run, or versions from the old single sequence not yet recorded as its own."""
        return any(
            versions.current(s) < targets[s.name] or versions.recorded.get(s.name, 0) < versions.current(s)
            for s in self.schemas
        )

    def _migrate(self, targets: Mapping[str, int]) -> None:
        """Bring each schema to its target (checked without a write lock first: most opens find them current)."""
        with self.reading() as conn:
            if not self._pending(self._versions(conn), targets):
                return
        with self.writing() as conn:
            lock(conn, MIGRATION_LOCK)
            versions = self._versions(conn)  # re-read: another process may have migrated meanwhile
            metadata.create_all(conn, tables=[schema_migrations, linear_versions])
            if LINEAR_END not in versions.linear:
                conn.execute(sa.insert(linear_versions).values(version=LINEAR_END, applied_at=datetime.now(UTC)))
            linear_at = dict(conn.execute(sa.select(linear_versions.c.version, linear_versions.c.applied_at)).all())
            for schema in self.schemas:
                done, recorded = versions.current(schema), versions.recorded.get(schema.name, 0)
                record = sa.insert(schema_migrations).values(component=schema.name)
                for version in range(recorded + 1, done + 1):  # steps the old sequence applied, with its times
                    conn.execute(record.values(version=version, applied_at=linear_at[schema.linear[version - 1]]))
                for version in range(done + 1, targets[schema.name] + 1):
                    schema.migrations[version - 1](conn)
                    conn.execute(record.values(version=version, applied_at=datetime.now(UTC)))

    # Errors -----------------------------------------------------------------------------------------------------

    def _read_only_file(self, sqlite_error: str) -> bool:
        """Whether SQLite could not open or write its file because the file or its folder is not writable (sqlite
        reports that as CANTOPEN or IOERR, e.g. for its -wal/-shm files). os.access also sees `chattr +i`."""
        if self._sqlite_path is None or not sqlite_error.startswith(("SQLITE_CANTOPEN", "SQLITE_IOERR")):
            return False
        paths = [p for p in (self._sqlite_path, os.path.dirname(self._sqlite_path)) if os.path.exists(p)]
        return not all(os.access(p, os.W_OK) for p in paths)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Database and file-system failures as StoreError naming the database and what to do."""
        try:
            yield
        except sa.exc.DBAPIError as error:
            raise StoreError(self._explain(error.orig if error.orig is not None else error)) from error
        except OSError as error:
            raise StoreError(self._explain(error)) from error

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
