"""Writers for the published outputs. Each writes to a temporary file and renames on commit.

A sink that fails part-way removes its temporary file, so a retried publish starts clean and
never leaves duplicated or half-written rows behind. A committed file whose bytes equal the
file already there is not replaced, so publishing the same results twice changes nothing.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.atomic import replace_if_changed, temp_beside
from tasks.document import Document

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
    cluster TEXT, duplicate_of TEXT
);
CREATE TABLE entities (
    doc_id TEXT NOT NULL REFERENCES documents(id), text TEXT NOT NULL, label TEXT NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, canonical TEXT
);
CREATE INDEX documents_lang ON documents(lang);
CREATE INDEX documents_cluster ON documents(cluster);
CREATE INDEX entities_canonical ON entities(canonical);
CREATE INDEX entities_doc ON entities(doc_id);
"""


class SqliteSink:
    """`textmill.sqlite`: documents and entities tables, built in a fresh file per publish."""

    def __init__(self, out_dir: Path) -> None:
        self.target = out_dir / "textmill.sqlite"
        self.files = [self.target.name]
        self.tmp = temp_beside(self.target)
        self.db = sqlite3.connect(self.tmp)
        self.db.executescript(SQLITE_SCHEMA)

    def write(self, doc: Document) -> None:
        row = document_row(doc)
        del row["entity_count"]
        self.db.execute(
            "INSERT INTO documents VALUES (:id, :path, :sha256, :status, :reason, :text, :meta, :lang,"
            " :lang_score, :cluster, :duplicate_of)",
            row,
        )
        self.db.executemany(
            "INSERT INTO entities VALUES (:doc_id, :text, :label, :start, :end, :canonical)", entity_rows(doc)
        )

    def commit(self) -> None:
        self.db.commit()
        self.db.close()
        replace_if_changed(self.tmp, self.target)

    def abort(self) -> None:
        self.db.close()
        self.tmp.unlink(missing_ok=True)


SINKS: dict[str, type] = {"jsonl": JsonlSink, "parquet": ParquetSink, "sqlite": SqliteSink}
