"""Writers for the published outputs. Each writes to a temporary file and renames on commit.

A sink that fails part-way removes its temporary file, so a retried publish starts clean and
never leaves duplicated or half-written rows behind. A committed file whose bytes equal the
file already there is not replaced, so publishing the same results twice changes nothing.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from textmill.tasks.atomic import replace_if_changed, temp_beside
from textmill.tasks.base import RunInfo
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
    """Receives every document once, in id order, then commits or aborts."""

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


class JsonlSink:
    """`documents.jsonl`: the stable public record, one line per input document."""

    def __init__(self, out_dir: Path) -> None:
        self.target = out_dir / "documents.jsonl"
        self.files = [self.target.name]
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


class ParquetSink:
    """`documents.parquet` and `entities.parquet`, written in batches to bound memory."""

    def __init__(self, out_dir: Path) -> None:
        self.targets = [out_dir / "documents.parquet", out_dir / "entities.parquet"]
        self.files = [t.name for t in self.targets]
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


SQLITE_SCHEMA = """
CREATE TABLE documents (
    id TEXT PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT, text TEXT NOT NULL, meta TEXT NOT NULL, lang TEXT, lang_score REAL,
    cluster TEXT, duplicate_of TEXT, entity_count INTEGER NOT NULL
);
CREATE TABLE entities (
    doc_id TEXT NOT NULL REFERENCES documents(id), text TEXT NOT NULL, label TEXT NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, canonical TEXT
);
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
"""
RUN_COLUMNS = (
    "run_id", "run_name", "published_at", "config_digest", "documents", "ok", "duplicate", "rejected", "content_digest",
)


class SqliteSink:
    """`textmill.sqlite`: a searchable copy of the corpus, built in a fresh file per publish.

    The `runs` table carries over from the previous file and gains a row only when the
    content changed, so publishing the same records again leaves the file byte-identical.
    """

    def __init__(self, out_dir: Path, run: RunInfo | None = None) -> None:
        self.target = out_dir / "textmill.sqlite"
        self.files = [self.target.name]
        self.run = run or RunInfo()
        self.tmp = temp_beside(self.target)
        self.db = sqlite3.connect(self.tmp)
        self.db.executescript(SQLITE_SCHEMA)
        self.content = hashlib.sha256()
        self.statuses: Counter[str] = Counter()

    def write(self, doc: Document) -> None:
        row = document_row(doc)
        entities = entity_rows(doc)
        self.content.update(json.dumps([row, entities], sort_keys=True, ensure_ascii=False).encode())
        self.statuses[doc.status] += 1
        self.db.execute(
            "INSERT INTO documents VALUES (:id, :path, :sha256, :status, :reason, :text, :meta, :lang,"
            " :lang_score, :cluster, :duplicate_of, :entity_count)",
            row,
        )
        self.db.executemany("INSERT INTO entities VALUES (:doc_id, :text, :label, :start, :end, :canonical)", entities)

    def commit(self) -> None:
        self.db.execute("INSERT INTO documents_fts(documents_fts) VALUES ('rebuild')")
        self.db.execute(
            "INSERT INTO clusters SELECT cluster, coalesce(min(id) FILTER (WHERE duplicate_of IS NULL), cluster),"
            " count(*) FROM documents WHERE cluster IS NOT NULL GROUP BY cluster HAVING count(*) > 1"
        )
        self.record_runs()
        self.db.commit()
        self.db.close()
        replace_if_changed(self.tmp, self.target)

    def record_runs(self) -> None:
        """Earlier runs from the file being replaced, then this one if the content changed."""
        previous: list[tuple[Any, ...]] = []
        if self.target.exists():
            try:
                with closing(sqlite3.connect(self.target.resolve().as_uri() + "?mode=ro", uri=True)) as old:
                    previous = old.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY rowid").fetchall()
            except sqlite3.DatabaseError:
                previous = []  # an older layout or a damaged file: its history cannot be carried over
        placeholders = ", ".join("?" * len(RUN_COLUMNS))
        self.db.executemany(f"INSERT INTO runs VALUES ({placeholders})", previous)
        digest = self.content.hexdigest()
        if previous and previous[-1][-1] == digest:
            return
        self.db.execute(
            f"INSERT OR IGNORE INTO runs VALUES ({placeholders})",
            (
                self.run.run_id, self.run.run_name, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                self.run.config_digest, sum(self.statuses.values()), self.statuses["ok"],
                self.statuses["duplicate"], self.statuses["rejected"], digest,
            ),
        )

    def abort(self) -> None:
        self.db.close()
        self.tmp.unlink(missing_ok=True)


FILE_SINKS: dict[str, type] = {"jsonl": JsonlSink, "parquet": ParquetSink, "sqlite": SqliteSink}
