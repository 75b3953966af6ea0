"""The `publish` step: write every record, whatever its status, to the configured stores."""
from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from textmill.tasks.base import FinishInfo, PublishReport, RunInfo, ShardInfo, SinkStep, StepOptions, shard_key_name
from textmill.tasks.document import Document
from textmill.tasks.secrets import has_password
from textmill.tasks.sinks import PART_SINKS, SQLITE_FILE, BlockParts, Sink, SqliteDelta, SqliteStore, remove_stale_parts

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PublishOptions(StepOptions):
    formats: list[Literal["jsonl", "parquet", "sqlite", "postgres"]] = Field(
        default=["jsonl", "parquet", "sqlite"], min_length=1, description="Which stores to write."
    )
    postgres_dsn: str | None = Field(
        None,
        description="PostgreSQL to publish to with the `postgres` format, e.g. postgresql://user@host:5432/db. "
        "No password here: libpq reads PGPASSWORD or ~/.pgpass (`textmill run --publish` moves one there).",
    )
    postgres_schema: str = Field("textmill", description="Schema that holds textmill's tables; created if missing.")
    postgres_batch_size: int = Field(500, ge=1, description="Documents per transaction.")
    postgres_retries: int = Field(5, ge=0, description="Retries of a batch after a lost connection or a conflict.")
    part_size: int = Field(
        1024,
        ge=1,
        description="Records per part file: a shard of more is written in blocks of about this many "
        "(by a hash of the id), each its own part, so a changed record rewrites its block's parts only.",
    )
    postgres_retry_delay: float = Field(
        0.5, ge=0.0, description="First retry delay in seconds; doubles each retry (at most 30 s), plus jitter."
    )

    @field_validator("postgres_dsn")
    @classmethod
    def no_password(cls, dsn: str | None) -> str | None:
        if dsn is not None and has_password(dsn):
            raise ValueError(
                "the DSN must not contain a password (configs and run parameters are not secret): "
                "set PGPASSWORD or use ~/.pgpass"
            )
        return dsn

    @field_validator("postgres_schema")
    @classmethod
    def plain_schema(cls, name: str) -> str:
        if not SCHEMA_NAME.match(name):
            raise ValueError("a schema name is lower-case letters, digits and _ (at most 63), not starting with a digit")
        return name

    @model_validator(mode="after")
    def dsn_for_postgres(self) -> PublishOptions:
        if "postgres" in self.formats and not self.postgres_dsn:
            raise ValueError("the postgres format needs postgres_dsn (or `textmill run --publish postgresql://...`)")
        return self


class Publisher(SinkStep):
    """Writes each shard's records once through every store; see `tasks/sinks.py` for the layout.

    Per shard: a JSON Lines part, Parquet parts (one of each per block when the shard has more
    than `part_size` records), a delta against `textmill.sqlite`, and upserts into PostgreSQL,
    each replaced together or not at all. `finish` applies the SQLite deltas,
    removes parts of shards that are gone, and tombstones PostgreSQL rows whose source is gone.
    """

    name = "publish"
    version = "3"
    Options = PublishOptions
    options: PublishOptions

    def outputs_external(self) -> bool:
        return "postgres" in self.options.formats

    def blocks(self, records: int, previous: int | None) -> int:
        """About `part_size` records a block, in a power of two of blocks. A shard keeps its
        count while its blocks hold a quarter to twice `part_size` on average, so a shard that
        grows or shrinks a little is not rewritten whole for a new count."""
        size = self.options.part_size
        if previous and previous * size // 4 < records <= previous * size * 2:
            return previous
        wanted = -(-records // size)
        return 1 if wanted <= 1 else 1 << (wanted - 1).bit_length()

    def published_keys(self) -> dict[str, str]:
        """The keys the PostgreSQL schema recorded (it is migrated first, so a new one has none)."""
        if "postgres" not in self.options.formats:
            return {}
        from textmill.tasks.postgres import PostgresSink

        sink = self.open_sink("postgres", Path("."), RunInfo())
        assert isinstance(sink, PostgresSink)
        try:
            return sink.published_keys()
        finally:
            sink.close()

    def publish_shard(self, docs: Iterator[Document], shard: ShardInfo, out_dir: Path, run: RunInfo) -> PublishReport:
        out_dir.mkdir(parents=True, exist_ok=True)
        sinks: list[Sink] = []
        try:
            for fmt in self.options.formats:
                sinks.append(self.open_sink(fmt, out_dir, run, shard))
            for doc in docs:
                for sink in sinks:
                    sink.write(doc)
            for sink in sinks:
                sink.commit()
        except BaseException:
            for sink in sinks:
                sink.abort()
            raise
        changes = {fmt: sink.changes for fmt, sink in zip(self.options.formats, sinks) if hasattr(sink, "changes")}
        blocks: dict[int, list[str]] = {}
        for sink in sinks:
            if isinstance(sink, BlockParts):
                for block, files in sink.block_files.items():
                    blocks.setdefault(block, []).extend(files)
        return PublishReport(files=[f for s in sinks for f in s.files], changes=changes, blocks=blocks)

    def finish(self, info: FinishInfo, out_dir: Path, run: RunInfo) -> PublishReport:
        changes: dict[str, dict[str, int]] = {}
        files: list[str] = []
        for fmt in self.options.formats:
            totals = {"inserted": 0, "updated": 0, "unchanged": info.unchanged, "deleted": 0}
            for report in info.published.values():
                for name, count in report.changes.get(fmt, {}).items():
                    totals[name] = totals.get(name, 0) + count
            if fmt in PART_SINKS:
                remove_stale_parts(out_dir, fmt, set(info.shards))
            elif fmt == "sqlite":
                totals.update(SqliteStore(out_dir, run).finish(info.scratch, info.keys, info.ids, info.records))
                files.append(SQLITE_FILE)
                changes[fmt] = totals
            elif fmt == "postgres":
                from textmill.tasks.postgres import PostgresSink

                sink = self.open_sink(fmt, out_dir, run, None)
                assert isinstance(sink, PostgresSink)
                sink.finish(info.ids, totals, records=info.records, shards=info.shards, key=info.key)
                changes[fmt] = sink.changes
        return PublishReport(files=files, changes=changes)

    def publish(self, docs: Iterator[Document], out_dir: Path, run: RunInfo | None = None) -> PublishReport:
        """Everything as one shard, then `finish` (for direct use; the flow publishes by shard)."""
        run = run or RunInfo()
        records = list(docs)
        ids = [d.id for d in records]
        with tempfile.TemporaryDirectory() as scratch:
            shard = ShardInfo(number=0, key=digest_ids(records), ids=ids, scratch=Path(scratch))
            written = self.publish_shard(iter(records), shard, out_dir, run)
            info = FinishInfo(
                shards=[0], keys={0: shard.key}, published={0: written}, unchanged=0,
                scratch=Path(scratch), ids=lambda: iter(ids), records=len(ids),
            )
            finished = self.finish(info, out_dir, run)
        return PublishReport(files=written.files + finished.files, changes=finished.changes)

    def open_sink(self, fmt: str, out_dir: Path, run: RunInfo, shard: ShardInfo | None = None) -> Sink:
        """The writer of `fmt` for `shard` (for PostgreSQL without a shard: the one `finish` uses)."""
        opts = self.options
        if fmt == "postgres":
            from textmill.tasks.postgres import PostgresSink

            assert opts.postgres_dsn is not None  # checked by the options
            return PostgresSink(
                opts.postgres_dsn,
                opts.postgres_schema,
                run,
                batch_size=opts.postgres_batch_size,
                retries=opts.postgres_retries,
                retry_delay=opts.postgres_retry_delay,
                ids=shard.ids if shard is not None else [],
                record_as=(shard_key_name(shard.number), shard.key) if shard is not None and shard.key else None,
            )
        shard = shard or ShardInfo(number=0, key="", ids=[], scratch=out_dir)
        if fmt == "sqlite":
            return SqliteDelta(out_dir, shard.scratch, shard.number, shard.key)
        if shard.blocks > 1:
            number = shard.number
            return BlockParts(shard, lambda block: PART_SINKS[fmt](out_dir, number, block))
        return PART_SINKS[fmt](out_dir, shard.number)


def digest_ids(docs: list[Document]) -> str:
    """A key for a one-shard publish: changes with any record."""
    h = hashlib.sha256()
    for doc in docs:
        h.update(json.dumps(doc.to_dict(), sort_keys=True, default=str).encode())
    return h.hexdigest()
