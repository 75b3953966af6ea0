"""Publishing to a real PostgreSQL server: upserts, tombstones, one transaction per batch,
retries after a killed connection, immediate failure on permanent errors, no leaked password.

The server comes from TEXTMILL_TEST_PG_DSN (default postgresql://postgres@127.0.0.1:5432/test);
each test publishes into its own schema and drops it afterwards.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from conftest import SEEDS
from flowkit import run_flow, set_option
from textmill.tasks.base import RunInfo
from textmill.tasks.document import Document, Entity
from textmill.tasks.publish import Publisher, PublishOptions

DSN = os.environ.get("TEXTMILL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The test server's DSN; skip (or, with TEXTMILL_REQUIRE_PG=1, fail) when it is unreachable."""
    try:
        psycopg.connect(DSN, connect_timeout=5).close()
    except psycopg.Error as exc:
        message = f"no PostgreSQL server at {DSN}: {str(exc).strip().splitlines()[0]}"
        if os.environ.get("TEXTMILL_REQUIRE_PG") == "1":
            pytest.fail(message + " (TEXTMILL_REQUIRE_PG=1)")
        pytest.skip(message)
    return DSN


def private_schema(dsn: str) -> Iterator[str]:
    """A schema name no other test uses; the schema is dropped afterwards."""
    name = f"textmill_test_{secrets.token_hex(6)}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    yield from private_schema(pg_dsn)


@pytest.fixture
def other_schema(pg_dsn: str) -> Iterator[str]:
    yield from private_schema(pg_dsn)


def corpus(count: int = 6, changed: str | None = None) -> list[Document]:
    """Documents with entities; `changed` names one whose text differs."""
    docs = []
    for i in range(count):
        doc_id = f"d{i:02d}.txt"
        text = f"Vladimir Putin met Olaf Scholz in Berlin, report {i}."
        if doc_id == changed:
            text += " Updated."
        docs.append(
            Document(
                id=doc_id, path=doc_id, sha256=f"{i:064d}", text=text, meta={"format": "txt"}, lang="en", lang_score=0.99,
                entities=(Entity("Vladimir Putin", "PERSON", 0, 14, "Vladimir Putin"), Entity("Berlin", "GPE", 35, 41, "Berlin")),
                cluster="d00.txt" if i in (0, 1) else doc_id, duplicate_of="d00.txt" if i == 1 else None,
                status="duplicate" if i == 1 else "ok",
            )
        )
    return docs


def publisher(dsn: str, schema: str, **options: Any) -> Publisher:
    return Publisher(
        PublishOptions(formats=["postgres"], postgres_dsn=dsn, postgres_schema=schema, postgres_batch_size=2, **options)
    )


def publish(dsn: str, schema: str, docs: list[Document], tmp: Path, run_id: str = "run-1", **options: Any) -> dict[str, int]:
    report = publisher(dsn, schema, **options).publish(iter(docs), tmp, RunInfo(run_id=run_id))
    return report.changes["postgres"]


def rows(dsn: str, schema: str, with_versions: bool = False) -> dict[str, list[tuple]]:
    """Every table's content (optionally with xmin and timestamps, which change on any write)."""
    doc_cols = "id, path, sha256, status, reason, text, meta, lang, lang_score, cluster, duplicate_of, entity_count, row_hash, deleted_at IS NULL"
    if with_versions:
        doc_cols += ", xmin::text, updated_at, run_id"
    with psycopg.connect(dsn) as conn:
        conn.execute(f"SET search_path TO {schema}")
        return {
            "documents": conn.execute(f"SELECT {doc_cols} FROM documents ORDER BY id").fetchall(),
            "entities": conn.execute(
                "SELECT doc_id, ord, text, label, start_char, end_char, canonical"
                + (", xmin::text" if with_versions else "") + " FROM entities ORDER BY doc_id, ord"
            ).fetchall(),
            "clusters": conn.execute("SELECT *" + (", xmin::text" if with_versions else "") + " FROM clusters ORDER BY id").fetchall(),
        }


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def test_first_publish_creates_the_versioned_schema_and_all_rows(pg_dsn: str, schema: str, out: Path) -> None:
    assert publish(pg_dsn, schema, corpus(), tmp=out) == {"inserted": 6, "updated": 0, "unchanged": 0, "deleted": 0}
    tables = rows(pg_dsn, schema)
    assert [r[0] for r in tables["documents"]] == [f"d{i:02d}.txt" for i in range(6)]
    assert len(tables["entities"]) == 12
    assert tables["clusters"] == [("d00.txt", "d00.txt", 2)]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(f"SELECT version, name FROM {schema}.schema_migrations").fetchall() == [(1, "initial"), (2, "publish_keys")]
        assert conn.execute(f"SELECT run_id, documents, inserted FROM {schema}.runs").fetchall() == [("run-1", 6, 6)]
        meta = conn.execute(f"SELECT meta FROM {schema}.documents WHERE id = 'd03.txt'").fetchone()
    assert meta == ({"format": "txt"},)


def test_publishing_the_same_run_twice_changes_no_row(pg_dsn: str, schema: str, out: Path) -> None:
    publish(pg_dsn, schema, corpus(), tmp=out)
    before = rows(pg_dsn, schema, with_versions=True)
    assert publish(pg_dsn, schema, corpus(), tmp=out) == {"inserted": 0, "updated": 0, "unchanged": 6, "deleted": 0}
    assert rows(pg_dsn, schema, with_versions=True) == before
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.runs").fetchone() == (1,)


def test_a_changed_document_updates_its_row_only(pg_dsn: str, schema: str, out: Path) -> None:
    publish(pg_dsn, schema, corpus(), tmp=out)
    before = {r[0]: r for r in rows(pg_dsn, schema, with_versions=True)["documents"]}
    changes = publish(pg_dsn, schema, corpus(changed="d04.txt"), run_id="run-2", tmp=out)
    assert changes == {"inserted": 0, "updated": 1, "unchanged": 5, "deleted": 0}
    after = {r[0]: r for r in rows(pg_dsn, schema, with_versions=True)["documents"]}
    assert after["d04.txt"][5].endswith("Updated.")
    assert after["d04.txt"][-1] == "run-2"
    assert {k for k in after if after[k] != before[k]} == {"d04.txt"}


def test_a_document_gone_from_the_corpus_is_tombstoned_and_can_return(pg_dsn: str, schema: str, out: Path) -> None:
    publish(pg_dsn, schema, corpus(), tmp=out)
    gone = [d for d in corpus() if d.id != "d03.txt"]
    assert publish(pg_dsn, schema, gone, run_id="run-2", tmp=out) == {"inserted": 0, "updated": 0, "unchanged": 5, "deleted": 1}
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"SET search_path TO {schema}")
        live = conn.execute("SELECT id FROM documents WHERE deleted_at IS NULL ORDER BY id").fetchall()
        dead = conn.execute("SELECT id, run_id FROM documents WHERE deleted_at IS NOT NULL").fetchall()
    assert dead == [("d03.txt", "run-2")]
    assert len(live) == 5
    assert publish(pg_dsn, schema, corpus(), run_id="run-3", tmp=out) == {"inserted": 0, "updated": 1, "unchanged": 5, "deleted": 0}
    assert all(r[13] for r in rows(pg_dsn, schema)["documents"]), "the returning document is live again"


def waiting_on(observer: psycopg.Connection, holder: psycopg.Connection) -> list[tuple[int]]:
    """The textmill publish backends blocked by `holder`'s lock — only this test's sink,
    never another test's running beside it on the same server."""
    return observer.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'textmill-publish'"
        " AND %s = ANY(pg_blocking_pids(pid))",
        [holder.info.backend_pid],
    ).fetchall()


def test_a_reader_never_sees_half_a_batch(pg_dsn: str, schema: str, out: Path) -> None:
    """While the second batch waits on a lock, a reader sees the whole first batch — its
    documents and all their entities — and nothing of the second."""
    publisher(pg_dsn, schema).open_sink("postgres", out, RunInfo()).close()
    seen: dict[str, Any] = {}
    holding = threading.Event()

    def read_while_blocked() -> None:
        try:
            with psycopg.connect(pg_dsn) as holder, psycopg.connect(pg_dsn, autocommit=True) as reader:
                holder.execute(
                    f"INSERT INTO {schema}.documents (id, path, sha256, status, text, meta, entity_count, row_hash, run_id)"
                    " VALUES ('d02.txt', '', '', 'ok', '', '{}', 0, '', 'blocker')"
                )
                holding.set()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not waiting_on(reader, holder):
                    time.sleep(0.01)
                with reader.transaction():
                    reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    seen["documents"] = reader.execute(f"SELECT id, entity_count FROM {schema}.documents ORDER BY id").fetchall()
                    seen["entities"] = reader.execute(
                        f"SELECT doc_id, count(*) FROM {schema}.entities GROUP BY doc_id ORDER BY doc_id"
                    ).fetchall()
                holder.rollback()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            seen["error"] = repr(exc)
        finally:
            holding.set()

    reader_thread = threading.Thread(target=read_while_blocked)
    reader_thread.start()
    holding.wait(30)  # the publish starts only once the row it will wait on is held
    publish(pg_dsn, schema, corpus(), tmp=out)
    reader_thread.join()
    assert "error" not in seen, seen.get("error")
    assert seen["documents"] == [("d00.txt", 2), ("d01.txt", 2)]
    assert seen["entities"] == [("d00.txt", 2), ("d01.txt", 2)]
    assert len(rows(pg_dsn, schema)["documents"]) == 6


def block_batch_then_kill(dsn: str, schema: str, blocked_id: str, done: dict[str, Any], holding: threading.Event) -> None:
    """Hold an uncommitted row with `blocked_id` so the sink's batch holding it waits on our
    lock (`holding` is set once it is held); once an earlier batch is committed and the sink is
    waiting, terminate its backend."""
    try:
        with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as admin:
            holder.execute(
                f"INSERT INTO {schema}.documents (id, path, sha256, status, text, meta, entity_count, row_hash, run_id)"
                " VALUES (%s, '', '', 'ok', '', '{}', 0, '', 'blocker')",
                [blocked_id],
            )
            holding.set()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                waiting = waiting_on(admin, holder)
                committed = admin.execute(f"SELECT count(*) FROM {schema}.documents").fetchone()
                if waiting and committed and committed[0] > 0:
                    done["committed_before_kill"] = committed[0]
                    done["killed"] = admin.execute("SELECT pg_terminate_backend(%s)", [waiting[0][0]]).fetchone()
                    break
                time.sleep(0.02)
            holder.rollback()
    except Exception as exc:  # noqa: BLE001 - reported by the test
        done["error"] = repr(exc)
    finally:
        holding.set()


def postgres_config(config: Path, schema: str, batch_size: int = 2) -> None:
    set_option(config, "steps.publish", 'formats = ["jsonl", "postgres"]')
    set_option(config, "steps.publish", f'postgres_dsn = "{DSN}"')
    set_option(config, "steps.publish", f'postgres_schema = "{schema}"')
    set_option(config, "steps.publish", f"postgres_batch_size = {batch_size}")
    set_option(config, "steps.publish", "postgres_retry_delay = 0.05")


@pytest.mark.slow
def test_run_completes_after_its_connection_is_killed_mid_publish(
    prefect_server: None, pg_dsn: str, schema: str, other_schema: str, config_copy: Path, tmp_path: Path
) -> None:
    config = config_copy
    postgres_config(config, other_schema)
    calm = run_flow(SEEDS, tmp_path / "calm", config)
    assert calm["published"]["postgres"]["inserted"] == 5

    postgres_config(config, schema)
    publisher(pg_dsn, schema).open_sink("postgres", tmp_path, RunInfo()).close()  # schema exists, no rows yet
    ids = sorted(p.name for p in SEEDS.iterdir())
    done: dict[str, Any] = {}
    holding = threading.Event()
    killer = threading.Thread(target=block_batch_then_kill, args=(pg_dsn, schema, ids[2], done, holding))
    killer.start()
    holding.wait(30)
    manifest = run_flow(SEEDS, tmp_path / "killed", config)
    killer.join()

    assert "error" not in done, done.get("error")
    assert done.get("killed") == (True,), "the sink's connection was terminated mid-publish"
    assert done["committed_before_kill"] == 2, "exactly the first batch was committed before the kill"
    assert manifest["published"]["postgres"]["inserted"] == 5
    assert rows(pg_dsn, schema) == rows(pg_dsn, other_schema)
    assert len(rows(pg_dsn, schema)["documents"]) == 5


@pytest.mark.slow
def test_removed_file_is_tombstoned_by_the_next_run(
    prefect_server: None, pg_dsn: str, schema: str, config_copy: Path, seeds_copy: Path, tmp_path: Path
) -> None:
    config = config_copy
    postgres_config(config, schema, batch_size=500)
    out_dir = tmp_path / "out"
    run_flow(seeds_copy, out_dir, config)
    again = run_flow(seeds_copy, out_dir, config)
    assert again["published"]["postgres"] == {"inserted": 0, "updated": 0, "unchanged": 5, "deleted": 0}
    assert again["steps"]["publish"]["computed"] == 0, "the schema holds every shard under its key: none is read"
    removed = sorted(seeds_copy.iterdir())[3]
    removed.unlink()
    manifest = run_flow(seeds_copy, out_dir, config)
    assert manifest["published"]["postgres"]["deleted"] == 1
    with psycopg.connect(pg_dsn) as conn:
        dead = conn.execute(f"SELECT id FROM {schema}.documents WHERE deleted_at IS NOT NULL").fetchall()
    assert dead == [(removed.name,)]


def test_a_killed_connection_is_transient(pg_dsn: str) -> None:
    from textmill.tasks.postgres import is_transient

    with psycopg.connect(pg_dsn, application_name="textmill-victim") as victim, psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'textmill-victim'")
        with pytest.raises(psycopg.OperationalError) as killed:
            victim.execute("SELECT 1")
    assert is_transient(killed.value)


def test_serialization_failures_are_transient(pg_dsn: str, schema: str) -> None:
    from textmill.tasks.postgres import is_transient

    table = f"{schema}.counter"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(f"CREATE TABLE {table} (n int)")
        try:
            with psycopg.connect(pg_dsn) as a, psycopg.connect(pg_dsn) as b:
                for conn in (a, b):
                    conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                    conn.execute(f"SELECT count(*) FROM {table}")
                a.execute(f"INSERT INTO {table} VALUES (1)")
                b.execute(f"INSERT INTO {table} VALUES (2)")
                a.commit()
                with pytest.raises(psycopg.errors.SerializationFailure) as conflict:
                    b.commit()
        finally:
            admin.execute(f"DROP TABLE {table}")
    assert is_transient(conflict.value)


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ('connection failed: connection to server at "10.0.0.1", port 5432 failed: FATAL:  password authentication failed for user "app"', False),
        ('connection failed: connection to server at "10.0.0.1", port 5432 failed: FATAL:  no pg_hba.conf entry for host "10.0.0.2"', False),
        ('connection failed: connection to server at "10.0.0.1", port 5432 failed: FATAL:  the database system is starting up', True),
        ("consuming input failed: server closed the connection unexpectedly", True),
    ],
)
def test_connection_messages_without_sqlstate_are_classified(message: str, transient: bool) -> None:
    """libpq reports refusals at connect time without a SQLSTATE; only the wording tells them apart."""
    from textmill.tasks.postgres import is_transient

    assert is_transient(psycopg.OperationalError(message)) is transient


def test_unreachable_server_is_retried_then_reported(tmp_path: Path) -> None:
    from textmill.tasks.postgres import StoreError

    started = time.monotonic()
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1/test schema s: still failing after 3 attempts"):
        publish("postgresql://postgres@127.0.0.1:1/test", "s", corpus(), tmp=tmp_path, postgres_retries=2, postgres_retry_delay=0.01)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dbname": "textmill_no_such_db"}, 'database "textmill_no_such_db" does not exist'),
        ({"user": "textmill_no_such_role"}, 'role "textmill_no_such_role" does not exist'),
    ],
)
def test_permanent_errors_fail_at_once(pg_dsn: str, schema: str, tmp_path: Path, change: dict[str, str], message: str) -> None:
    from textmill.tasks.postgres import StoreError

    started = time.monotonic()
    with pytest.raises(StoreError, match=message):
        publish(make_conninfo(pg_dsn, **change), schema, corpus(), tmp=tmp_path, postgres_retries=5, postgres_retry_delay=5.0)
    assert time.monotonic() - started < 4, "a permanent error must not wait for a retry"


def test_schema_textmill_did_not_create_is_refused(pg_dsn: str, schema: str, tmp_path: Path) -> None:
    from textmill.tasks.postgres import StoreError

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.documents (id int)")
    with pytest.raises(StoreError, match=r"tables textmill did not create \(documents\)"):
        publish(pg_dsn, schema, corpus(), tmp=tmp_path)


def test_schema_newer_than_this_textmill_is_refused(pg_dsn: str, schema: str, tmp_path: Path) -> None:
    from textmill.tasks.postgres import StoreError

    publish(pg_dsn, schema, corpus(), tmp=tmp_path)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.schema_migrations (version, name) VALUES (999, 'future')")
    with pytest.raises(StoreError, match="version 999, newer than this textmill's 2"):
        publish(pg_dsn, schema, corpus(), tmp=tmp_path)


def test_a_password_in_the_configured_dsn_is_refused_without_echoing_it() -> None:
    from textmill.tasks.base import ConfigError
    from textmill.tasks.registry import build_step, load_registry

    with pytest.raises(ConfigError) as refused:
        build_step(
            "publish",
            {"formats": ["postgres"], "postgres_dsn": "postgresql://postgres:Hunter2Secret@127.0.0.1/test"},
            load_registry(),
            REPO / "config",
        )
    assert "must not contain a password" in str(refused.value)
    assert "Hunter2Secret" not in str(refused.value)


@pytest.mark.slow
def test_dsn_password_never_reaches_logs_artifacts_manifest_or_errors(pg_dsn: str, schema: str, config_copy: Path, tmp_path: Path) -> None:
    """The CLI with --publish and a password, verbose, against its own Prefect database; then
    the same password with a missing database. Nothing anywhere holds the password."""
    password = f"Pw{secrets.token_hex(8)}"
    config = config_copy
    set_option(config, "steps.publish", f'postgres_schema = "{schema}"')
    prefect_home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PGPASSWORD")}
    env["PREFECT_HOME"] = str(prefect_home)
    base = make_conninfo(pg_dsn, password=password)
    assert password in base
    out_dir = tmp_path / "out"
    ok = subprocess.run(
        [sys.executable, "-m", "textmill.flows.cli", "run", str(SEEDS), "--out", str(out_dir), "--config", str(config), "--publish", base, "-v"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["published"]["postgres"]["inserted"] == 5

    missing = make_conninfo(base, dbname="textmill_no_such_db")
    failed = subprocess.run(
        [sys.executable, "-m", "textmill.flows.cli", "run", str(SEEDS), "--out", str(tmp_path / "out2"), "--config", str(config), "--publish", missing, "-v"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert failed.returncode == 2, "a database that does not exist is found before any work"
    assert 'database "textmill_no_such_db" does not exist' in failed.stderr
    assert not (tmp_path / "out2" / "manifest.json").exists()

    for text in (ok.stdout, ok.stderr, failed.stdout, failed.stderr):
        assert password not in text
    for folder in (out_dir, tmp_path / "out2", prefect_home):
        for path in folder.rglob("*"):
            if path.is_file():
                assert password.encode() not in path.read_bytes(), f"password found in {path}"
    assert any(prefect_home.rglob("*.db")), "the runs were recorded in the Prefect database that was searched"


def test_counts_stay_right_when_a_commit_acknowledgement_is_lost(
    pg_dsn: str, schema: str, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected fault: the first batch commits, then the connection drops before the client
    hears of it; the retry finds the rows already written and must still count them."""
    from textmill.tasks.postgres import PostgresSink

    real = PostgresSink._write_batch
    lost = {"left": 1}

    def commit_then_drop(self: PostgresSink, conn: Any, batch: Any) -> None:
        real(self, conn, batch)
        if lost["left"]:
            lost["left"] -= 1
            raise psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")

    monkeypatch.setattr(PostgresSink, "_write_batch", commit_then_drop)
    assert publish(pg_dsn, schema, corpus(), tmp=out, postgres_retry_delay=0.01) == {
        "inserted": 6, "updated": 0, "unchanged": 0, "deleted": 0,
    }
    assert lost["left"] == 0
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(f"SELECT inserted FROM {schema}.runs").fetchall() == [(6,)]


@pytest.mark.parametrize(
    "dsn",
    ["host=db sslpassword=Hunter2Secret dbname=x", "host=db password=Hunter2 Secret", "postgresql://u@h/db?bogus=Hunter2Secret"],
)
def test_bad_or_secret_bearing_dsns_are_refused_cleanly(dsn: str) -> None:
    from textmill.tasks.base import ConfigError
    from textmill.tasks.registry import build_step, load_registry

    with pytest.raises(ConfigError) as refused:
        build_step("publish", {"formats": ["postgres"], "postgres_dsn": dsn}, load_registry(), REPO / "config")
    assert "Hunter2" not in str(refused.value) and "Secret" not in str(refused.value)


@pytest.mark.slow
def test_a_schema_that_lost_its_rows_or_keys_is_published_again(
    prefect_server: None, pg_dsn: str, schema: str, config_copy: Path, tmp_path: Path
) -> None:
    """Shards are skipped only while the schema holds them under their keys: a schema emptied
    (a restored backup, a new database under the same name) gets every row back."""
    postgres_config(config_copy, schema, batch_size=500)
    out_dir = tmp_path / "out"
    first = run_flow(SEEDS, out_dir, config_copy)
    assert first["published"]["postgres"]["inserted"] == 5
    before = rows(pg_dsn, schema)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {schema}.documents, {schema}.entities, {schema}.clusters, {schema}.publish_keys")
    again = run_flow(SEEDS, out_dir, config_copy)
    assert again["published"]["postgres"] == {"inserted": 5, "updated": 0, "unchanged": 0, "deleted": 0}
    assert again["steps"]["publish"]["computed"] == 5
    assert rows(pg_dsn, schema) == before
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {schema}.publish_keys WHERE name = 'finish'")
    finished = run_flow(SEEDS, out_dir, config_copy)
    assert finished["steps"]["publish"]["computed"] == 0, "the shards are there: only the finish runs again"
    with psycopg.connect(pg_dsn) as conn:
        names = sorted(name for (name,) in conn.execute(f"SELECT name FROM {schema}.publish_keys"))
    assert "finish" in names and all(n == "finish" or n.startswith("shard-") for n in names), names
    assert rows(pg_dsn, schema) == before


def test_finish_lists_the_corpus_only_when_rows_may_have_left_it(pg_dsn: str, schema: str, out: Path) -> None:
    """Every current record has its live row, so as many live rows as records means nothing to
    tombstone: the ids (every record of every shard) are not read."""
    from textmill.tasks.postgres import PostgresSink

    publish(pg_dsn, schema, corpus(), tmp=out)
    listed: list[int] = []

    def ids(docs: list[Document]) -> Any:
        def listing() -> Any:
            listed.append(len(docs))
            return iter(d.id for d in docs)
        return listing

    zero = {"inserted": 0, "updated": 0, "unchanged": 6, "deleted": 0}
    sink = publisher(pg_dsn, schema).open_sink("postgres", out, RunInfo(run_id="run-2"))
    assert isinstance(sink, PostgresSink)
    assert sink.finish(ids(corpus()), dict(zero), records=6) == 0
    assert listed == []
    sink = publisher(pg_dsn, schema).open_sink("postgres", out, RunInfo(run_id="run-3"))
    assert isinstance(sink, PostgresSink)
    assert sink.finish(ids(corpus(5)), dict(zero, unchanged=5), records=5) == 1
    assert listed == [5]
    with psycopg.connect(pg_dsn) as conn:
        dead = conn.execute(f"SELECT id FROM {schema}.documents WHERE deleted_at IS NOT NULL").fetchall()
        documents = conn.execute(f"SELECT documents, deleted FROM {schema}.runs WHERE run_id = 'run-3'").fetchall()
    assert dead == [("d05.txt",)]
    assert documents == [(5, 1)]
