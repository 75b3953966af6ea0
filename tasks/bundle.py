"""A shard's bundle: the folder a corpus step's summarize phase writes once per shard content.

It holds the shard's `(id, summary)` pairs (`summaries.jsonl.gz`, read back when decisions are
applied) and whatever the step's `spill` adds for its partitioned index (dedupe: columnar
signatures and LSH band rows). The folder is named by a digest of its content and written
under a temporary name then renamed, so a bundle that exists is complete and never changes.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textmill.tasks.base import CorpusStep

SUMMARIES = "summaries.jsonl.gz"


def write_bundle(folder: Path, pairs: list[tuple[str, dict[str, Any]]], step: CorpusStep, partitions: int) -> None:
    """Write the bundle of `pairs` (sorted by id), spilled for `partitions` partitions, unless it
    exists; concurrent writers are safe."""
    if folder.exists():
        return
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir(parents=True)
    try:
        with gzip.open(tmp / SUMMARIES, "wt", encoding="utf-8", compresslevel=3) as fh:
            for doc_id, summary in pairs:
                fh.write(json.dumps([doc_id, summary], separators=(",", ":")))
                fh.write("\n")
        step.spill(pairs, tmp, partitions)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_summaries(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Stream a bundle's `(id, summary)` pairs, in id order."""
    with gzip.open(folder / SUMMARIES, "rt", encoding="utf-8") as fh:
        for line in fh:
            doc_id, summary = json.loads(line)
            yield doc_id, summary
