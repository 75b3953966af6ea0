"""The step plugin contract: three small base classes, one per kind of step.

A step knows nothing of Prefect, caching or sharding; the orchestrator in `flows/` owns those.
Each concrete step implements one narrow method (or three, for corpus-wide steps).
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from textmill.tasks.document import Document, Provenance

Scope = Literal["document", "corpus", "sink"]


class ConfigError(ValueError):
    """A configuration mistake: permanent, never retried, reported before any work starts."""


@cache
def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution (None when absent), looked up once per process:
    installing another version needs a new process anyway."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


class StepOptions(BaseModel):
    """Base for a step's options: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(ABC):
    """What every step has: a name, a version, validated options and a fingerprint.

    Bump `version` whenever a change to the code changes results: the fingerprint includes it,
    so cached results of the old version are not reused. Name in `libraries` the distributions
    (as pip knows them) whose behaviour shapes the output: their installed versions are part of
    the fingerprint too, so upgrading one recomputes what it may change.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    scope: ClassVar[Scope]
    Options: ClassVar[type[StepOptions]] = StepOptions
    libraries: ClassVar[tuple[str, ...]] = ()
    # True when what `setup()` loads may be shared by processes forked after it: read-only data,
    # no running threads, no open sockets or files. `textmill run` then sets the step up once in
    # its fork server, and every worker forked from it starts with the models in memory.
    setup_before_fork: ClassVar[bool] = False

    def __init__(self, options: StepOptions | None = None, config_dir: Path | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.config_dir = config_dir if config_dir is not None else Path.cwd()

    def setup(self) -> None:
        """Load models or rule files; called once per worker process before the first batch."""

    def check(self) -> None:
        """Cheap checks against the installation (packages, files) when the config loads, so a
        mistake stops the run before any work: raise ConfigError naming the option. Loads no model."""

    def fingerprint_extra(self) -> dict[str, Any]:
        """Anything beyond options that changes results (e.g. the contents of a rules file)."""
        return {}

    def library_names(self) -> tuple[str, ...]:
        """The distributions this instance's output depends on: `libraries` by default; override
        when the options choose them (a language backend, a model package)."""
        return self.libraries

    def library_versions(self) -> dict[str, str | None]:
        """Installed version of each distribution in `library_names()` (None when not installed)."""
        return {name: installed_version(name) for name in sorted(set(self.library_names()))}

    def options_hash(self) -> str:
        """A short digest of the options, recorded in provenance."""
        return hashlib.sha256(self.options.model_dump_json().encode()).hexdigest()[:12]

    def fingerprint(self) -> str:
        """Digest of everything that determines this step's output for a given input."""
        payload = json.dumps(
            {
                "name": self.name,
                "version": self.version,
                "options": self.options.model_dump(mode="json"),
                "libraries": self.library_versions(),
                "extra": self.fingerprint_extra(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def provenance(self, note: str | None = None) -> Provenance:
        """The provenance entry this step adds to a record it touched."""
        return Provenance(step=self.name, version=self.version, options=self.options_hash(), note=note)

    def stamp(self, doc: Document, note: str | None = None, **changes: Any) -> Document:
        """Return `doc` with `changes` applied and this step's provenance appended."""
        return doc.evolve(steps=doc.steps + (self.provenance(note),), **changes)

    def accepts(self, doc: Document) -> bool:
        """Whether this step works on `doc`: only `ok` documents; others pass through untouched.

        The orchestrator applies the same rule from each document's status before loading it,
        so steps see only `ok` documents in a pipeline; steps check it too for direct calls.
        """
        return doc.active


class DocumentStep(Step):
    """A step whose result for a document depends on that document alone."""

    scope: ClassVar[Scope] = "document"

    @abstractmethod
    def process(self, docs: list[Document]) -> list[Document]:
        """Return one output document per input document, in the same order."""


class CorpusStep(Step):
    """A step whose result depends on the whole corpus (clustering, corpus-wide names).

    It runs in phases so that the expensive part stays per-document and cacheable and no
    process needs the whole corpus in memory:

    1. `summarize` per document (cached); the orchestrator writes each shard's summaries into
       a bundle folder and calls `spill` to add the step's own files (e.g. rows per partition).
    2. `reduce` once per partition (`partitions()` of them, in parallel), over every shard's
       bundle, into a small JSON-able partial; it may keep files in `state` between runs to
       update an index with what changed instead of rebuilding it.
    3. `combine` the partials into the index.
    4. `decide` + `apply` per document, from the index.

    A step either overrides `build_index` (one partition whose reduce streams every summary:
    the default) or `spill`/`reduce`/`combine`; `build_index` then runs those in a temporary
    folder, for callers that hold summaries in memory.
    """

    scope: ClassVar[Scope] = "corpus"
    # The layout of the step's partials and partition state. Changing it makes the next run
    # reduce and combine again (the summaries stay cached); the step's version does both.
    index_layout: ClassVar[str] = "1"

    @abstractmethod
    def summarize(self, docs: list[Document]) -> list[dict[str, Any]]:
        """Return one small JSON-able summary per document, in the same order."""

    def build_index(self, summaries: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        """Build the corpus-wide index from `(document id, summary)` pairs; JSON-able.

        Default: the partitioned phases over one bundle in a temporary folder."""
        if type(self).reduce is CorpusStep.reduce:
            raise NotImplementedError(f"{type(self).__name__} overrides neither build_index nor reduce")
        from textmill.tasks.bundle import write_bundle

        with tempfile.TemporaryDirectory(prefix="textmill-index-") as tmp:
            folder = Path(tmp) / "bundle"
            count = self.partitions(shards=sys.maxsize)
            write_bundle(folder, sorted(summaries, key=lambda pair: pair[0]), self, count)
            partials = [self.reduce(p, [folder], Path(tmp) / f"state-{p}") for p in range(count)]
            return self.combine(partials)

    def partitions(self, shards: int) -> int:
        """How many partitions (one task each) the index of a corpus in `shards` shards is
        reduced in; a function of the options and `shards` only. Default 1."""
        return 1

    def spill(self, summaries: list[tuple[str, dict[str, Any]]], folder: Path, partitions: int) -> None:
        """Add this shard's files for `reduce` to `folder` (summaries in id order); default none."""

    def reduce(self, partition: int, bundles: list[Path], state: Path) -> dict[str, Any]:
        """The partial index of one partition over every shard's bundle folder (sorted).

        `state` is this partition's folder, kept between runs of the same step fingerprint: a
        step may keep what it needs there to update its partial from the bundles that changed.
        The partial must depend on the bundles only, never on what `state` held before.
        Default: `build_index` over every summary (one partition).
        """
        from textmill.tasks.bundle import read_summaries

        return self.build_index(pair for folder in bundles for pair in read_summaries(folder))

    def combine(self, partials: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """The index from every partition's partial, streamed in partition order (one at a time
        in memory); default: the one partial."""
        partials = list(partials)
        if len(partials) != 1:
            raise ValueError(f"{type(self).__name__} has {len(partials)} partials; override combine")
        return partials[0]

    @abstractmethod
    def decide(self, index: dict[str, Any], doc_id: str, summary: dict[str, Any]) -> dict[str, Any]:
        """Return this document's share of the index: all `apply` needs, JSON-able and small."""

    def decisions_key(self, index: dict[str, Any], doc_ids: list[str]) -> str | None:
        """A key of what `decide` returns for `doc_ids`, from the index and the ids alone, for a
        step whose decisions need no summary: a shard whose key is unchanged keeps its applied
        results (Cached) however much of the index changed elsewhere. Default None: a shard's
        results are keyed by the whole index, so every shard applies a new index again."""
        return None

    @abstractmethod
    def apply(self, doc: Document, summary: dict[str, Any], decision: dict[str, Any]) -> Document:
        """Return the document with the decision applied."""


class RunInfo(BaseModel):
    """The run being published, as stores record it (`runs` tables)."""

    run_id: str = Field(default_factory=lambda: f"local-{uuid.uuid4().hex}")
    run_name: str = "local"
    config_digest: str = ""


class PublishReport(BaseModel):
    """What a sink wrote: files under the output folder (paths relative to it), per store the
    rows it `inserted`, `updated`, left `unchanged` and `deleted`, and for a shard written in
    blocks, the files of each block written."""

    files: list[str]
    changes: dict[str, dict[str, int]] = {}
    blocks: dict[int, list[str]] = {}


@dataclass(frozen=True)
class ShardInfo:
    """The shard a `publish_shard` call writes: shard `number` (a file keeps its shard from
    run to run; new files fill new shards), the `ids` of the records it gets, a `key` that
    changes whenever any record of the shard does, and `scratch`, a folder where the sink may
    leave work for `finish`.

    For a sink whose `SinkStep.blocks` splits shards, the shard's records fall into `blocks`
    blocks (`block_of`), and the call gets only the records of the blocks in `written` (in
    block order, by id within a block): the others are as the sink wrote them last time.
    `written` is None when the call gets every record of the shard."""

    number: int
    key: str
    ids: list[str]
    scratch: Path
    blocks: int = 1
    written: tuple[int, ...] | None = None


def block_of(doc_id: str, blocks: int) -> int:
    """The block of a shard that a record belongs to: by a hash of its id, so a record keeps
    its block while the shard gains and loses others."""
    return zlib.crc32(doc_id.encode()) % blocks if blocks > 1 else 0


@dataclass(frozen=True)
class FinishInfo:
    """What `finish` learns after every shard: the current shards, `published`, the reports of
    those written in this run (keyed by shard number; the others were unchanged and skipped),
    the number of records in skipped shards, every current record id, streamed, how many
    there are (`records`; None when unknown), and the finish's own `key` (for an external store
    to record; see `SinkStep.published_keys`)."""

    shards: list[int]
    keys: dict[int, str]
    published: dict[int, PublishReport]
    unchanged: int
    scratch: Path
    ids: Callable[[], Iterator[str]]
    records: int | None = None
    key: str = ""


FINISH_KEY_NAME = "finish"


def shard_key_name(number: int) -> str:
    """The name an external store records shard `number`'s publish key under."""
    return f"shard-{number}"


class SinkStep(Step):
    """The last step: writes every record, of every status, to its stores.

    A sink is either sharded, overriding `publish_shard` and `finish` (the built-in `publish`):
    the flow runs one `publish_shard` task per shard, in parallel, and skips a shard whose
    records and sink fingerprint are unchanged and whose files are intact; then one `finish`.
    Or it overrides only `publish`, and gets every record in one call, as before.
    """

    scope: ClassVar[Scope] = "sink"

    def accepts(self, doc: Document) -> bool:
        """Sinks publish every record, rejected and duplicate ones included."""
        return True

    def outputs_external(self) -> bool:
        """Whether it also writes outside `out_dir` (a database), where file stats can't tell
        that a publish is already done: the flow then skips a shard (or the finish) only when
        `published_keys` says the store holds it under its current key."""
        return False

    def published_keys(self) -> dict[str, str]:
        """For a sink with external outputs: the publish keys its store recorded, each written
        once what it stands for was complete there: `shard_key_name(n)` for shard n's
        `ShardInfo.key`, `FINISH_KEY_NAME` for `FinishInfo.key`. Default none: every shard of
        such a sink is published in every run."""
        return {}

    def blocks(self, records: int, previous: int | None) -> int:
        """How many blocks a shard of `records` records is written in (`previous`: the count its
        last publish used, None when unknown). With more than one, a changed shard's
        `publish_shard` gets only the records of its changed blocks and must keep what it wrote
        for the others. Default 1: every record of a changed shard, every time."""
        return 1

    @classmethod
    def sharded(cls) -> bool:
        """Whether this sink publishes shard by shard (it overrides `publish_shard`)."""
        return cls.publish_shard is not SinkStep.publish_shard

    def publish_shard(self, docs: Iterator[Document], shard: ShardInfo, out_dir: Path, run: RunInfo) -> PublishReport:
        """Write one shard's records (sorted by id), replacing what it wrote for this shard
        number before; report the files holding them. Shards run in parallel: write nothing
        that another shard writes too (leave shared work in `shard.scratch` for `finish`)."""
        raise NotImplementedError(f"{type(self).__name__} publishes the whole corpus at once (`publish`)")

    def finish(self, info: FinishInfo, out_dir: Path, run: RunInfo) -> PublishReport:
        """After every shard: shared stores, removal of shards that are gone, totals. Reports
        the files it wrote and the changes of the whole publish."""
        return PublishReport(files=[])

    def publish(self, docs: Iterator[Document], out_dir: Path, run: RunInfo | None = None) -> PublishReport:
        """Write `docs` (sorted by id) under `out_dir` and any other store; idempotent. The
        entry point of a sink that is not sharded; a sharded one implements it as one shard."""
        raise NotImplementedError(f"{type(self).__name__} implements neither publish nor publish_shard")
