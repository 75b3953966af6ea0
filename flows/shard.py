"""Run one stage of the pipeline over one shard: the per-document cache lives here.

Pure Python, no Prefect: the flow wraps these functions in tasks, and they run the same in a
thread, a process or a Dask worker. Arguments and results are references (ids and keys),
never document bodies; bodies travel through the Store.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from textmill.flows.config import InputSection, StepSpec
from textmill.flows.keys import chain, digest, digest_lines
from textmill.flows.progress import no_progress
from textmill.flows.report import CorpusStats, StatsCollector
from textmill.flows.store import Store, read_jsonl_gz, write_jsonl_gz
from textmill.tasks.atomic import sha256_file, write_atomic
from textmill.tasks.base import CorpusStep, DocumentStep, RunInfo, SinkStep, Step
from textmill.tasks.encoding import DETECTOR, DETECTOR_VERSION
from textmill.tasks.read import READER_VERSION, SourceFile, read_source
from textmill.tasks.registry import build_step, load_registry

BATCH = 64
# A new encoding detector may decode the same bytes differently, so its version keys the cache too.
READ_FINGERPRINT = f"read-v{READER_VERSION}-{DETECTOR}-{DETECTOR_VERSION}"

_steps: dict[str, Step] = {}
_steps_lock = threading.Lock()
_indexes: dict[str, dict[str, Any]] = {}
_indexes_lock = threading.Lock()

T = TypeVar("T")
Report = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class DocRef:
    """A document's latest result: where it is in the store and whether later steps work on it."""

    id: str
    key: str
    status: str

    @property
    def active(self) -> bool:
        return self.status == "ok"


@dataclass
class ShardResult:
    """What a shard task returns: references and counts, small enough to cache and pickle."""

    refs: list[DocRef]
    computed: int = 0
    cached: int = 0
    skipped: int = 0
    updated: int = 0
    bundle: str | None = None
    fresh: list[str] = field(default_factory=list)  # ids a corpus step summarized for the first time


@dataclass(frozen=True)
class Paths:
    """Where a run keeps its state; everything lives under the output folder."""

    corpus: str
    out: str

    @property
    def state(self) -> Path:
        return Path(self.out) / ".textmill"

    @property
    def store(self) -> Store:
        return Store(self.state / "store")

    @property
    def prefect_results(self) -> Path:
        return self.state / "prefect"

    @property
    def file_hashes(self) -> Path:
        """Discovery's cache of input files' stat and sha256 (`tasks/filehashes.py`)."""
        return self.state / "file-hashes.json"


def step_for(spec: StepSpec) -> Step:
    """The process-wide instance of a step, set up once (models load once per worker process)."""
    step = _steps.get(spec.fingerprint)
    if step is not None:
        return step
    with _steps_lock:
        step = _steps.get(spec.fingerprint)
        if step is None:
            step = build_step(spec.name, spec.options, load_registry(), Path(spec.config_dir))
            step.setup()
            _steps[spec.fingerprint] = step
    return step


def batched(items: list[T], size: int = BATCH) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def read_shard(paths: Paths, sources: list[SourceFile], settings: InputSection, report: Report = no_progress) -> ShardResult:
    """Read source files into raw documents, stored under `k_0` = their raw sha256.

    A file already read in an earlier run (same bytes, same reader, same `[input]`) is not read
    again: its list of documents is cached under the file's own hash. A raw document's key
    digests everything the reader decided (text, meta, status), not only the bytes.
    `report` hears of each file done.
    """
    store = paths.store
    result = ShardResult(refs=[])
    max_bytes, encodings = settings.max_bytes, tuple(settings.encodings)
    for src in sources:
        listing_key = chain(src.sha256, READ_FINGERPRINT, f"{src.id}\0{max_bytes}\0{','.join(encodings)}\0{src.error}")
        if store.has("listings", listing_key):
            refs = [DocRef(*row) for row in store.get("listings", listing_key)]
            result.cached += len(refs)
        else:
            refs = []
            for doc in read_source(Path(paths.corpus), src, max_bytes, encodings):
                key = chain(doc.sha256, READ_FINGERPRINT, digest(doc.to_dict()))
                store.put_doc(key, doc)
                refs.append(DocRef(doc.id, key, doc.status))
            store.put("listings", listing_key, [[r.id, r.key, r.status] for r in refs])
            result.computed += len(refs)
        result.refs.extend(refs)
        report(1)
    return result


def run_document_shard(paths: Paths, spec: StepSpec, refs: list[DocRef], report: Report = no_progress) -> ShardResult:
    """Apply a document-scope step to a shard, computing only documents not in the store;
    `report` hears of the documents found done at once, then of each computed batch."""
    store = paths.store
    step = step_for(spec)
    assert isinstance(step, DocumentStep)
    result = ShardResult(refs=[])
    missing: list[tuple[int, str, DocRef]] = []
    for ref in refs:
        if not ref.active:
            result.refs.append(ref)
            result.skipped += 1
            continue
        key = chain(ref.key, spec.fingerprint)
        if store.has("docs", key):
            result.refs.append(DocRef(ref.id, key, status_of(store, key)))
            result.cached += 1
        else:
            result.refs.append(ref)
            missing.append((len(result.refs) - 1, key, ref))
    report(len(refs) - len(missing))
    for batch in batched(missing):
        outputs = step.process([store.get_doc(ref.key) for _, _, ref in batch])
        if len(outputs) != len(batch):
            raise RuntimeError(f"step {spec.name!r} returned {len(outputs)} documents for {len(batch)}")
        for (slot, key, ref), doc in zip(batch, outputs):
            store.put_doc(key, doc)
            result.refs[slot] = DocRef(ref.id, key, doc.status)
            result.computed += 1
        report(len(batch))
    return result


def summarize_shard(paths: Paths, spec: StepSpec, refs: list[DocRef], report: Report = no_progress) -> ShardResult:
    """First phase of a corpus step: per-document summaries (cached), gathered in a shard bundle;
    `report` hears of the documents found done at once, then of each computed batch."""
    store = paths.store
    step = step_for(spec)
    assert isinstance(step, CorpusStep)
    result = ShardResult(refs=list(refs))
    rows: dict[str, tuple[str, Any]] = {}
    missing: list[tuple[str, DocRef]] = []
    for ref in refs:
        if not ref.active:
            result.skipped += 1
            continue
        skey = chain(ref.key, spec.fingerprint, "summary")
        if store.has("summaries", skey):
            rows[ref.id] = (skey, store.get("summaries", skey))
            result.cached += 1
        else:
            missing.append((skey, ref))
    report(len(refs) - len(missing))
    for batch in batched(missing):
        summaries = step.summarize([store.get_doc(ref.key) for _, ref in batch])
        for (skey, ref), summary in zip(batch, summaries, strict=True):
            store.put("summaries", skey, summary)
            rows[ref.id] = (skey, summary)
            result.computed += 1
            result.fresh.append(ref.id)
        report(len(batch))
    ordered = sorted(rows.items())
    bundle = paths.state / "bundles" / spec.name / f"{digest_lines(f'{i} {k}' for i, (k, _) in ordered)}.jsonl.gz"
    if not bundle.exists():
        write_jsonl_gz(bundle, ([doc_id, summary] for doc_id, (_, summary) in ordered))
    result.bundle = str(bundle)
    return result


def build_corpus_index(paths: Paths, spec: StepSpec, bundles: list[str], report: Report = no_progress) -> str:
    """Second phase of a corpus step: one index over every shard's summaries, saved as JSON;
    `report` hears of each summary as the index takes it in."""
    step = step_for(spec)
    assert isinstance(step, CorpusStep)
    name = digest_lines([spec.fingerprint, *sorted(bundles)])
    target = paths.state / "indexes" / spec.name / f"{name}.json.gz"
    if not target.exists():

        def pairs() -> Iterator[tuple[str, Any]]:
            for bundle in sorted(bundles):
                for doc_id, summary in read_jsonl_gz(Path(bundle)):
                    yield doc_id, summary
                    report(1)

        index = step.build_index(pairs())
        write_jsonl_gz(target, iter([index]))
    return str(target)


def load_index(path: str) -> dict[str, Any]:
    """An index file, parsed once per process (threads wait for the first parse)."""
    with _indexes_lock:
        index = _indexes.get(path)
        if index is None:
            index = next(read_jsonl_gz(Path(path)))
            _indexes.clear()
            _indexes[path] = index
    return index


def apply_shard(
    paths: Paths,
    spec: StepSpec,
    refs: list[DocRef],
    bundle: str,
    index_path: str,
    fresh: list[str] | None = None,
    report: Report = no_progress,
) -> ShardResult:
    """Third phase of a corpus step: apply each document's share of the index.

    A record written here for a document whose summary was already in the store counts as
    `updated`: this step had decided its unchanged input before, and a corpus-wide decision is
    new. For the documents in `fresh`, summarized for the first time in this run, the first
    decision is part of the work counted as `computed`. `report` hears of each batch done.
    """
    store = paths.store
    step = step_for(spec)
    assert isinstance(step, CorpusStep)
    index = load_index(index_path)
    summaries = dict(read_jsonl_gz(Path(bundle)))
    first_time = set(fresh or ())
    result = ShardResult(refs=[])
    for done, ref in enumerate(refs, 1):
        if ref.active:
            summary = summaries[ref.id]
            decision = step.decide(index, ref.id, summary)
            key = chain(ref.key, spec.fingerprint, digest(decision))
            if store.has("docs", key):
                status = status_of(store, key)
            else:
                doc = step.apply(store.get_doc(ref.key), summary, decision)
                store.put_doc(key, doc)
                status = doc.status
                if ref.id not in first_time:
                    result.updated += 1
            result.refs.append(DocRef(ref.id, key, status))
        else:
            result.refs.append(ref)
        if done % BATCH == 0 or done == len(refs):
            report(BATCH if done % BATCH == 0 else done % BATCH)
    return result


def status_of(store: Store, key: str) -> str:
    """The status of a stored document (cheap enough: records are small and compressed)."""
    return store.get("docs", key)["status"]


@dataclass
class PublishOutcome:
    """What the publish stage did: files written, or found already up to date."""

    files: list[str]
    stats: CorpusStats
    computed: int
    cached: int
    changes: dict[str, dict[str, int]] | None = None


def publish_corpus(
    paths: Paths, spec: StepSpec | None, refs: list[DocRef], run: RunInfo, report: Report = no_progress
) -> PublishOutcome:
    """Stream the final records, in id order, through the sink (if any) and gather statistics.

    When the same records were already published to the same files (unchanged on disk),
    nothing is rewritten and the stage counts every document as cached. A sink that also
    writes to a database always runs: only the database can tell what it holds, and its
    sink writes nothing that is already there. `report` hears of each batch of records read.
    """
    store = paths.store
    ordered = sorted(refs, key=lambda r: r.id)
    fingerprint = spec.fingerprint if spec else "no-sink"
    key = digest_lines([fingerprint, *(f"{r.id} {r.key}" for r in ordered)])
    state_path = paths.state / "published.json"
    out_dir = Path(paths.out)
    previous = json.loads(state_path.read_text()) if state_path.exists() else None
    sink = step_for(spec) if spec is not None else None
    external = isinstance(sink, SinkStep) and sink.outputs_external()
    if previous and previous["key"] == key and outputs_intact(out_dir, previous["files"]) and not external:
        return PublishOutcome(list(previous["files"]), CorpusStats(**previous["stats"]), 0, len(ordered))

    collector = StatsCollector()
    docs = collector.observe(reported((store.get_doc(r.key) for r in ordered), report))
    changes: dict[str, dict[str, int]] = {}
    if sink is None:
        for _ in docs:
            pass
        files: list[str] = []
    else:
        assert isinstance(sink, SinkStep)
        report = sink.publish(docs, out_dir, run)
        files, changes = report.files, report.changes
    stats = collector.result()
    hashes = {name: sha256_file(out_dir / name) for name in files}
    record = {"key": key, "files": hashes, "stats": asdict(stats)}
    write_atomic(state_path, json.dumps(record, indent=1).encode())
    return PublishOutcome(files, stats, len(ordered), 0, changes)


def reported(items: Iterator[T], report: Report) -> Iterator[T]:
    """Pass `items` through, reporting each batch of them as it goes by."""
    count = 0
    for count, item in enumerate(items, 1):
        yield item
        if count % BATCH == 0:
            report(BATCH)
    report(count % BATCH)


def outputs_intact(out_dir: Path, hashes: dict[str, str]) -> bool:
    """Whether every published file is still there with the bytes we wrote."""
    return all((out_dir / name).exists() and sha256_file(out_dir / name) == sha for name, sha in hashes.items())
