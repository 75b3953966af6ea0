"""The PostgreSQL store: versioned schema, upserts by document id, tombstones, retried batches.

Each batch of documents is one transaction, so a reader never sees half a batch. Rows are
compared by a digest of every published field: an unchanged document is not written at all,
a changed one is updated in place, and a document whose source left the corpus is kept with
`deleted_at` set. A connection lost mid-batch (the server restarted, an administrator killed
the session) or a serialization failure is retried on a new connection with exponential
backoff and jitter; an error no retry can cure (authentication, a missing database, a schema
that textmill did not create) fails at once with a message saying what to fix.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from textmill.tasks.base import FINISH_KEY_NAME, RunInfo, shard_key_name
from textmill.tasks.document import Document
from textmill.tasks.secrets import redact
from textmill.tasks.sinks import document_row, entity_rows, row_hash

log = logging.getLogger("textmill.publish.postgres")

MIGRATIONS = Path(__file__).with_name("migrations")
APPLICATION_NAME = "textmill-publish"

# Serialization failure, deadlock, lock timeout, server shutting down / starting up, too many
# connections, out of memory or disk: a later attempt may succeed. Class 08 (connection) too.
TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "57P05", "53000", "53100", "53200", "53300", "53400"}
# Connection failures carry no SQLSTATE; these messages are the server refusing for good. They are
# the server's English wording: with another lc_messages such a refusal is retried, then reported.
PERMANENT_CONNECT = re.compile(
    r"authentication failed|does not exist|no pg_hba\.conf entry|permission denied|not permitted to log in"
    r"|invalid (dsn|connection option|uri|integer value)|server does not support SSL",
    re.IGNORECASE,
)

DOCUMENT_COLUMNS = (
    "id", "path", "sha256", "status", "reason", "text", "meta", "lang", "lang_score",
    "cluster", "duplicate_of", "entity_count", "row_hash", "run_id",
)
ENTITY_COLUMNS = ("doc_id", "ord", "text", "label", "start_char", "end_char", "canonical")

T = TypeVar("T")


class StoreError(Exception):
    """A publishing target refused for a reason no retry can cure; the message says what to fix."""


def is_transient(exc: BaseException) -> bool:
    """True for PostgreSQL failures that a new connection or a later attempt may cure."""
    if isinstance(exc, StoreError):
        return False
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state:
            return state in TRANSIENT_SQLSTATES or state.startswith("08")
        if isinstance(exc, psycopg.OperationalError):
            return not PERMANENT_CONNECT.search(str(exc))
        return isinstance(exc, psycopg.InterfaceError)
    return isinstance(exc, (ConnectionError, TimeoutError))


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration file `NNNN_name.sql`, in order."""
    found = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        found.append((int(number), name, path.read_text(encoding="utf-8")))
    return found


def describe_target(dsn: str, schema: str) -> str:
    """`host:port/db schema S` for messages: never the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return f"(unparseable DSN) schema {schema}"
    host = params.get("host") or params.get("hostaddr") or "local socket"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''} schema {schema}"


def connection_problem(dsn: str, timeout: int = 5) -> str | None:
    """Why no connection to `dsn` opens within `timeout` seconds (None when one does), in one line
    without the password: checked before a run, so an unreachable server fails it before any work."""
    try:
        with psycopg.connect(dsn, connect_timeout=timeout, application_name=APPLICATION_NAME):
            return None
    except psycopg.Error as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return redact(lines[0] if lines else type(exc).__name__)


class PostgresSink:
    """Publishes one shard's documents (`ids`) into one schema of a PostgreSQL database; see the
    module docstring. Shards publish in parallel, each on its own connection, and record the key
    they were written under (`publish_keys`); `finish` then tombstones what left the corpus and
    records the run."""

    files: list[str]

    def __init__(
        self,
        dsn: str,
        schema: str,
        run: RunInfo,
        batch_size: int = 500,
        retries: int = 5,
        retry_delay: float = 0.5,
        ids: list[str] | None = None,
        record_as: tuple[str, str] | None = None,
    ) -> None:
        self.dsn = dsn
        self.ids = ids
        self.record_as = record_as
        self.schema = schema
        self.run = run
        self.batch_size = batch_size
        self.target = describe_target(dsn, schema)
        self.files = []
        self.counts: Counter[str] = Counter()
        self.batch: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        self.seen: set[str] = set()
        self.conn: psycopg.Connection[Any] | None = None
        self.retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential_jitter(initial=retry_delay, max=30.0, jitter=retry_delay),
            stop=stop_after_attempt(retries + 1),
            before_sleep=self._log_retry,
            reraise=True,
        )
        self.existing: dict[str, tuple[str, bool]] = self._call(self._prepare)

    # -- the Sink protocol ----------------------------------------------------------------

    def write(self, doc: Document) -> None:
        row = document_row(doc)
        entities = entity_rows(doc)
        row["row_hash"] = row_hash(row, entities)
        if doc.id in self.seen:
            raise ValueError(f"document {doc.id!r} published twice in one run")
        self.seen.add(doc.id)
        if self.existing.get(doc.id) == (row["row_hash"], False):
            self.counts["unchanged"] += 1
            return
        self.batch.append((row, entities))
        if len(self.batch) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Write the pending batch as one transaction, retried as a whole."""
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        self._call(lambda conn: self._write_batch(conn, batch))
        # Counted from the snapshot, not from what the last attempt wrote: when a commit succeeds
        # but its acknowledgement is lost, the retry finds the rows already there.
        inserted = sum(1 for row, _ in batch if row["id"] not in self.existing)
        self.counts["inserted"] += inserted
        self.counts["updated"] += len(batch) - inserted
        for row, _ in batch:
            self.existing[row["id"]] = (row["row_hash"], False)

    def commit(self) -> None:
        """The last batch of this shard, then the key it was published under (`record_as`): only
        once every row is in does the database say the shard is there."""
        self.flush()
        if self.record_as is not None:
            self._call(lambda conn: self._record_key(conn, *self.record_as))  # type: ignore[misc]
        self.close()

    def published_keys(self) -> dict[str, str]:
        """The keys this schema recorded (`shard-N`, `finish`): what it holds, as last written."""
        return self._call(lambda conn: dict(conn.execute("SELECT name, key FROM publish_keys").fetchall()))

    def finish(
        self,
        ids: Callable[[], Iterable[str]],
        totals: dict[str, int],
        records: int | None = None,
        shards: list[int] | None = None,
        key: str = "",
    ) -> int:
        """After every shard, in one transaction: tombstones for live documents not among
        `ids()`, clusters, the run record with `totals` (the shards' counts), the keys of shards
        no longer in `shards` dropped and this finish's `key` recorded; returns the tombstones.

        The ids are listed only when the schema holds more live rows than the corpus has
        `records`: every current record has its live row (a shard's key is recorded after its
        last row), so equal counts mean nothing left the corpus.
        """
        current = cache(lambda: set(ids()))  # listed at most once, whatever the retries
        self.counts.update(totals)
        self._call(lambda conn: self._finish(conn, current, records, shards, key))
        self.close()
        log.info("published to PostgreSQL %s: %s", self.target, dict(self.counts))
        return self.counts["deleted"]

    def abort(self) -> None:
        """Committed batches stay (they are whole and correct); a re-run completes the rest."""
        self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @property
    def changes(self) -> dict[str, int]:
        return {k: self.counts[k] for k in ("inserted", "updated", "unchanged", "deleted")}

    # -- connection and retries -----------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.dsn, connect_timeout=10, application_name=APPLICATION_NAME)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        conn.commit()
        return conn

    def _call(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run `work` on a live connection; on a transient failure reconnect and run it again."""
        try:
            for attempt in self.retrying:
                with attempt:
                    try:
                        if self.conn is None or self.conn.closed or self.conn.broken:
                            self.close()
                            self.conn = self._connect()
                        return work(self.conn)
                    except BaseException:
                        self.close()
                        raise
        except StoreError:
            raise
        except psycopg.Error as exc:
            cause = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            if is_transient(exc):
                raise StoreError(
                    f"PostgreSQL {self.target}: still failing after {self.retrying.stop.max_attempt_number} "  # type: ignore[attr-defined]
                    f"attempts: {cause}"
                ) from None
            raise StoreError(f"PostgreSQL {self.target}: {cause}") from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _log_retry(self, state: Any) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "PostgreSQL %s: attempt %s failed (%s); retrying in %.2f s",
            self.target, state.attempt_number, redact(str(exc).strip().splitlines()[0] if exc else "?"),
            state.next_action.sleep if state.next_action else 0.0,
        )

    # -- the work, each a transaction -----------------------------------------------------

    def _prepare(self, conn: psycopg.Connection[Any]) -> dict[str, tuple[str, bool]]:
        """Create or migrate the schema (serialised by an advisory lock); read what is there."""
        known = migrations()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"textmill:{self.schema}"])
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            tables = {
                name
                for (name,) in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [self.schema]
                )
            }
            if tables and "schema_migrations" not in tables:
                raise StoreError(
                    f"PostgreSQL {self.target}: the schema already holds tables textmill did not create "
                    f"({', '.join(sorted(tables))}); publish to another schema (postgres_schema)"
                )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            newest = max(v for v, _, _ in known)
            if applied and max(applied) > newest:
                raise StoreError(
                    f"PostgreSQL {self.target}: the schema is at version {max(applied)}, newer than this "
                    f"textmill's {newest}; upgrade textmill or publish to another schema"
                )
            for version, name, script in known:
                if version not in applied:
                    conn.execute(script)  # type: ignore[arg-type]  # trusted files shipped with textmill
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", [version, name])
                    log.info("PostgreSQL %s: applied migration %04d_%s", self.target, version, name)
            if self.ids is None:
                rows = conn.execute("SELECT id, row_hash, deleted_at IS NOT NULL FROM documents").fetchall()
            else:
                rows = conn.execute(
                    "SELECT id, row_hash, deleted_at IS NOT NULL FROM documents WHERE id = ANY(%s)", [self.ids]
                ).fetchall()
        return {doc_id: (digest, deleted) for doc_id, digest, deleted in rows}

    def _write_batch(
        self, conn: psycopg.Connection[Any], batch: list[tuple[dict[str, Any], list[dict[str, Any]]]]
    ) -> None:
        """Upsert a batch; only rows whose digest changed (or that come back) are written."""
        columns = sql.SQL(", ").join(map(sql.Identifier, DOCUMENT_COLUMNS))
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in DOCUMENT_COLUMNS if c != "id"
        )
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS staging_documents"
                " (LIKE documents INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS staging_entities (LIKE entities) ON COMMIT DELETE ROWS")
            with conn.cursor() as cur:
                with cur.copy(sql.SQL("COPY staging_documents ({}) FROM STDIN").format(columns)) as copy:
                    for row, _ in batch:
                        copy.write_row([self.run.run_id if c == "run_id" else row[c] for c in DOCUMENT_COLUMNS])
                entity_columns = sql.SQL(", ").join(map(sql.Identifier, ENTITY_COLUMNS))
                with cur.copy(sql.SQL("COPY staging_entities ({}) FROM STDIN").format(entity_columns)) as copy:
                    for row, entities in batch:
                        for ord_, e in enumerate(entities):
                            copy.write_row([row["id"], ord_, e["text"], e["label"], e["start"], e["end"], e["canonical"]])
            changed = conn.execute(
                sql.SQL(
                    "INSERT INTO documents AS d ({columns}) SELECT {columns} FROM staging_documents"
                    " ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now(), deleted_at = NULL"
                    " WHERE d.row_hash IS DISTINCT FROM EXCLUDED.row_hash OR d.deleted_at IS NOT NULL"
                    " RETURNING d.id"
                ).format(columns=columns, updates=updates)
            ).fetchall()
            ids = [doc_id for (doc_id,) in changed]
            conn.execute("DELETE FROM entities WHERE doc_id = ANY(%s)", [ids])
            conn.execute("INSERT INTO entities SELECT * FROM staging_entities WHERE doc_id = ANY(%s)", [ids])

    def _record_key(self, conn: psycopg.Connection[Any], name: str, key: str) -> None:
        with conn.transaction():
            conn.execute(
                "INSERT INTO publish_keys (name, key) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET key = EXCLUDED.key, recorded_at = now()",
                [name, key],
            )

    def _finish(
        self,
        conn: psycopg.Connection[Any],
        current: Callable[[], set[str]],
        records: int | None,
        shards: list[int] | None,
        key: str,
    ) -> None:
        """Tombstone documents whose source is gone (live, not in `current()`), refresh clusters,
        record the run and the keys."""
        with conn.transaction():
            live = conn.execute("SELECT count(*) FROM documents WHERE deleted_at IS NULL").fetchone()
            gone: list[str] = []
            documents = records
            if records is None or live is None or live[0] != records:
                ids = current()
                documents = len(ids)
                alive = conn.execute("SELECT id FROM documents WHERE deleted_at IS NULL").fetchall()
                gone = sorted(doc_id for (doc_id,) in alive if doc_id not in ids)
            self.counts["deleted"] = len(gone)
            conn.execute(
                "UPDATE documents SET deleted_at = now(), updated_at = now(), run_id = %s"
                " WHERE id = ANY(%s) AND deleted_at IS NULL",
                [self.run.run_id, gone],
            )
            conn.execute(
                "CREATE TEMP TABLE current_clusters ON COMMIT DROP AS"
                " SELECT cluster AS id, min(id) FILTER (WHERE duplicate_of IS NULL) AS canonical, count(*) AS size"
                " FROM documents WHERE deleted_at IS NULL AND cluster IS NOT NULL"
                " GROUP BY cluster HAVING count(*) > 1"
            )
            conn.execute("DELETE FROM clusters WHERE id NOT IN (SELECT id FROM current_clusters)")
            conn.execute(
                "INSERT INTO clusters AS c SELECT id, coalesce(canonical, id), size FROM current_clusters"
                " ON CONFLICT (id) DO UPDATE SET canonical = EXCLUDED.canonical, size = EXCLUDED.size"
                " WHERE (c.canonical, c.size) IS DISTINCT FROM (EXCLUDED.canonical, EXCLUDED.size)"
            )
            if shards is not None:
                kept = [shard_key_name(n) for n in shards]
                conn.execute("DELETE FROM publish_keys WHERE name LIKE 'shard-%%' AND NOT (name = ANY(%s))", [kept])
            if key:
                self._record_key(conn, FINISH_KEY_NAME, key)
            changed = self.counts["inserted"] + self.counts["updated"] + self.counts["deleted"]
            first = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM runs)").fetchone()
            if not changed and not (first and first[0]):
                return
            conn.execute(
                "INSERT INTO runs (run_id, run_name, config_digest, documents, inserted, updated, unchanged, deleted)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO NOTHING",
                [
                    self.run.run_id, self.run.run_name, self.run.config_digest, documents,
                    self.counts["inserted"], self.counts["updated"], self.counts["unchanged"],
                    self.counts["deleted"],
                ],
            )
