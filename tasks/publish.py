"""The `publish` step: write every record, whatever its status, to the configured formats."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from tasks.base import PublishReport, SinkStep, StepOptions
from tasks.document import Document
from tasks.sinks import SINKS, Sink


class PublishOptions(StepOptions):
    formats: list[Literal["jsonl", "parquet", "sqlite"]] = Field(
        default=["jsonl", "parquet", "sqlite"], min_length=1, description="Which outputs to write."
    )


class Publisher(SinkStep):
    """Streams documents once through every sink; all commit together or none does."""

    name = "publish"
    version = "1"
    Options = PublishOptions

    def publish(self, docs: Iterator[Document], out_dir: Path) -> PublishReport:
        out_dir.mkdir(parents=True, exist_ok=True)
        sinks: list[Sink] = []
        try:
            for fmt in self.options.formats:
                sinks.append(SINKS[fmt](out_dir))
            for doc in docs:
                for sink in sinks:
                    sink.write(doc)
            for sink in sinks:
                sink.commit()
        except BaseException:
            for sink in sinks:
                sink.abort()
            raise
        return PublishReport(files=[f for s in sinks for f in s.files])
