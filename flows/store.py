"""The per-document store: one SQLite pack per shard, under the output's state folder.

`store/<n>.sqlite` holds shard `n` (`flows/assign.py`: a file keeps its shard): one table per kind
(`docs`, `summaries`, `listings`, ...) of `key -> zlib-compressed JSON`, `docs` with the
document's status beside it, and `uses`: which keys each shard task's output refers to, under
the task's cache key, so garbage collection (`flows/gc.py`) knows what a kept run still needs.

Only one task writes a pack at a time (a shard's stages run one after the other, and runs on
one output folder are serialised by its lock), so a pack needs no coordination beyond SQLite's
own file locks. It uses the rollback journal, not WAL: WAL's index lives in shared memory,
which processes on different machines (Dask workers sharing the output folder over a network
filesystem) cannot share. Writes are batched: one transaction per `BATCH` records.

The layout before this one kept packs per shard count (`store/<K>/<n>.sqlite`); its results
are not reused (the layout is part of every shard task's cache key) and gc removes it.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import sqlite3
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from textmill.tasks.atomic import temp_beside
from textmill.tasks.document import Document

BATCH = 64
PAGE_SIZE = 16384
# Part of every shard task's cache key: cached results of an earlier store layout name records
# this one does not hold, so they must not be reused.
LAYOUT = "packs-2"
# The folders of the layout before packs (one gzip file per record), removed by gc.
FILE_PER_RECORD_KINDS = ("docs", "summaries", "listings")
KIND = re.compile(r"[a-z][a-z_]*\Z")
# Tables of a pack that are not kinds of records.
RESERVED = frozenset({"uses"})
# The pack's user_version while it holds writes that no collection has looked at yet.
DIRTY = 1


def pack_path(root: Path, shard: int) -> Path:
    """Where shard `shard` keeps its records."""
    return root / f"{shard}.sqlite"


def packs_of(root: Path) -> list[Path]:
    """Every shard's pack under `root`."""
    return sorted(root.glob("*.sqlite")) if root.is_dir() else []


def levels(root: Path) -> list[int]:
    """Shard counts of the layout before this one (`store/<K>/`), which gc removes."""
    try:
        return sorted(int(entry.name) for entry in os.scandir(root) if entry.is_dir() and entry.name.isdigit())
    except FileNotFoundError:
        return []


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), rollback journal."""
    db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=DELETE")
    return db


def compress(record: Any) -> bytes:
    return zlib.compress(json.dumps(record, ensure_ascii=False).encode(), 1)


def decompress(body: bytes) -> Any:
    return json.loads(zlib.decompress(body))


class Store:
    """Records by kind and key in one shard's pack; `has/get/put/get_doc/put_doc` as ever.

    Open it with `Store.open(...)` (or `with Store.open(...) as store`), which creates the
    pack; every key it finds or writes is remembered, so `record_uses` can note them under the
    task that worked here.
    """

    def __init__(self, db: sqlite3.Connection, path: Path, track: bool = True) -> None:
        self.db = db
        self.path = path
        self.track = track
        self.touched: set[str] = set()
        self.kinds: set[str] = set()
        self.pending = 0

    @classmethod
    def open(cls, root: Path, shard: int, track: bool = True) -> Store:
        """Shard `shard`'s pack, created if missing; `track`: remember the keys found and
        written, for `record_uses`."""
        path = pack_path(root, shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = connect(path)
        if db.execute("PRAGMA page_count").fetchone()[0] == 0:
            # Before the first table: gc can hand freed pages back to the filesystem, and pages
            # of 16 KB hold several compressed documents each instead of leaving a third empty.
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("CREATE TABLE IF NOT EXISTS uses (task TEXT PRIMARY KEY, keys BLOB NOT NULL) WITHOUT ROWID")
        return cls(db, path, track)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()

    # -- tables ---------------------------------------------------------------------------

    def table(self, kind: str) -> str:
        """The table of `kind`, created on first use (only `docs` has a status column)."""
        if kind not in self.kinds:
            if not KIND.match(kind) or kind in RESERVED:
                raise ValueError(f"invalid store kind {kind!r}")
            # Documents (a few KB each) in a rowid table; small records in the key's own b-tree.
            columns, layout = ("status TEXT NOT NULL, ", "") if kind == "docs" else ("", " WITHOUT ROWID")
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {kind} (key TEXT PRIMARY KEY, {columns}body BLOB NOT NULL){layout}")
            self.kinds.add(kind)
        return kind

    def row(self, kind: str, key: str, columns: str) -> tuple[Any, ...] | None:
        """A row of `kind`, or None."""
        table = self.table(kind)
        found = self.db.execute(f"SELECT {columns} FROM {table} WHERE key = ?", (key,)).fetchone()
        if found is not None and self.track:
            self.touched.add(key)
        return found

    # -- the record API ---------------------------------------------------------------------

    def has(self, kind: str, key: str) -> bool:
        return self.row(kind, key, "1") is not None

    def get(self, kind: str, key: str) -> Any:
        """The record stored under `key`; KeyError when missing."""
        found = self.row(kind, key, "body")
        if found is None:
            raise KeyError(f"{kind}/{key} is not in the store at {self.path}")
        return decompress(found[0])

    def put(self, kind: str, key: str, record: Any) -> None:
        """Store `record` under `key` unless it is already there (same key, same content)."""
        table = self.table(kind)
        if kind == "docs":
            self.write(f"INSERT OR IGNORE INTO {table} (key, status, body) VALUES (?, ?, ?)", (key, record["status"], compress(record)))
        else:
            self.write(f"INSERT OR IGNORE INTO {table} (key, body) VALUES (?, ?)", (key, compress(record)))
        if self.track:
            self.touched.add(key)

    def status(self, key: str) -> str:
        """A stored document's status, without decompressing the document."""
        found = self.row("docs", key, "status")
        if found is None:
            raise KeyError(f"docs/{key} is not in the store at {self.path}")
        return str(found[0])

    def get_doc(self, key: str) -> Document:
        return Document.from_dict(self.get("docs", key))

    def put_doc(self, key: str, doc: Document) -> None:
        self.put("docs", key, doc.to_dict())

    # -- transactions -----------------------------------------------------------------------

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        """Run one write inside the open batch transaction; commit every `BATCH` writes."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(f"PRAGMA user_version={DIRTY}")
        self.db.execute(sql, params)
        self.pending += 1
        if self.pending >= BATCH:
            self.commit()

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")
        self.pending = 0

    def record_uses(self, task: str, keys: Iterable[str]) -> None:
        """Note under `task` every key its output refers to, plus every key it found or wrote."""
        used = sorted(self.touched.union(keys))
        self.write("INSERT OR REPLACE INTO uses (task, keys) VALUES (?, ?)", (task, zlib.compress("\n".join(used).encode(), 1)))
        self.commit()

    def close(self) -> None:
        self.commit()
        self.release()

    def abandon(self) -> None:
        """Close after a failure: what was committed stays (finished batches are good results)."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self.release()

    def release(self) -> None:
        self.db.close()

    # -- garbage collection -----------------------------------------------------------------

    def collect(self, live_tasks: set[str]) -> int:
        """Delete what no task in `live_tasks` uses; the number of records removed.

        A pack whose every use is live and that nothing wrote since its last collection is
        left as it is without reading its uses.
        """
        tasks = {task for (task,) in self.db.execute("SELECT task FROM uses")}
        dead = tasks - live_tasks
        dirty = self.db.execute("PRAGMA user_version").fetchone()[0] == DIRTY
        if not dead and not dirty:
            return 0
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("DELETE FROM uses WHERE task = ?", ((t,) for t in dead))
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS live (key TEXT PRIMARY KEY)")
        self.db.execute("DELETE FROM live")
        for (blob,) in self.db.execute("SELECT keys FROM uses").fetchall():
            keys = zlib.decompress(blob).decode()
            if keys:
                self.db.executemany("INSERT OR IGNORE INTO live (key) VALUES (?)", ((k,) for k in keys.split("\n")))
        removed = 0
        for table in self.tables():
            removed += self.db.execute(f"DELETE FROM {table} WHERE key NOT IN (SELECT key FROM live)").rowcount
        self.db.execute("PRAGMA user_version=0")
        self.db.execute("COMMIT")
        self.db.execute("PRAGMA incremental_vacuum")
        return removed

    def tables(self) -> list[str]:
        names = self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return [name for (name,) in names if KIND.match(name) and name not in RESERVED]

    def count(self, kind: str) -> int:
        if kind not in self.tables():
            return 0
        return int(self.db.execute(f"SELECT count(*) FROM {kind}").fetchone()[0])


class Packs:
    """Reads documents across shards' packs (publishing), a bounded number open at once."""

    def __init__(self, root: Path, open_at_most: int = 256) -> None:
        self.root = root
        self.open_at_most = open_at_most
        self.stores: OrderedDict[int, Store] = OrderedDict()

    def __enter__(self) -> Packs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def store(self, shard: int) -> Store:
        store = self.stores.pop(shard, None)
        if store is None:
            if len(self.stores) >= self.open_at_most:
                self.stores.popitem(last=False)[1].close()
            store = Store.open(self.root, shard, track=False)
        self.stores[shard] = store
        return store

    def get_doc(self, shard: int, key: str) -> Document:
        return self.store(shard).get_doc(key)

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        self.stores.clear()


def write_jsonl_gz(path: Path, rows: Iterator[Any]) -> None:
    """Write rows as gzip JSON Lines atomically (used for shard bundles of summaries)."""
    tmp = temp_beside(path)
    try:
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False))
                fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl_gz(path: Path) -> Iterator[Any]:
    """Stream rows written by `write_jsonl_gz`."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)
