"""A content-addressed store for per-document step results, under the output's state folder.

One small compressed JSON file per key, written atomically (temporary name, then rename), so
concurrent shard tasks — threads, processes or Dask workers on a shared filesystem — never see
a half-written record and never need a lock.
"""
from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textmill.tasks.atomic import temp_beside, write_atomic
from textmill.tasks.document import Document


class Store:
    """Records by key, in kinds: `docs` (Documents) and `summaries` (corpus-step summaries)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.json.gz"

    def has(self, kind: str, key: str) -> bool:
        return self._path(kind, key).exists()

    def get(self, kind: str, key: str) -> Any:
        """The record stored under `key`; KeyError when missing."""
        try:
            with gzip.open(self._path(kind, key), "rb") as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            raise KeyError(f"{kind}/{key} is not in the store at {self.root}") from None

    def put(self, kind: str, key: str, record: Any) -> None:
        """Store `record` under `key` unless it is already there (same key, same content)."""
        path = self._path(kind, key)
        if path.exists():
            return
        write_atomic(path, gzip.compress(json.dumps(record, ensure_ascii=False).encode(), 1, mtime=0))

    def get_doc(self, key: str) -> Document:
        return Document.from_dict(self.get("docs", key))

    def put_doc(self, key: str, doc: Document) -> None:
        self.put("docs", key, doc.to_dict())


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
