"""The `publish` step: write every record, whatever its status, to the configured stores."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from textmill.tasks.base import PublishReport, RunInfo, SinkStep, StepOptions
from textmill.tasks.document import Document
from textmill.tasks.secrets import has_password
from textmill.tasks.sinks import FILE_SINKS, Sink

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
    """Streams documents once through every store; files are replaced together or not at all."""

    name = "publish"
    version = "2"
    Options = PublishOptions
    options: PublishOptions

    def outputs_external(self) -> bool:
        return "postgres" in self.options.formats

    def publish(self, docs: Iterator[Document], out_dir: Path, run: RunInfo | None = None) -> PublishReport:
        run = run or RunInfo()
        out_dir.mkdir(parents=True, exist_ok=True)
        sinks: list[Sink] = []
        try:
            for fmt in self.options.formats:
                sinks.append(self.open_sink(fmt, out_dir, run))
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
        return PublishReport(files=[f for s in sinks for f in s.files], changes=changes)

    def open_sink(self, fmt: str, out_dir: Path, run: RunInfo) -> Sink:
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
            )
        if fmt == "sqlite":
            return FILE_SINKS[fmt](out_dir, run)
        return FILE_SINKS[fmt](out_dir)
