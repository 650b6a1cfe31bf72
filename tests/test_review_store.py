"""The review database on SQLite and on a real PostgreSQL (tests/postgres.py): behaviour, schema migrations,
concurrent threads and processes, kill -9 mid-write, and the errors a user sees."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from analysis import store as shared
from analysis.compare import decisions
from analysis.review import schema as review_schema
from analysis.review import store as review_store
from analysis.review.store import COLUMNS, ReviewStore
from analysis.store import StoreError, default_location
from tests.review_writer import note as writer_note

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["sqlite", pytest.param("postgresql", id="postgresql")]
TABLES = {"schema_migrations", "schema_version", "verdicts", "queues", "outcomes", "decisions"}
SCHEMAS = (review_schema.SCHEMA, decisions.SCHEMA)
LATEST = {schema.name: schema.latest for schema in SCHEMAS}
GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: an SQLite file path, or a new database on the session's PostgreSQL cluster."""
    if request.param == "sqlite":
        return str(tmp_path / "reviews" / "review.sqlite")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(location: str):
    opened = full(location)
    yield opened
    opened.close()


def full(location: str | Path, **options) -> ReviewStore:
    """The store as the dashboard and `chtn compare` open it: the review schema and the decisions schema."""
    return ReviewStore(location, also=(decisions.SCHEMA,), **options)


def save(store: ReviewStore, **fields) -> review_store.Verdict:
    row = dict(dataset="ds", checkpoint="ck1", checkpoint_name="epoch 1", query_id="q1", direction="i2t")
    row |= dict(verdict="model error", note="", reviewer="alice")
    return store.save_verdict(**(row | fields))


def table_names(location: str) -> set[str]:
    engine = sa.create_engine(shared._database_url(location))
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


# Behaviour -------------------------------------------------------------------------------------------------------


def test_a_verdict_round_trips_with_every_field(store: ReviewStore) -> None:
    before = datetime.now(UTC)
    saved = save(
        store,
        checkpoint_name="final.safetensors",
        direction="t2i",
        verdict="label noise",
        note="n",
        reviewer=" bo ",
        queue_id="qq",
    )
    assert saved.reviewer == "bo" and saved.queue_id == "qq" and saved.created_at.tzinfo is not None
    assert before <= saved.created_at <= datetime.now(UTC)
    frame = store.verdicts("ds")
    assert list(frame.columns) == COLUMNS and len(frame) == 1
    row = frame.iloc[0]
    stored = {name: row[name] for name in COLUMNS}
    stored["created_at"] = row["created_at"].to_pydatetime()
    assert stored == {**vars(saved), "id": saved.id}
    assert stored["created_at"].utcoffset().total_seconds() == 0  # UTC, even on a PostgreSQL session that is not


def test_a_changed_verdict_is_a_new_row_and_the_latest_is_current(store: ReviewStore) -> None:
    first = save(store, verdict="model error")
    second = save(store, verdict="acceptable", note="on second look")
    assert second.id > first.id
    assert store.verdicts("ds")["verdict"].tolist() == ["model error", "acceptable"]
    current = store.current_verdicts("ds", "ck1")
    assert current["id"].tolist() == [second.id] and current["note"].tolist() == ["on second look"]


def test_current_verdicts_are_per_reviewer_and_direction(store: ReviewStore) -> None:
    save(store, reviewer="alice", verdict="model error")
    bob = save(store, reviewer="bob", verdict="label noise")
    alice = save(store, reviewer="alice", verdict="ambiguous")
    other_direction = save(store, reviewer="alice", direction="t2i")
    save(store, checkpoint="ck2", reviewer="alice")
    current = store.current_verdicts("ds", "ck1")
    assert current["id"].tolist() == [bob.id, alice.id, other_direction.id]
    assert list(current.columns) == COLUMNS


def test_query_history_spans_checkpoints_newest_first(store: ReviewStore) -> None:
    old = save(store, checkpoint="ck1", verdict="model error")
    new = save(store, checkpoint="ck2", checkpoint_name="epoch 2", verdict="acceptable")
    save(store, query_id="q2")
    save(store, direction="t2i")
    save(store, dataset="other")
    history = store.query_history("ds", "q1", "i2t")
    assert history["id"].tolist() == [new.id, old.id] and history["checkpoint"].tolist() == ["ck2", "ck1"]
    assert store.verdicts("ds", "ck2")["id"].tolist() == [new.id]
    assert len(store.verdicts("ds")) == 4 and store.verdicts("nothing").columns.tolist() == COLUMNS


def test_reviewed_checkpoints_newest_first(store: ReviewStore) -> None:
    save(store, checkpoint="ck1")
    save(store, checkpoint="ck2", checkpoint_name="epoch 2")
    last = save(store, checkpoint="ck1", checkpoint_name="epoch 1 (renamed)")
    save(store, dataset="other", checkpoint="ck3")
    frame = store.reviewed_checkpoints("ds")
    assert list(frame.columns) == ["checkpoint", "checkpoint_name", "n_verdicts", "last_id", "last_at"]
    assert frame["checkpoint"].tolist() == ["ck1", "ck2"] and frame["n_verdicts"].tolist() == [2, 1]
    assert frame["checkpoint_name"].iloc[0] == "epoch 1 (renamed)" and frame["last_id"].iloc[0] == last.id
    assert frame["last_at"].iloc[0].to_pydatetime() == last.created_at
    assert store.reviewed_checkpoints("nothing").empty


def test_queues_first_save_wins(store: ReviewStore) -> None:
    spec = {"direction": "i2t", "k": 10, "filters": ["mis_retrieved"], "name": "ünï ✓"}
    store.save_queue("abc", dataset="ds", checkpoint="ck1", spec=spec, created_by="alice")
    store.save_queue("abc", dataset="ds", checkpoint="ck1", spec={"other": True}, created_by="bob")
    saved = store.queue("abc")
    assert {k: saved[k] for k in ("id", "dataset", "checkpoint", "spec", "created_by")} == {
        "id": "abc",
        "dataset": "ds",
        "checkpoint": "ck1",
        "spec": spec,
        "created_by": "alice",
    }
    assert saved["created_at"].tzinfo is not None and saved["created_at"].utcoffset().total_seconds() == 0
    assert store.queue("missing") is None


def test_outcomes_snapshot_is_kept_once_and_round_trips(store: ReviewStore) -> None:
    outcomes = pd.DataFrame(
        {
            "query_id": [f"q{i}" for i in range(5000)],
            "direction": ["i2t", "t2i"] * 2500,
            "ap": [i / 5000 for i in range(5000)],
            "own_rank": list(range(5000)),
            "mis_retrieved": [i % 3 == 0 for i in range(5000)],
        }
    )
    assert store.outcomes("ds", "ck1").columns.tolist() == review_store.OUTCOME_COLUMNS
    store.save_outcomes(dataset="ds", checkpoint="ck1", checkpoint_name="epoch 1", outcomes=outcomes)
    store.save_outcomes(dataset="ds", checkpoint="ck1", checkpoint_name="epoch 1", outcomes=outcomes.assign(ap=0.0))
    pd.testing.assert_frame_equal(store.outcomes("ds", "ck1"), outcomes, check_dtype=False)
    assert store.outcomes("ds", "ck1").dtypes.astype(str).tolist()[2:] == ["float64", "int64", "bool"]
    assert store.outcomes("ds", "ck2").empty and store.outcomes("other", "ck1").empty


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"verdict": "wrong"}, "verdict"),
        ({"direction": "both"}, "direction"),
        ({"reviewer": "   "}, "reviewer"),
        ({"reviewer": "x" * 201}, "reviewer"),
        ({"note": "x" * (review_store.MAX_NOTE_CHARS + 1)}, "note"),
        ({"note": "a\x00b"}, "note"),
        ({"query_id": "q\x00"}, "query_id"),
    ],
)
def test_invalid_fields_are_plain_errors_naming_the_field(store: ReviewStore, fields: dict, named: str) -> None:
    with pytest.raises(StoreError, match=named):
        save(store, **fields)
    assert store.verdicts("ds").empty


def test_any_note_text_is_stored_verbatim(store: ReviewStore, location: str) -> None:
    notes = [
        "'); DROP TABLE verdicts; --",
        '<script>alert(1)</script><img src=x onerror="alert(2)">',
        "emoji 🧪🔬👩🏽‍🔬 RTL: مرحبا بالعالم שלום עולם, combining é, zero-width \u200b, CRLF\r\nand\ttab '\"\\%_",
        "".join(chr(c) for c in range(1, 0x3000) if not 0xD800 <= c <= 0xDFFF) * 9 + "x" * 30_000,  # ~100 KB
        "",
    ]
    ids = [save(store, note=text).id for text in notes]
    stored = store.verdicts("ds")
    assert stored["id"].tolist() == ids
    assert [text.encode() for text in stored["note"]] == [text.encode() for text in notes]
    assert len(notes[3]) >= 100_000
    assert TABLES <= table_names(location)


def test_default_location(tmp_path: Path) -> None:
    assert default_location({"CHTN_REVIEW_DB": "postgresql://x@h/db", "XDG_DATA_HOME": "/d"}) == "postgresql://x@h/db"
    assert default_location({"XDG_DATA_HOME": "/data"}) == "/data/chtn/review.sqlite"
    assert default_location({"HOME": "/home/u"}) == "/home/u/.local/share/chtn/review.sqlite"
    assert default_location({"HOME": "/home/u", "XDG_DATA_HOME": "rel"}) == "/home/u/.local/share/chtn/review.sqlite"


def test_locations_and_descriptions(tmp_path: Path, postgres_cluster) -> None:
    for location in (tmp_path / "a" / "b" / "review.sqlite", f"sqlite:///{tmp_path}/c/review.sqlite"):
        opened = ReviewStore(location)
        assert opened.location == str(location) and opened.describe().startswith(f"SQLite file {tmp_path}/")
        assert Path(opened.describe().removeprefix("SQLite file ")).is_file()
        opened.close()
    url = postgres_cluster.url("postgres").replace("postgres@", "postgres:secret@").replace("+psycopg", "")
    opened = ReviewStore(url)  # the plain postgresql:// scheme goes through psycopg
    described = f"PostgreSQL database postgres on {postgres_cluster.socket_dir}:{postgres_cluster.port}"
    assert opened.describe() == described and "secret" not in opened.describe()
    opened.close()


# Schema ----------------------------------------------------------------------------------------------------------


def linear_versions(location: str) -> dict[int, datetime]:
    """The rows of the old single-sequence table: version -> applied_at."""
    engine = sa.create_engine(shared._database_url(location))
    try:
        with engine.connect() as conn:
            return {version: at for version, at in conn.execute(sa.select(shared.linear_versions))}
    finally:
        engine.dispose()


def migration_rows(location: str) -> list[tuple[str, int, datetime]]:
    """The per-schema versions' rows (component, version, applied_at), sorted."""
    engine = sa.create_engine(shared._database_url(location))
    try:
        with engine.connect() as conn:
            return sorted((c, v, at) for c, v, at in conn.execute(sa.select(shared.schema_migrations)))
    finally:
        engine.dispose()


def migrated(location: str) -> list[tuple[str, int]]:
    return [(component, version) for component, version, _ in migration_rows(location)]


ALL_STEPS = [("decisions", 1), ("review", 1), ("review", 2), ("review", 3)]


def edits_refused(location: str) -> list[str]:
    """The tables on whose rows an UPDATE and a DELETE in plain SQL both fail with the append-only message (the
    triggers fire per row: a table without rows refuses nothing). Edits that succeed are rolled back."""
    engine = sa.create_engine(shared._database_url(location))
    refused = []
    try:
        for table in ("verdicts", "decisions"):
            messages = []
            for statement in (f"UPDATE {table} SET dataset = 'edited'", f"DELETE FROM {table}"):
                with engine.connect() as conn:
                    try:
                        conn.execute(sa.text(statement))
                    except sa.exc.DBAPIError as error:
                        messages.append(str(error))
                    conn.rollback()
            if len(messages) == 2 and all("append-only" in m for m in messages):
                refused.append(table)
    finally:
        engine.dispose()
    return refused


def test_a_fresh_database_is_at_the_latest_version_of_each_schema(store: ReviewStore, location: str) -> None:
    assert store.schema_versions() == LATEST == {"review": 3, "decisions": 1}
    assert TABLES <= table_names(location) and migrated(location) == ALL_STEPS
    # a CHTN from before per-schema versions knew versions 1-3 of the single sequence: it refuses this database
    assert list(linear_versions(location)) == [shared.LINEAR_END] and shared.LINEAR_END > 3


def test_an_older_review_schema_migrates_on_open(location: str) -> None:
    old = ReviewStore(location, migrate_to={"review": 1})  # the first step only: verdicts and queues, no outcomes
    assert old.schema_versions() == {"review": 1} and "outcomes" not in table_names(location)
    kept = save(old)
    assert edits_refused(location) == []  # not yet: review's step 3 adds the verdicts' triggers
    old.close()
    store = full(location)
    assert store.schema_versions() == LATEST and store.verdicts("ds")["id"].tolist() == [kept.id]
    store.save_outcomes(
        dataset="ds",
        checkpoint="ck1",
        checkpoint_name="x",
        outcomes=pd.DataFrame(
            {"query_id": ["q"], "direction": ["i2t"], "ap": [1.0], "own_rank": [1], "mis_retrieved": [False]}
        ),
    )
    assert len(store.outcomes("ds", "ck1")) == 1
    decide(store)
    store.close()
    assert edits_refused(location) == ["verdicts", "decisions"]


def linear_database(location: str, version: int) -> None:
    """A database as CHTN wrote it before per-schema versions: the steps of the single sequence's versions 1 to
    `version` (which schema steps each one applied is `Schema.linear`), recorded in schema_version only, with a
    verdict and, from version 3 on, a decision."""
    if not location.startswith("postgresql"):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(shared._database_url(location))
    with engine.begin() as conn:
        shared.linear_versions.create(conn)
        for linear in range(1, version + 1):
            for schema in SCHEMAS:
                for step, introduced in zip(schema.migrations, schema.linear):
                    if introduced == linear:
                        step(conn)
            applied_at = datetime(2025, 1, linear, tzinfo=UTC)
            conn.execute(sa.insert(shared.linear_versions).values(version=linear, applied_at=applied_at))
        verdict = dict(dataset="ds", checkpoint="ck1", checkpoint_name="epoch 1", query_id="q1", direction="i2t")
        verdict |= dict(verdict="label noise", note=f"kept since version {version}", reviewer="alice")
        conn.execute(sa.insert(review_schema.verdicts_table).values(**verdict, created_at=datetime.now(UTC)))
        if version >= 3:
            record = dict(dataset="ds", baseline="a" * 16, candidate="b" * 16, baseline_name="A", candidate_name="B")
            record |= dict(decision="NO-GO", override_reason="", deciders="ada", rationale="regressions on Heels")
            record |= dict(rule_source="r", rule_text="", rule_sha256="0" * 64, resamples=1, seed=0, gate="NO-GO")
            record |= dict(rules="[]", review_counts="{}", code_version="0.1", created_at=datetime.now(UTC))
            conn.execute(sa.insert(decisions.decisions_table).values(**record))
    engine.dispose()


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_database_of_the_single_sequence_migrates_to_per_schema_versions(location: str, version: int) -> None:
    """Versions 1 and 2 applied review's first steps; version 3 the decisions and the append-only triggers on both
    tables. None of those runs again (a table or trigger created twice fails), the rest does; nothing is lost."""
    linear_database(location, version)
    store = full(location)
    assert store.schema_versions() == LATEST
    assert store.verdicts("ds")["note"].tolist() == [f"kept since version {version}"]
    log = decisions.decisions(store, "ds", "a" * 16, "b" * 16)
    assert log["rationale"].tolist() == (["regressions on Heels"] if version >= 3 else [])
    decide(store, decision="GO")
    store.close()
    assert edits_refused(location) == ["verdicts", "decisions"] and migrated(location) == ALL_STEPS
    old_steps = {(c, v): at for c, v, at in migration_rows(location) if at.year == 2025}  # recorded with their time
    expected = {("review", v): datetime(2025, 1, v, tzinfo=UTC) for v in range(1, version + 1)}
    if version >= 3:
        expected[("decisions", 1)] = datetime(2025, 1, 3, tzinfo=UTC)
    assert old_steps == expected
    assert sorted(linear_versions(location)) == [*range(1, version + 1), shared.LINEAR_END]
    rows = migration_rows(location)
    full(location).close()  # current now: opening again records nothing
    assert migration_rows(location) == rows


def schema_objects(path: Path) -> set[tuple[str, str, str]]:
    """SQLite's tables, indexes and triggers with their DDL, but for the per-schema versions' own table."""
    with sqlite3.connect(path) as conn:
        objects = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name != 'schema_migrations'")
        found = {(kind, name, sql or "") for kind, name, sql in objects}
    conn.close()
    return found


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_database_written_by_the_single_sequence_chtn_migrates_to_a_fresh_ones_schema(
    tmp_path: Path, version: int
) -> None:
    """tests/golden/review_db_linear_v*.sql were written by CHTN before per-schema versions, at each version: a
    verdict and a queue, from version 2 an outcome snapshot, at 3 a decision. They migrate to exactly the schema
    of a fresh database, their rows intact."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript((GOLDEN / f"review_db_linear_v{version}.sql").read_text(encoding="utf-8"))
    conn.close()
    store = full(path)
    assert store.schema_versions() == LATEST
    verdict = store.verdicts("ds").iloc[0]
    assert (verdict["id"], verdict["note"], verdict["queue_id"]) == (1, f"kept since version {version}", "qq")
    assert store.queue("qq")["spec"] == {"size": 30, "seed": 0}
    assert store.outcomes("ds", "ck1")["ap"].tolist() == ([0.25] if version >= 2 else [])
    log = decisions.decisions(store, "ds", "a" * 16, "b" * 16)
    assert log["rules"].tolist() == ([[{"rule": "MAP", "status": "fail"}]] if version >= 3 else [])
    assert save(store).id == 2 and decide(store, decision="GO")["id"] == (2 if version >= 3 else 1)
    store.close()
    fresh = tmp_path / "fresh.sqlite"
    full(fresh).close()
    assert schema_objects(path) == schema_objects(fresh)
    assert edits_refused(str(path)) == ["verdicts", "decisions"]


def add_step_row(location: str, component: str, version: int | str) -> None:
    """A schema_migrations row as a newer CHTN (or a hand edit) would leave it."""
    engine = sa.create_engine(shared._database_url(location))
    with engine.begin() as conn:
        conn.execute(
            sa.insert(shared.schema_migrations).values(
                component=component, version=version, applied_at=datetime.now(UTC)
            )
        )
    engine.dispose()


def test_a_review_only_open_leaves_the_decisions_alone(location: str) -> None:
    """`chtn review` opens the review schema only: a database that also holds decisions, even of a decisions
    schema newer than this CHTN knows, opens and works; the dashboard's full open says what is too new."""
    store = full(location)
    decide(store)
    save(store)
    store.close()
    add_step_row(location, "decisions", LATEST["decisions"] + 1)
    review_only = ReviewStore(location)
    assert review_only.schema_versions() == {"review": LATEST["review"]}
    save(review_only, verdict="acceptable")
    assert review_only.verdicts("ds")["verdict"].tolist() == ["model error", "acceptable"]
    with pytest.raises(ValueError, match="opened without the decisions schema"):
        decisions.decisions(review_only, "ds", "a" * 16, "b" * 16)
    review_only.close()
    with pytest.raises(StoreError, match="has decisions schema version 2, newer than this CHTN knows"):
        full(location)


def test_a_single_sequence_database_opened_for_review_only_keeps_its_decisions_for_later(location: str) -> None:
    """Review's steps become its own rows on the first open; the decisions that the old version 3 added are still
    recognised when the decisions schema is first opened, not created again."""
    linear_database(location, 3)
    ReviewStore(location).close()
    assert migrated(location) == [("review", 1), ("review", 2), ("review", 3)]
    store = full(location)
    assert store.schema_versions() == LATEST
    assert decisions.decisions(store, "ds", "a" * 16, "b" * 16)["rationale"].tolist() == ["regressions on Heels"]
    store.close()
    assert migrated(location) == ALL_STEPS


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda schema: schema.name)
def test_a_schema_newer_than_this_chtn_knows_is_refused(store: ReviewStore, location: str, schema) -> None:
    add_step_row(location, schema.name, schema.latest + 1)
    newer = rf"has {schema.name} schema version {schema.latest + 1}, newer than this CHTN knows \({schema.latest}\)"
    with pytest.raises(StoreError, match=newer + ": upgrade CHTN"):
        full(location)


@pytest.mark.parametrize("version", ["'2.0-beta'", "1.5", "-1"])
def test_a_schema_version_that_is_not_a_whole_number_is_a_clear_error(tmp_path: Path, version: str) -> None:
    path = tmp_path / "review.sqlite"
    with sqlite3.connect(path) as conn:  # another program's schema_version table, whose versions are not ours
        conn.execute("CREATE TABLE schema_version (version, applied_at)")
        conn.execute(f"INSERT INTO schema_version VALUES ({version}, '2024-01-01')")
    conn.close()
    with pytest.raises(StoreError, match=r"records schema version .*, not a whole number: it was not written"):
        ReviewStore(path)
    edited = tmp_path / "edited.sqlite"
    full(edited).close()
    with sqlite3.connect(edited) as conn:  # a per-schema version edited by hand
        conn.execute(f"INSERT INTO schema_migrations VALUES ('review', {version}, '2024-01-01')")
    conn.close()
    with pytest.raises(StoreError, match=r"records review schema version .*, not a whole number: .*schema_migrations"):
        ReviewStore(edited)


def test_stores_opened_at_once_migrate_once(location: str) -> None:
    """Dashboards and commands starting together: one migrates (advisory lock / BEGIN IMMEDIATE), the others then
    find the schemas current; a step run twice would fail, and so would that open."""
    opened: list[ReviewStore | Exception] = []

    def open_store() -> None:
        try:
            opened.append(full(location))
        except Exception as error:  # collected, asserted below
            opened.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stores = [store for store in opened if isinstance(store, ReviewStore)]
    for store in stores:
        store.close()
    assert len(stores) == 6, opened
    assert migrated(location) == ALL_STEPS


def test_a_new_sqlite_file_opened_by_several_at_once_opens_for_all(tmp_path: Path) -> None:
    """Switching a new file to WAL is refused at once, without the busy timeout, for one of several connections
    doing it together (5% of such 6-way starts failed before the switch was retried): 40 new files, 6 opens each."""
    failures: list[Exception] = []

    def open_and_close(path: Path) -> None:
        try:
            full(path).close()
        except Exception as error:  # collected, asserted below
            failures.append(error)

    for attempt in range(40):
        path = tmp_path / f"new-{attempt}.sqlite"
        threads = [threading.Thread(target=open_and_close, args=(path,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == [], f"attempt {attempt}"
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.close()


# Concurrency -----------------------------------------------------------------------------------------------------


def test_threads_sharing_one_store_lose_nothing(store: ReviewStore) -> None:
    def write(thread: int) -> None:
        for i in range(25):
            save(store, query_id=f"{thread}-{i}", reviewer=f"t{thread}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = store.verdicts("ds")
    assert len(stored) == 200 and stored["id"].is_unique
    assert set(stored["query_id"]) == {f"{t}-{i}" for t in range(8) for i in range(25)}


def start_writer(location: str, prefix: str, count: int) -> subprocess.Popen:
    """tests/review_writer.py in a fresh process (subprocess, not multiprocessing, which breaks under pytest here)."""
    argv = [sys.executable, "-m", "tests.review_writer", location, prefix, str(count)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def confirmed(line: str) -> tuple[int, int]:
    """(id, i) of a writer's `saved <id> <i>` line."""
    word, row_id, i = line.split()
    assert word == "saved"
    return int(row_id), int(i)


def test_processes_writing_at_once_lose_nothing(location: str) -> None:
    ReviewStore(location).close()  # created and migrated once; the writers then race on inserts only
    writers = {f"p{n}": start_writer(location, f"p{n}", 150) for n in range(4)}
    saved: dict[str, list[tuple[int, int]]] = {}
    for prefix, writer in writers.items():
        out, err = writer.communicate(timeout=600)
        assert writer.returncode == 0, err
        saved[prefix] = [confirmed(line) for line in out.splitlines()]
    store = ReviewStore(location)
    stored = store.verdicts("ds")
    store.close()
    assert len(stored) == 600 and stored["id"].is_unique
    by_id = stored.set_index("id")
    for prefix, rows in saved.items():
        assert [i for _, i in rows] == list(range(150))
        for row_id, i in rows:
            assert by_id.loc[row_id, "query_id"] == f"{prefix}-{i}" and by_id.loc[row_id, "note"] == writer_note(
                prefix, i
            )


def test_a_kill_9_mid_write_loses_no_confirmed_verdict(location: str) -> None:
    writer = start_writer(location, "k", 0)
    rows = []
    try:
        while len(rows) < 50:
            line = writer.stdout.readline()
            assert line, writer.stderr.read()
            rows.append(confirmed(line))
        time.sleep(random.uniform(0, 0.05))  # an arbitrary moment, most likely inside a write
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    rest = writer.stdout.read().splitlines(keepends=True)
    rows += [confirmed(line) for line in rest if line.endswith("\n")]  # a line cut by the kill confirmed nothing
    writer.stdout.close()
    writer.stderr.close()
    store = ReviewStore(location)
    by_id = store.verdicts("ds").set_index("id")
    for row_id, i in rows:
        assert by_id.loc[row_id, "note"] == writer_note("k", i)
    assert save(store).id > max(row_id for row_id, _ in rows)
    store.close()
    if not location.startswith("postgresql"):
        with sqlite3.connect(location) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# Errors the user sees --------------------------------------------------------------------------------------------


def make_read_only(*paths: Path) -> None:
    """Tests run as root, whom chmod does not stop (nor os.access). `chattr +i` (immutable) stops root too, and the
    store's own os.access check sees it. Dropping privileges (runuser) is no way out here: the venv's Python lies
    under /root, which other users cannot enter. Without chattr (a container without CAP_LINUX_IMMUTABLE), skip."""
    if os.geteuid() != 0:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return
    done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make a file read-only for root here (chattr +i: {done.stderr.strip()})")


def make_writable(*paths: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True)
    for path in paths:
        path.chmod(0o755 if path.is_dir() else 0o644)


READ_ONLY = r"is read-only: choose another location \(--review-db, the sidebar, or \$CHTN_REVIEW_DB\) or make it"


def test_a_read_only_database_file_is_a_clear_error(tmp_path: Path) -> None:
    file_only, both = tmp_path / "file" / "review.sqlite", tmp_path / "both" / "review.sqlite"
    for path in (file_only, both):
        ReviewStore(path).close()  # a clean close leaves no -wal/-shm files
    make_read_only(file_only, both, both.parent)
    try:
        store = ReviewStore(file_only)  # reading works: the writable folder takes the -wal and -shm files
        assert store.verdicts("ds").empty
        with pytest.raises(StoreError, match=str(file_only) + " " + READ_ONLY):
            save(store)
        store.close()
        with pytest.raises(StoreError, match=str(both) + " " + READ_ONLY):  # no -wal/-shm: opening fails
            ReviewStore(both)
    finally:
        make_writable(file_only, both, both.parent)


def test_a_read_only_folder_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    make_read_only(folder)
    try:
        for path in (folder / "review.sqlite", folder / "sub" / "review.sqlite"):  # the file, or a folder to create
            with pytest.raises(StoreError, match=str(path) + " " + READ_ONLY):
                ReviewStore(path)
    finally:
        make_writable(folder)


def test_a_database_locked_beyond_the_busy_timeout_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "review.sqlite"
    store = ReviewStore(path, busy_timeout_s=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        with pytest.raises(StoreError, match=rf"{path} is locked: another program .* more than 0.2 s"):
            save(store)
        assert store.verdicts("ds").empty  # readers are not blocked (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    save(store)
    store.close()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 200)
    with pytest.raises(StoreError, match=f"{path} is not a CHTN review database .*choose another location"):
        ReviewStore(path)
    assert path.read_text() == "not a database\n" * 200


def test_an_unreachable_postgresql_server_is_a_clear_error(tmp_path: Path) -> None:
    url = f"postgresql://chtn:secret@/reviews?host={tmp_path}&port=5999"  # a socket folder nothing listens in
    with pytest.raises(StoreError, match=f"PostgreSQL database reviews on {tmp_path}:5999 cannot be reached") as error:
        ReviewStore(url)
    assert "secret" not in str(error.value) and "check that the server is running" in str(error.value)


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+psycopg2://u@h/db", "sqlite://", "http://x"])
def test_an_unknown_url_scheme_is_a_clear_error(url: str) -> None:
    with pytest.raises(StoreError, match="is not one CHTN can use: give a file path"):
        ReviewStore(url)


# Decision records ------------------------------------------------------------------------------------------------


def decide(store: ReviewStore, **fields) -> dict:
    record = dict(dataset="ds", baseline="a" * 16, candidate="b" * 16, baseline_name="A", candidate_name="B")
    record |= dict(decision="GO", override_reason="", deciders="ada, bob", rationale="gain holds", rule_source="r")
    record |= dict(rule_text="[[rule]]", rule_sha256="0" * 64, resamples=10000, seed=0, gate="GO: no block rule fails")
    record |= dict(rules=[{"rule": "MAP", "status": "pass"}], review_counts={"label noise": 2}, code_version="0.1")
    return decisions.save_decision(store, **(record | fields))


def test_decisions_are_appended_and_a_later_one_supersedes(store: ReviewStore) -> None:
    first = decide(store, decision="NO-GO", rationale="regressions on Heels <b>x</b>")
    second = decide(store, decision="GO with override", override_reason="Heels is being relabelled")
    log = decisions.decisions(store, "ds", "a" * 16, "b" * 16)
    assert list(log["id"]) == [second["id"], first["id"]]
    assert list(log["superseded_by"]) == [None, second["id"]]
    assert log.iloc[1]["rationale"] == "regressions on Heels <b>x</b>" and log.iloc[0]["rules"][0]["status"] == "pass"
    assert log.iloc[0]["review_counts"] == {"label noise": 2} and log.iloc[0]["created_at"].tzinfo is not None
    assert decisions.decisions(store, "ds", "b" * 16, "a" * 16).empty  # the reverse comparison is another pair


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"decision": "MAYBE"}, "Unknown decision"),
        ({"decision": "GO with override", "override_reason": "  "}, "needs its reason"),
        ({"deciders": ""}, "deciders"),
    ],
)
def test_a_decision_without_what_it_needs_is_refused(store: ReviewStore, fields: dict, named: str) -> None:
    with pytest.raises(StoreError, match=named):
        decide(store, **fields)


def test_verdicts_and_decisions_cannot_be_edited_even_in_sql(store: ReviewStore, location: str) -> None:
    """Append-only is enforced by the database (triggers), not only by the API, which has no edit method at all."""
    for api in (store, decisions):
        assert not [name for name in dir(api) if name.startswith(("update", "delete", "edit", "remove"))]
    decide(store)
    save(store)
    engine = sa.create_engine(shared._database_url(location))
    try:
        for statement in (
            "UPDATE decisions SET decision = 'NO-GO'",
            "DELETE FROM decisions",
            "UPDATE verdicts SET verdict = 'acceptable'",
            "DELETE FROM verdicts",
        ):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()
    assert decisions.decisions(store, "ds", "a" * 16, "b" * 16).iloc[0]["decision"] == "GO"
    assert list(store.verdicts("ds")["verdict"]) == ["model error"]


def test_the_current_decision_recorded_again_is_refused_and_nothing_is_added(store: ReviewStore) -> None:
    first = decide(store, decision="NO-GO", rationale="regressions on Heels")
    with pytest.raises(decisions.RepeatedDecision, match=f"already recorded: #{first['id']}, NO-GO") as repeat:
        decide(store, decision="NO-GO", rationale="  regressions on Heels ")  # a second click, or a second person
    assert repeat.value.existing["id"] == first["id"]
    assert len(decisions.decisions(store, "ds", "a" * 16, "b" * 16)) == 1
    changed = decide(store, decision="NO-GO", rationale="regressions on Heels; re-checked after relabelling")
    back = decide(store, decision="NO-GO", rationale="regressions on Heels")  # same as an older one, not the current
    assert list(decisions.decisions(store, "ds", "a" * 16, "b" * 16)["id"]) == [back["id"], changed["id"], first["id"]]
