"""Writers for the published outputs, one shard at a time, and the shared SQLite file.

File outputs are datasets of one part per shard (`jsonl/part-00003.jsonl`,
`documents/part-00003.parquet`, `entities/part-00003.parquet`), or, for a shard of more than
`part_size` records, one part per block of the shard (`jsonl/part-00003-005.jsonl`: records
fall into blocks by a hash of their id), so a changed record rewrites its block's parts only.
A shard's writer writes its parts to temporary files and renames them on commit, so a retried
publish starts clean, and a part whose bytes equal the one already there is not replaced.
`textmill.sqlite` is shared by every shard, so shards do not write it: each writes the rows
that differ from it (by a digest of the row) to a delta file, and `SqliteStore.finish` applies
the deltas, deletes the rows of documents that are gone and refreshes `clusters` and `runs`,
in one transaction.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from textmill.tasks.atomic import replace_if_changed, temp_beside
from textmill.tasks.base import RunInfo, ShardInfo, block_of
from textmill.tasks.document import Document

PARQUET_BATCH = 1000

DOCUMENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("text", pa.string()),
        ("meta", pa.string()),
        ("lang", pa.string()),
        ("lang_score", pa.float64()),
        ("cluster", pa.string()),
        ("duplicate_of", pa.string()),
        ("entity_count", pa.int32()),
    ]
)
ENTITY_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("canonical", pa.string()),
    ]
)


class Sink(Protocol):
    """Receives every document of a shard once, in id order, then commits or aborts."""

    files: list[str]

    def write(self, doc: Document) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


def document_row(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id,
        "path": doc.path,
        "sha256": doc.sha256,
        "status": doc.status,
        "reason": doc.reason,
        "text": doc.text,
        "meta": json.dumps(doc.meta, ensure_ascii=False, sort_keys=True),
        "lang": doc.lang,
        "lang_score": doc.lang_score,
        "cluster": doc.cluster,
        "duplicate_of": doc.duplicate_of,
        "entity_count": len(doc.entities),
    }


def entity_rows(doc: Document) -> list[dict[str, Any]]:
    return [
        {"doc_id": doc.id, "text": e.text, "label": e.label, "start": e.start, "end": e.end, "canonical": e.canonical}
        for e in doc.entities
    ]


def row_hash(row: dict[str, Any], entities: list[dict[str, Any]]) -> str:
    """Digest of everything published for one document: equal digests mean nothing to write."""
    payload = json.dumps([row, entities], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def part_name(shard: int, block: int | None = None) -> str:
    """A part file's name without its suffix: a whole shard's, or one block's of a shard
    written in blocks; zero-padded, so names sort in shard order."""
    return f"part-{shard:05d}" if block is None else f"part-{shard:05d}-{block:03d}"


PART = re.compile(r"^part-(\d{5})(?:-\d{3,})?\.")
# Each file format's parts: folder and suffix.
PART_FOLDERS = {"jsonl": (("jsonl", ".jsonl"),), "parquet": (("documents", ".parquet"), ("entities", ".parquet"))}
# The single files of earlier versions, which the part folders replace.
LEGACY_FILES = {"jsonl": ("documents.jsonl",), "parquet": ("documents.parquet", "entities.parquet")}


def remove_stale_parts(out_dir: Path, fmt: str, shards: set[int]) -> None:
    """Delete `fmt`'s parts of shards that no longer exist, and its single files of earlier versions."""
    for folder, suffix in PART_FOLDERS.get(fmt, ()):
        if not (out_dir / folder).is_dir():
            continue
        for path in (out_dir / folder).iterdir():
            match = PART.match(path.name)
            if match and path.name.endswith(suffix) and int(match.group(1)) not in shards:
                path.unlink(missing_ok=True)
    for name in LEGACY_FILES.get(fmt, ()):
        (out_dir / name).unlink(missing_ok=True)


class BlockParts:
    """One shard's parts of one file format when the shard is written in blocks: a part per
    block (`part-N-B`), opened as the block's first record arrives. Records come block by
    block, so a finished block's buffered rows are written out before the next one starts."""

    def __init__(self, shard: ShardInfo, part: Callable[[int], Any]) -> None:
        self.shard = shard
        self.part = part
        self.parts: dict[int, Any] = {}
        self.current: Any = None

    @property
    def files(self) -> list[str]:
        return [name for part in self.parts.values() for name in part.files]

    @property
    def block_files(self) -> dict[int, list[str]]:
        return {block: list(part.files) for block, part in self.parts.items()}

    def write(self, doc: Document) -> None:
        block = block_of(doc.id, self.shard.blocks)
        if block not in self.parts:
            if self.current is not None and hasattr(self.current, "flush"):
                self.current.flush()
            self.parts[block] = self.current = self.part(block)
        self.parts[block].write(doc)

    def commit(self) -> None:
        for part in self.parts.values():
            part.commit()

    def abort(self) -> None:
        for part in self.parts.values():
            part.abort()


class JsonlPart:
    """`jsonl/part-N.jsonl`: the stable public record, one line per input document of shard N
    (or of block B of shard N, `part-N-B.jsonl`)."""

    def __init__(self, out_dir: Path, shard: int, block: int | None = None) -> None:
        self.target = out_dir / "jsonl" / f"{part_name(shard, block)}.jsonl"
        self.files = [self.target.relative_to(out_dir).as_posix()]
        self.tmp = temp_beside(self.target)
        self.fh = self.tmp.open("w", encoding="utf-8")

    def write(self, doc: Document) -> None:
        self.fh.write(json.dumps(doc.to_record(), ensure_ascii=False, sort_keys=True))
        self.fh.write("\n")

    def commit(self) -> None:
        self.fh.close()
        replace_if_changed(self.tmp, self.target)

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


class ParquetPart:
    """`documents/part-N.parquet` and `entities/part-N.parquet` (or `part-N-B`), written in
    batches to bound memory; every part has the same schema, so each folder reads as one table."""

    def __init__(self, out_dir: Path, shard: int, block: int | None = None) -> None:
        name = part_name(shard, block)
        self.targets = [out_dir / "documents" / f"{name}.parquet", out_dir / "entities" / f"{name}.parquet"]
        self.files = [t.relative_to(out_dir).as_posix() for t in self.targets]
        self.tmps = [temp_beside(t) for t in self.targets]
        self.writers = [pq.ParquetWriter(self.tmps[0], DOCUMENT_SCHEMA), pq.ParquetWriter(self.tmps[1], ENTITY_SCHEMA)]
        self.rows: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])

    def write(self, doc: Document) -> None:
        self.rows[0].append(document_row(doc))
        self.rows[1].extend(entity_rows(doc))
        if len(self.rows[0]) >= PARQUET_BATCH:
            self.flush()

    def flush(self) -> None:
        for writer, rows, schema in zip(self.writers, self.rows, (DOCUMENT_SCHEMA, ENTITY_SCHEMA)):
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows.clear()

    def commit(self) -> None:
        self.flush()
        for writer in self.writers:
            writer.close()
        for tmp, target in zip(self.tmps, self.targets):
            replace_if_changed(tmp, target)

    def abort(self) -> None:
        for writer in self.writers:
            writer.close()
        for tmp in self.tmps:
            tmp.unlink(missing_ok=True)


# Bump with any change to SQLITE_SCHEMA: a file of another version is rebuilt, its runs kept.
SQLITE_VERSION = 2
DOCUMENT_COLUMNS = (
    "id", "path", "sha256", "status", "reason", "text", "meta", "lang", "lang_score",
    "cluster", "duplicate_of", "entity_count", "row_hash",
)
ROW_TABLES = """
CREATE TABLE documents (
    id TEXT PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT, text TEXT NOT NULL, meta TEXT NOT NULL, lang TEXT, lang_score REAL,
    cluster TEXT, duplicate_of TEXT, entity_count INTEGER NOT NULL, row_hash TEXT NOT NULL
);
CREATE TABLE entities (
    doc_id TEXT NOT NULL REFERENCES documents(id), text TEXT NOT NULL, label TEXT NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, canonical TEXT
);
"""
SQLITE_SCHEMA = ROW_TABLES + """
CREATE TABLE clusters (
    id TEXT PRIMARY KEY, canonical TEXT NOT NULL REFERENCES documents(id), size INTEGER NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, run_name TEXT, published_at TEXT NOT NULL, config_digest TEXT,
    documents INTEGER NOT NULL, ok INTEGER NOT NULL, duplicate INTEGER NOT NULL,
    rejected INTEGER NOT NULL, content_digest TEXT NOT NULL
);
CREATE INDEX documents_lang ON documents(lang);
CREATE INDEX documents_status ON documents(status);
CREATE INDEX documents_cluster ON documents(cluster);
CREATE INDEX entities_canonical ON entities(canonical);
CREATE INDEX entities_text ON entities(text);
CREATE INDEX entities_doc ON entities(doc_id);
CREATE VIRTUAL TABLE documents_fts USING fts5(
    text, content='documents', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER documents_fts_insert AFTER INSERT ON documents BEGIN
    INSERT INTO documents_fts(rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER documents_fts_delete AFTER DELETE ON documents BEGIN
    INSERT INTO documents_fts(documents_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;
CREATE TRIGGER documents_fts_update AFTER UPDATE OF text ON documents BEGIN
    INSERT INTO documents_fts(documents_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    INSERT INTO documents_fts(rowid, text) VALUES (new.rowid, new.text);
END;
"""
CLUSTER_COLUMN = DOCUMENT_COLUMNS.index("cluster")
ROW_HASH_COLUMN = DOCUMENT_COLUMNS.index("row_hash")
# The content digest is a sum of one number per row, so a publish updates it with the rows it
# changes instead of reading every row; the sum is kept beside the runs (`digests`).
DIGEST_MODULUS = 1 << 256
DIGESTS_TABLE = "CREATE TABLE IF NOT EXISTS digests (name TEXT PRIMARY KEY, value TEXT NOT NULL)"


def row_share(doc_id: str, digest: str) -> int:
    """One row's share of `content_digest`: its id and row_hash, hashed to a 256-bit number."""
    return int.from_bytes(hashlib.sha256(f"{doc_id}\0{digest}".encode()).digest(), "big")


def content_sum(db: sqlite3.Connection) -> int:
    """`content_digest` of every row, from scratch (one read of the table)."""
    return sum(row_share(doc_id, digest) for doc_id, digest in db.execute("SELECT id, row_hash FROM documents")) % DIGEST_MODULUS
RUN_COLUMNS = (
    "run_id", "run_name", "published_at", "config_digest", "documents", "ok", "duplicate", "rejected", "content_digest",
)


def open_readonly(path: Path) -> sqlite3.Connection | None:
    """`textmill.sqlite` for reading, when it exists and has this version's schema."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        if db.execute("PRAGMA user_version").fetchone() == (SQLITE_VERSION,):
            return db
    except sqlite3.DatabaseError:
        pass
    db.close()
    return None


class SqliteDelta:
    """One shard's rows that differ from `textmill.sqlite` (or are missing from it), written to
    a delta file in the scratch folder for `SqliteStore.finish`; counts what it found."""

    def __init__(self, out_dir: Path, scratch: Path, shard: int, key: str) -> None:
        self.files: list[str] = []
        self.main = open_readonly(out_dir / SQLITE_FILE)
        self.target = scratch / f"sqlite-{shard:05d}-{key[:16]}.sqlite"
        self.stale = [p for p in scratch.glob(f"sqlite-{shard:05d}-*.sqlite") if p != self.target] if scratch.is_dir() else []
        self.tmp = temp_beside(self.target)
        self.db = sqlite3.connect(self.tmp)
        self.db.executescript(ROW_TABLES)
        self.counts = {"inserted": 0, "updated": 0, "unchanged": 0}

    def write(self, doc: Document) -> None:
        row = document_row(doc)
        entities = entity_rows(doc)
        row["row_hash"] = row_hash(row, entities)
        found = self.main.execute("SELECT row_hash FROM documents WHERE id = ?", (doc.id,)).fetchone() if self.main else None
        if found == (row["row_hash"],):
            self.counts["unchanged"] += 1
            return
        self.counts["updated" if found else "inserted"] += 1
        self.db.execute(f"INSERT INTO documents VALUES ({', '.join(':' + c for c in DOCUMENT_COLUMNS)})", row)
        self.db.executemany("INSERT INTO entities VALUES (:doc_id, :text, :label, :start, :end, :canonical)", entities)

    def commit(self) -> None:
        self.db.commit()
        self.close()
        os.replace(self.tmp, self.target)
        for path in self.stale:
            path.unlink(missing_ok=True)

    def abort(self) -> None:
        self.close()
        self.tmp.unlink(missing_ok=True)

    def close(self) -> None:
        self.db.close()
        if self.main is not None:
            self.main.close()

    @property
    def changes(self) -> dict[str, int]:
        return dict(self.counts)


SQLITE_FILE = "textmill.sqlite"


class SqliteStore:
    """`textmill.sqlite`: a searchable copy of the corpus, updated in place by the shards' deltas.

    One transaction applies every pending delta of a current shard (upserts; the full-text index
    follows through triggers), deletes documents no longer in the corpus and refreshes
    `clusters`; the `runs` table gains a row only when the content changed. When nothing changed
    nothing is written, so the file stays byte-identical. A file of an older layout (or a
    damaged one) is rebuilt from the deltas, which then hold every row, keeping its runs.
    """

    def __init__(self, out_dir: Path, run: RunInfo | None = None) -> None:
        self.target = out_dir / SQLITE_FILE
        self.run = run or RunInfo()

    def finish(
        self, scratch: Path, keys: dict[int, str], ids: Callable[[], Iterator[str]], records: int | None = None
    ) -> dict[str, int]:
        """Apply the deltas of the current shards (`keys`: shard -> key), delete rows of ids not
        among `ids()` (`records` of them, when known); returns the rows deleted. Deltas of other
        shards or keys are discarded."""
        wanted = {scratch / f"sqlite-{n:05d}-{key[:16]}.sqlite" for n, key in keys.items()}
        found = sorted(scratch.glob("sqlite-*.sqlite")) if scratch.is_dir() else []
        deltas = [p for p in found if p in wanted]
        existing = open_readonly(self.target)
        fresh = existing is None
        if existing is not None:
            existing.close()
        path = temp_beside(self.target) if fresh else self.target
        # Every shard published again (a first publish, a forced one after the file was changed
        # by hand, an edit in every shard): the digest is summed anew, as the run read every row.
        whole = len(deltas) == len(keys)
        try:
            deleted = self.apply(path, fresh, deltas, ids, records, whole)
            if fresh:
                os.replace(path, self.target)
        except BaseException:
            if fresh:
                path.unlink(missing_ok=True)
            raise
        for delta in found:
            delta.unlink(missing_ok=True)
        return {"deleted": deleted}

    def apply(
        self,
        path: Path,
        fresh: bool,
        deltas: list[Path],
        ids: Callable[[], Iterator[str]],
        records: int | None = None,
        whole: bool = True,
    ) -> int:
        """One transaction: the deltas' upserts, the deletions, the clusters they touch, the
        content digest, a run row.

        Its cost follows the change. The current ids are listed (every record of every shard)
        only when the table holds more rows than the corpus has records (`records`): every
        current record has its row (a shard's rows are applied before its publish counts as
        done), so equal counts mean nothing to delete. Clusters are recomputed for the cluster
        ids the changed and deleted rows had or have, through the `cluster` index. The content
        digest (a sum over rows, kept in `digests`) moves by the shares of the rows replaced,
        added and deleted; it is summed from every row when the file is new, has none yet, or
        `whole` says every shard was published again.
        """
        db = sqlite3.connect(path, isolation_level=None)
        try:
            if fresh:
                db.executescript(SQLITE_SCHEMA)
                db.execute(f"PRAGMA user_version = {SQLITE_VERSION}")
            db.execute("BEGIN IMMEDIATE")
            changed = fresh
            if fresh:
                self.carry_runs(db)
            db.execute(DIGESTS_TABLE)
            stored = db.execute("SELECT value FROM digests WHERE name = 'content'").fetchone()
            shift = 0
            touched: set[str] = set()
            updates = ", ".join(f"{c} = excluded.{c}" for c in DOCUMENT_COLUMNS if c != "id")
            upsert = f"INSERT INTO documents VALUES ({', '.join('?' * len(DOCUMENT_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET {updates}"
            for delta in deltas:
                with closing(sqlite3.connect(delta)) as source:
                    rows = source.execute("SELECT * FROM documents").fetchall()
                    entities = source.execute("SELECT * FROM entities").fetchall()
                if rows:
                    changed = True
                    for row in rows:
                        old = db.execute("SELECT cluster, row_hash FROM documents WHERE id = ?", (row[0],)).fetchone()
                        if old is not None:
                            touched.add(old[0])
                            shift -= row_share(row[0], old[1])
                        touched.add(row[CLUSTER_COLUMN])
                        shift += row_share(row[0], row[ROW_HASH_COLUMN])
                    db.executemany("DELETE FROM entities WHERE doc_id = ?", ((row[0],) for row in rows))
                    db.executemany(upsert, rows)
                    db.executemany("INSERT INTO entities VALUES (?, ?, ?, ?, ?, ?)", entities)
            deleted = 0
            if records is None or db.execute("SELECT count(*) FROM documents").fetchone()[0] != records:
                db.execute("CREATE TEMP TABLE current (id TEXT PRIMARY KEY)")
                db.executemany("INSERT OR IGNORE INTO temp.current VALUES (?)", ((i,) for i in ids()))
                gone = "SELECT id FROM documents WHERE id NOT IN (SELECT id FROM temp.current)"
                for doc_id, cluster, digest in db.execute(f"SELECT id, cluster, row_hash FROM documents WHERE id IN ({gone})").fetchall():
                    touched.add(cluster)
                    shift -= row_share(doc_id, digest)
                db.execute(f"DELETE FROM entities WHERE doc_id IN ({gone})")
                deleted = db.execute(f"DELETE FROM documents WHERE id IN ({gone})").rowcount
            changed = changed or deleted > 0
            if changed:
                db.execute("CREATE TEMP TABLE touched (id TEXT PRIMARY KEY)")
                db.executemany("INSERT INTO temp.touched VALUES (?)", ((c,) for c in touched if c is not None))
                db.execute("DELETE FROM clusters WHERE id IN (SELECT id FROM temp.touched)")
                db.execute(
                    "INSERT INTO clusters SELECT cluster, coalesce(min(id) FILTER (WHERE duplicate_of IS NULL), cluster),"
                    " count(*) FROM documents WHERE cluster IN (SELECT id FROM temp.touched)"
                    " GROUP BY cluster HAVING count(*) > 1"
                )
                if fresh or whole or stored is None:
                    total = content_sum(db)
                else:
                    total = (int(stored[0], 16) + shift) % DIGEST_MODULUS
                db.execute(
                    "INSERT INTO digests VALUES ('content', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (f"{total:064x}",),
                )
                self.record_run(db, f"{total:064x}")
                db.execute("COMMIT")
            else:
                db.execute("ROLLBACK")
            return deleted
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def carry_runs(self, db: sqlite3.Connection) -> None:
        """The `runs` of the file being rebuilt, when it has them."""
        if not self.target.exists():
            return
        try:
            with closing(sqlite3.connect(self.target.resolve().as_uri() + "?mode=ro", uri=True)) as old:
                previous = old.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY rowid").fetchall()
        except sqlite3.DatabaseError:
            return  # a damaged file, or one without runs: its history cannot be carried over
        db.executemany(f"INSERT INTO runs VALUES ({', '.join('?' * len(RUN_COLUMNS))})", previous)

    def record_run(self, db: sqlite3.Connection, digest: str) -> None:
        """A `runs` row for this publish, unless the content (`digest`) equals that of the last
        run recorded."""
        last = db.execute("SELECT content_digest FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()
        if last == (digest,):
            return
        statuses = dict(db.execute("SELECT status, count(*) FROM documents GROUP BY status").fetchall())
        db.execute(
            f"INSERT OR IGNORE INTO runs VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
            (
                self.run.run_id, self.run.run_name, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                self.run.config_digest, sum(statuses.values()), statuses.get("ok", 0),
                statuses.get("duplicate", 0), statuses.get("rejected", 0), digest,
            ),
        )


PART_SINKS: dict[str, type] = {"jsonl": JsonlPart, "parquet": ParquetPart}
