"""Run one stage of the pipeline over one shard: the per-document cache lives here.

Pure Python, no Prefect: the flow wraps these functions in tasks, and they run the same in a
thread, a process or a Dask worker. Arguments and results are references (ids and keys),
never document bodies; bodies travel through the Store. Between tasks, even the references
stay in the shard's pack: a task takes and returns a `RefList` (a key and a count), so the
flow holds a few numbers per shard whatever the corpus size.
"""
from __future__ import annotations

import heapq
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from textmill.flows.config import InputSection, StepSpec
from textmill.flows.keys import chain, digest, digest_lines
from textmill.flows.progress import no_progress
from textmill.flows.report import CorpusStats, StatsCollector
from textmill.flows.store import Packs, Store, read_jsonl_gz, write_jsonl_gz
from textmill.tasks.atomic import write_atomic
from textmill.tasks.base import (
    FINISH_KEY_NAME, CorpusStep, DocumentStep, FinishInfo, PublishReport, RunInfo, ShardInfo, SinkStep, Step, block_of,
    shard_key_name,
)
from textmill.tasks.bundle import read_summaries, write_bundle
from textmill.tasks.document import Document
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
_unloaded: dict[str, Step] = {}
# Part of every publish key: publish states of an earlier layout are published again.
PUBLISH_LAYOUT = "publish-3"
# Pack tables of a shard's reference lists and of its lists of ids summarized for the first time.
REFS_KIND = "reflists"
IDS_KIND = "idlists"
# Bundles are folders (summaries plus the step's spilled files); a new layout gets new names.
BUNDLE_LAYOUT = "bundle-v3"

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


@dataclass(frozen=True, slots=True)
class RefList:
    """A shard's references, stored in its pack under `key` (the digest of their lines, so equal
    lists share a key and a cache key can use it for the list)."""

    shard: int
    key: str
    count: int


@dataclass
class ShardResult:
    """What a shard function returns: the shard's references and counts."""

    refs: list[DocRef]
    computed: int = 0
    cached: int = 0
    skipped: int = 0
    updated: int = 0
    bundle: str | None = None
    fresh: list[str] = field(default_factory=list)  # ids a corpus step summarized for the first time


@dataclass
class ShardOutcome:
    """What a shard task returns: its `ShardResult` with the lists left in the shard's pack, a
    few hundred bytes to cache and pickle however large the shard."""

    refs: RefList
    computed: int = 0
    cached: int = 0
    skipped: int = 0
    updated: int = 0
    bundle: str | None = None
    fresh: str | None = None  # key of the ids a corpus step summarized for the first time (`IDS_KIND`)
    task_key: str | None = None  # the cache key of the task that computed this, under which its pack notes what it uses


@dataclass(frozen=True)
class Paths:
    """Where a run keeps its state; everything lives under the output folder.

    Inside a shard task (`in_pack`), `pack` is that shard's open pack.
    """

    corpus: str
    out: str
    pack: Store | None = field(default=None, compare=False, repr=False)

    @property
    def state(self) -> Path:
        return Path(self.out) / ".textmill"

    @property
    def store_root(self) -> Path:
        return self.state / "store"

    @property
    def store(self) -> Store:
        """The pack of the shard a task works on (see `in_pack`)."""
        if self.pack is None:
            raise RuntimeError("no shard pack is open: run shard functions through shard.in_pack")
        return self.pack

    @property
    def prefect_results(self) -> Path:
        return self.state / "prefect"

    @property
    def publish_state(self) -> Path:
        """Per shard, what its last publish wrote (`shard-N.json`); the last finish (`finished.json`)."""
        return self.state / "publish"

    @property
    def shard_map(self) -> Path:
        """Which shard each input file belongs to (`flows/assign.py`)."""
        return self.state / "shards.json"

    @property
    def file_hashes(self) -> Path:
        """Discovery's cache of input files' stat and sha256 (`tasks/filehashes.py`)."""
        return self.state / "file-hashes.json"


def in_pack(paths: Paths, shard_no: int, task_key: str, work: Callable[[Paths], ShardResult]) -> ShardOutcome:
    """Run `work` with shard `shard_no`'s pack open, keep its lists in the pack, then note under
    `task_key` which keys its result uses (garbage collection keeps them while a kept run names
    the task)."""
    with Store.open(paths.store_root, shard_no) as store:
        result = work(replace(paths, pack=store))
        refs = save_refs(store, shard_no, result.refs)
        fresh = None
        if result.fresh:
            fresh = digest_lines(result.fresh)
            store.put(IDS_KIND, fresh, result.fresh)
        store.record_uses(task_key, (r.key for r in result.refs))
    return ShardOutcome(
        refs, result.computed, result.cached, result.skipped, result.updated, result.bundle, fresh, task_key
    )


def save_refs(store: Store, shard_no: int, refs: list[DocRef]) -> RefList:
    """Store a shard's references in its pack; the handle tasks pass on instead of the list."""
    key = digest_lines(f"{r.id} {r.key} {r.status}" for r in refs)
    store.put(REFS_KIND, key, [[r.id, r.key, r.status] for r in refs])
    return RefList(shard_no, key, len(refs))


def load_refs(store: Store, refs: RefList) -> list[DocRef]:
    """The references a `RefList` stands for, from the shard's pack."""
    return [DocRef(*row) for row in store.get(REFS_KIND, refs.key)]


def load_ids(store: Store, key: str | None) -> list[str]:
    """A list of ids kept by `in_pack` (none for None)."""
    return [] if key is None else list(store.get(IDS_KIND, key))


def active_ids(paths: Paths, refs: RefList) -> list[str]:
    """The ids of a shard's active documents, read from its pack outside any task."""
    with Store.open(paths.store_root, refs.shard, track=False) as store:
        return [r.id for r in load_refs(store, refs) if r.active]


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


def summarize_shard(
    paths: Paths, spec: StepSpec, refs: list[DocRef], partitions: int = 1, report: Report = no_progress
) -> ShardResult:
    """First phase of a corpus step: per-document summaries (cached), gathered in a shard bundle
    (a folder named by their keys, with the step's spilled files for its partitioned index);
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
    name = digest_lines([BUNDLE_LAYOUT, str(partitions), *(f"{i} {k}" for i, (k, _) in ordered)])
    bundle = paths.state / "bundles" / spec.name / name
    write_bundle(bundle, [(doc_id, summary) for doc_id, (_, summary) in ordered], step, partitions)
    result.bundle = str(bundle)
    return result


def partition_count(spec: StepSpec, shards: int) -> int:
    """How many partitions a corpus step reduces the index of `shards` shards in, without
    loading its models."""
    step = unloaded_step(spec)
    assert isinstance(step, CorpusStep)
    return step.partitions(shards)


def unloaded_step(spec: StepSpec) -> Step:
    """The step built but not set up (no models): for what it computes from options alone."""
    step = _unloaded.get(spec.fingerprint)
    if step is None:
        step = build_step(spec.name, spec.options, load_registry(), Path(spec.config_dir))
        _unloaded[spec.fingerprint] = step
    return step


def reduce_partition(paths: Paths, spec: StepSpec, partition: int, bundles: list[str]) -> str:
    """Second phase of a corpus step, one partition: its partial index over every shard's bundle,
    saved as JSON. The partition's state folder (per step fingerprint) lets the step update
    what it kept from the last run with the bundles that changed."""
    step = step_for(spec)
    assert isinstance(step, CorpusStep)
    folders = sorted(Path(b) for b in bundles)
    folder = paths.state / "indexes" / spec.name
    names = [spec.fingerprint, step.index_layout, str(partition), *(f.name for f in folders)]
    target = folder / "partials" / f"{digest_lines(names)}.json.gz"
    if not target.exists():
        write_jsonl_gz(target, iter([step.reduce(partition, folders, partition_state(paths, spec, partition))]))
    return str(target)


def index_layout(spec: StepSpec) -> str:
    """The corpus step's `index_layout`, without loading its models."""
    step = unloaded_step(spec)
    assert isinstance(step, CorpusStep)
    return step.index_layout


def partition_state(paths: Paths, spec: StepSpec, partition: int) -> Path:
    """The folder a corpus step's partition keeps between runs of the same step fingerprint."""
    return paths.state / "indexes" / spec.name / "state" / spec.fingerprint[:32] / f"p{partition:04d}"


def combine_index(paths: Paths, spec: StepSpec, partials: list[str]) -> str:
    """Third phase of a corpus step: the index from every partition's partial, saved as JSON."""
    step = step_for(spec)
    assert isinstance(step, CorpusStep)
    target = paths.state / "indexes" / spec.name / f"{digest_lines([spec.fingerprint, *partials])}.json.gz"
    if not target.exists():
        index = step.combine(next(read_jsonl_gz(Path(p))) for p in partials)
        write_jsonl_gz(target, iter([index]))
    return str(target)


def decisions_keys(spec: StepSpec, index_path: str, paths: Paths, refs: dict[int, RefList]) -> dict[int, str]:
    """Per shard, the part of its apply task's cache key that stands for the index: the step's
    `decisions_key` of the shard's active ids (the index loaded here, once, without the step's
    models; the ids read from each pack in turn), or the index's path when the step has none."""
    step = unloaded_step(spec)
    assert isinstance(step, CorpusStep)
    if type(step).decisions_key is CorpusStep.decisions_key:
        return {n: index_path for n in refs}
    index = load_index(index_path)
    keys = {}
    for n, shard_refs in refs.items():
        key = step.decisions_key(index, active_ids(paths, shard_refs))
        keys[n] = index_path if key is None else f"decisions:{key}"
    return keys


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
    """Last phase of a corpus step: apply each document's share of the index.

    A record written here for a document whose summary was already in the store counts as
    `updated`: this step had decided its unchanged input before, and a corpus-wide decision is
    new. For the documents in `fresh`, summarized for the first time in this run, the first
    decision is part of the work counted as `computed`. `report` hears of each batch done.
    """
    store = paths.store
    step = step_for(spec)
    assert isinstance(step, CorpusStep)
    index = load_index(index_path)
    summaries = dict(read_summaries(Path(bundle)))
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
    """The status of a stored document (a column beside it: the document stays compressed)."""
    return store.status(key)


@dataclass
class PublishOutcome:
    """What the publish stage did: the outputs (top-level names), statistics, database changes."""

    files: list[str]
    stats: CorpusStats
    changes: dict[str, dict[str, int]] | None = None


def publish_key(spec: StepSpec | None, shard_no: int, refs: RefList) -> str:
    """Changes whenever the sink or any record of the shard does (not when other shards come
    or go: a shard's part files are its own); the references' key stands for its records."""
    fingerprint = spec.fingerprint if spec else "no-sink"
    return digest_lines([PUBLISH_LAYOUT, fingerprint, str(shard_no), refs.key])


def publish_forced(paths: Paths) -> bool:
    """Whether every shard must be published again: no publish finished here yet, or a file the
    last one finished (`textmill.sqlite`) was changed or removed since."""
    finished = read_state(paths.publish_state / "finished.json")
    return finished is None or not files_intact(Path(paths.out), finished["files"])


def external_sink(spec: StepSpec | None) -> SinkStep | None:
    """The sink of `spec` when it is sharded and also writes outside the output folder."""
    sink = step_for(spec) if spec is not None else None
    if isinstance(sink, SinkStep) and sink.sharded() and sink.outputs_external():
        return sink
    return None


def stale_in_store(spec: StepSpec | None, refs: dict[int, RefList]) -> set[int]:
    """Shards an external store (a database) does not hold as they are now: its recorded key
    for the shard differs from the shard's publish key. They must be published again even
    when the files say otherwise; one query per run."""
    sink = external_sink(spec)
    if sink is None:
        return set()
    recorded = sink.published_keys()
    return {n for n, shard_refs in refs.items() if recorded.get(shard_key_name(n)) != publish_key(spec, n, shard_refs)}


def publish_record_token(spec: StepSpec | None, shard_no: int, refs: RefList) -> str:
    """What a publish shard task's result is cached under once it has run: its publish key."""
    return publish_key(spec, shard_no, refs)


def publish_cache_token(paths: Paths, spec: StepSpec | None, shard_no: int, refs: RefList, force: bool) -> str | None:
    """What keys a publish shard task in Prefect's cache, so an unchanged shard shows as Cached:
    its publish key when the shard's last publish state has that key and its files are intact
    (or there is no state yet: a first publish); None, run it, otherwise: a changed shard (a
    result cached under its key may describe files since overwritten), or forced (which
    includes a shard an external store does not hold: `stale_in_store`)."""
    key = publish_record_token(spec, shard_no, refs)
    state = read_state(paths.publish_state / f"shard-{shard_no}.json")
    if state is None:
        return key
    if state["key"] == key and not force and files_intact(Path(paths.out), state["files"]):
        return key
    return None


def unpublished(paths: Paths, shards: list[int]) -> list[int]:
    """Shards without a publish state (removed by hand while Prefect's cache still held their
    task result): they must be published again."""
    return [n for n in shards if read_state(paths.publish_state / f"shard-{n}.json") is None]


def publish_shard(
    paths: Paths,
    spec: StepSpec | None,
    shard_no: int,
    refs: RefList,
    run: RunInfo,
    force: bool = False,
    report: Report = no_progress,
) -> ShardResult:
    """Publish one shard's final records through a sharded sink, and count its statistics.

    Skipped (every document `cached`) when the shard's records, the sink's fingerprint and the
    shard layout are those of its last publish and the files that publish wrote are unchanged
    on disk: a warm run reads no record. For a sink that also writes outside the output folder
    (a database), the flow passes `force` when that store does not hold the shard under its
    key (`stale_in_store`). Without a sink, or
    with one that publishes the whole corpus at once, only the statistics are gathered here.

    A sink that writes a large shard in blocks (`SinkStep.blocks`) gets only the records of the
    blocks that changed since its last publish (each block has a key of its records), when that
    publish's files are intact and nothing forces the whole shard; the statistics of the other
    blocks come from the state. Files of the last publish that no block writes any more (a new
    block count, a block left empty) are removed.
    The shard's state (`publish/shard-N.json`) is written last, once its outputs are complete;
    it names the shard's references by their key (the list stays in the pack).
    """
    key = publish_key(spec, shard_no, refs)
    state_path = paths.publish_state / f"shard-{shard_no}.json"
    out_dir = Path(paths.out)
    previous = read_state(state_path)
    sink = step_for(spec) if spec is not None else None
    sharded = isinstance(sink, SinkStep) and sink.sharded()
    intact = bool(previous) and files_intact(out_dir, previous["files"])
    if previous and previous["key"] == key and not force and intact:
        report(refs.count)
        return ShardResult(refs=[], cached=refs.count)

    store = paths.store
    ordered = sorted(load_refs(store, refs), key=lambda r: r.id)
    last = previous.get("blocks") if previous and intact and not force else None
    count = sink.blocks(len(ordered), last["count"] if last else None) if sharded else 1
    members: list[list[DocRef]] = [[] for _ in range(count)]
    for ref in ordered:
        members[block_of(ref.id, count)].append(ref)
    fingerprint = spec.fingerprint if spec else "no-sink"
    keys = [
        digest_lines([PUBLISH_LAYOUT, fingerprint, str(shard_no), f"{b}/{count}", *(f"{r.id} {r.key} {r.status}" for r in block)])
        for b, block in enumerate(members)
    ] if count > 1 else []
    kept = set()
    if keys and last is not None and last["count"] == count:
        kept = {b for b in range(count) if last["keys"][b] == keys[b]}
    written = [b for b in range(count) if b not in kept]
    unchanged = sum(len(members[b]) for b in kept)
    report(unchanged)
    collectors = {b: StatsCollector() for b in written}

    def records() -> Iterator[Document]:
        for b in written:
            yield from collectors[b].observe(store.get_doc(r.key) for r in members[b])

    docs = reported(records(), report)
    block_files: dict[int, list[str]] = {b: last["files"][b] for b in kept} if last else {}
    changes: dict[str, dict[str, int]] = {}
    if sharded:
        assert isinstance(sink, SinkStep)
        shard_info = ShardInfo(
            shard_no, key, [r.id for b in written for r in members[b]], paths.publish_state / "pending",
            blocks=count, written=tuple(written) if count > 1 else None,
        )
        shard_info.scratch.mkdir(parents=True, exist_ok=True)
        published = sink.publish_shard(docs, shard_info, out_dir, run)
        changes = published.changes
        for b in written:
            block_files[b] = published.blocks.get(b, []) if count > 1 else published.files
    for _ in docs:  # whatever the sink did not read still counts in the statistics
        pass
    for counts in changes.values():
        counts["unchanged"] = counts.get("unchanged", 0) + unchanged
    files = sorted({name for b in range(count) for name in block_files.get(b, [])})
    remove_unwritten(out_dir, previous["files"] if previous else {}, files)
    stats = {b: last["stats"][b] for b in kept} if last else {}
    stats.update({b: collectors[b].partial() for b in written})
    state = {
        "key": key,
        "run_id": run.run_id,
        "refs": refs.key,
        "count": refs.count,
        "files": file_stats(out_dir, files),
        "changes": changes,
        "stats": StatsCollector.merged(stats[b] for b in range(count)).partial(),
    }
    if count > 1:
        state["blocks"] = {
            "count": count,
            "keys": keys,
            "files": [block_files.get(b, []) for b in range(count)],
            "stats": [stats[b] for b in range(count)],
        }
    write_atomic(state_path, json.dumps(state, separators=(",", ":")).encode())
    return ShardResult(refs=[], computed=len(ordered) - unchanged, cached=unchanged)


def remove_unwritten(out_dir: Path, before: dict[str, Any], now: list[str]) -> None:
    """Delete the files a shard's last publish wrote that this one did not, in the folders it
    wrote to (a part of a block count no longer used, of a block left empty); the parts of a
    file format no longer configured stay, as they do for every shard."""
    folders = {Path(name).parent for name in now}
    for name in set(before) - set(now):
        if Path(name).parent in folders:
            (out_dir / name).unlink(missing_ok=True)


def finish_publish(
    paths: Paths, spec: StepSpec | None, shards: list[int], run: RunInfo, report: Report = no_progress
) -> PublishOutcome:
    """After every shard: the sink's `finish` (or, for a sink that publishes the whole corpus at
    once, its `publish` over every record in id order), the merged statistics, and the state.

    When no shard was published in this run, the shard layout is the same and the files the
    last finish wrote are intact (and an external store recorded this finish's key), nothing is
    done: the statistics come from the last finish.
    States of shards that no longer exist are removed after the sink removed their outputs.
    """
    out_dir = Path(paths.out)
    states = {n: read_state(paths.publish_state / f"shard-{n}.json") for n in shards}
    missing = [n for n, state in states.items() if state is None]
    if missing:
        raise RuntimeError(f"publish: shards {missing} have no published state; run again")
    current = {n: state for n, state in states.items() if state is not None}
    fingerprint = spec.fingerprint if spec else "no-sink"
    key = digest_lines([fingerprint, *(f"{n} {current[n]['key']}" for n in shards)])
    finished_path = paths.publish_state / "finished.json"
    finished = read_state(finished_path)
    sink = step_for(spec) if spec is not None else None
    external = external_sink(spec)
    published = {n: state for n, state in current.items() if state["run_id"] == run.run_id}
    shard_files = sorted({name for state in current.values() for name in state["files"]})
    scratch = paths.publish_state / "pending"
    pending = scratch.is_dir() and any(scratch.iterdir())
    unchanged = finished and finished["key"] == key and not published and not pending
    if unchanged and external is not None:
        unchanged = external.published_keys().get(FINISH_KEY_NAME) == key
    if unchanged and files_intact(out_dir, finished["files"]):
        total = sum(state["count"] for state in current.values())
        report(total)
        same = {store: {"inserted": 0, "updated": 0, "unchanged": total, "deleted": 0} for store in finished["stores"]}
        return PublishOutcome(outputs(shard_files + list(finished["files"])), CorpusStats(**finished["stats"]), same)

    def ids() -> Iterator[str]:
        with Packs(paths.store_root) as packs:
            for n in shards:
                for ref in published_refs(packs, n, current[n]):
                    yield ref.id

    stats = StatsCollector.merged(state["stats"] for state in current.values()).result()
    changes: dict[str, dict[str, int]] = {}
    files: list[str] = []
    if isinstance(sink, SinkStep) and sink.sharded():
        info = FinishInfo(
            shards=list(shards),
            keys={n: current[n]["key"] for n in shards},
            published={n: PublishReport(files=list(s["files"]), changes=s["changes"]) for n, s in published.items()},
            unchanged=sum(s["count"] for n, s in current.items() if n not in published),
            scratch=scratch,
            ids=ids,
            records=sum(state["count"] for state in current.values()),
            key=key,
        )
        done = sink.finish(info, out_dir, run)
        files, changes = done.files, done.changes
    elif isinstance(sink, SinkStep):
        with Packs(paths.store_root) as packs:
            everything = heapq.merge(*(located(n, published_refs(packs, n, current[n])) for n in shards))
            docs = (packs.get_doc(n, doc_key) for _, n, doc_key in everything)
            done = sink.publish(reported(docs, report), out_dir, run)
        files, changes = done.files, done.changes
    if scratch.is_dir():  # work the shards left for this finish: done, or stale
        for path in scratch.iterdir():
            path.unlink(missing_ok=True)
    for path in paths.publish_state.glob("shard-*.json"):
        if int(path.stem.removeprefix("shard-")) not in current:
            path.unlink(missing_ok=True)
    record = {"key": key, "files": file_stats(out_dir, files), "stats": asdict(stats), "stores": sorted(changes)}
    write_atomic(finished_path, json.dumps(record, indent=1).encode())
    return PublishOutcome(outputs(shard_files + files), stats, changes)


def published_refs(packs: Packs, shard_no: int, state: dict[str, Any]) -> list[DocRef]:
    """The references a shard's publish state names, in id order, from its pack."""
    refs = RefList(shard_no, state["refs"], state["count"])
    return sorted(load_refs(packs.store(shard_no), refs), key=lambda r: r.id)


def located(shard_no: int, refs: list[DocRef]) -> Iterator[tuple[str, int, str]]:
    """A shard's references as `(id, shard, key)`: merged over shards, each names its pack."""
    for ref in refs:
        yield ref.id, shard_no, ref.key


def read_state(path: Path) -> dict[str, Any] | None:
    """A publish state file; None when missing or unreadable (then the work is done again)."""
    try:
        state = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def file_stats(out_dir: Path, names: list[str]) -> dict[str, list[int]]:
    """Size, mtime and inode of each file: enough to notice that it was changed or replaced."""
    stats = {}
    for name in names:
        st = (out_dir / name).stat()
        stats[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return stats


def files_intact(out_dir: Path, stats: dict[str, list[int]]) -> bool:
    """Whether every file is still there as it was written (same size, mtime and inode)."""
    for name, recorded in stats.items():
        try:
            st = (out_dir / name).stat()
        except OSError:
            return False
        if [st.st_size, st.st_mtime_ns, st.st_ino] != recorded:
            return False
    return True


def outputs(files: list[str]) -> list[str]:
    """Output names for the manifest: a file, or a part folder once (`documents/`)."""
    names: dict[str, None] = {}
    for name in files:
        folder, _, rest = name.partition("/")
        names[f"{folder}/" if rest else folder] = None
    return list(names)


def reported(items: Iterator[T], report: Report) -> Iterator[T]:
    """Pass `items` through, reporting each batch of them as it goes by."""
    count = 0
    for count, item in enumerate(items, 1):
        yield item
        if count % BATCH == 0:
            report(BATCH)
    report(count % BATCH)
