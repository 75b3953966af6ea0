"""The Prefect flow: discover, shard, run each configured step, publish, report.

Thin by design: the work is in `flows/shard.py` (pure Python) and `tasks/` (the steps).
Here we only decide what runs where, with which cache key and retry policy, and we always
resolve every future so that a failed shard fails the run.
"""
from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.context import TaskRunContext
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote

from textmill.flows import shard
from textmill.flows.assign import ShardMap
from textmill.flows.config import (
    InputSection,
    PipelineConfig,
    RunSection,
    StepSpec,
    check_run_paths,
    load_config,
    publish_to_postgres,
)
from textmill.flows.gc import GcReport, RunRecord, collect_garbage, store_size, write_run_record
from textmill.flows.keys import digest, digest_lines
from textmill.flows.lock import output_folder_lock
from textmill.flows.progress import listener, shard_done, shard_progress
from textmill.flows.report import StageStats, build_manifest, steps_table, summary_markdown, write_manifest
from textmill.flows.retry import retry_transient
from textmill.flows.runners import (
    DEFAULT_RUNNER,
    default_workers,
    in_this_process,
    make_task_runner,
    run_in_process,
    runner_workers,
    tag_steps,
    whole,
)
from textmill.flows.scan import scan_corpus, take_scan
from textmill.flows.shard import Paths, RefList, ShardOutcome
from textmill.flows.store import LAYOUT as STORE_LAYOUT
from textmill.tasks.base import RunInfo
from textmill.tasks.read import DiscoveryReport, SourceFile


# Shortest interval between two updates of the run's progress artifact.
PROGRESS_ARTIFACT_SECONDS = 2.0
# Longest wait at the end of a run for the progress artifact's last update.
PROGRESS_ARTIFACT_CLOSE_SECONDS = 30.0
# Partition tasks per worker of a corpus step's index: each task reduces a group of partitions
# in turn. Enough groups to keep every worker busy to the end; few enough that Prefect's cost
# per task run (a task run to create, states to set, a result to persist or read back: tens of
# ms each) does not add up over 64 partitions.
PARTITION_GROUPS_PER_WORKER = 4

# Parameters not part of a task's cache key: `fresh` only shapes a task's counts, and an apply
# task's `index` is stood for by its `decisions` (`shard.decisions_keys`).
UNKEYED_PARAMETERS = frozenset({"fresh", "index"})


def cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Key a shard task by what determines its output: step fingerprint and member keys (and
    the layouts of the store and of bundles, which its result refers into).

    Document bodies never pass through here, nor lists of references: a `RefList` is keyed by
    its own key (the digest of its lines); a shard's source files are digested line by line.
    """
    parts = [context.task.name, STORE_LAYOUT, shard.BUNDLE_LAYOUT]
    for name in sorted(parameters):
        if name in UNKEYED_PARAMETERS:
            continue
        value = unquoted(parameters[name])
        if isinstance(value, RefList):
            parts.append(value.key)
        elif isinstance(value, list) and value and isinstance(value[0], SourceFile):
            parts.append(digest_lines(f"{s.id} {s.sha256} {s.size}" for s in value))
        elif isinstance(value, StepSpec):
            parts.append(value.fingerprint)
        else:
            parts.append(digest(value))
    return digest(parts)


def publish_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """Key a publish shard task by its publish key, so an unchanged shard shows as Cached; None
    (not cached) when it must run (see `shard.publish_cache_token`)."""
    if parameters["repair"]:
        return None
    token = shard.publish_cache_token(
        parameters["paths"], parameters["step"], parameters["shard_no"], parameters["refs"], parameters["force"]
    )
    return None if token is None else digest([context.task.name, token])


def republish_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Key a publish shard task that must run (a changed, forced or damaged shard) by the
    publish key its shard has once written, so the next run finds it Cached; the task runs with
    `refresh_cache`, replacing whatever an earlier run cached under that key."""
    return digest([context.task.name, shard.publish_record_token(parameters["step"], parameters["shard_no"], parameters["refs"])])


def unquoted(value: Any) -> Any:
    """A parameter as the task receives it: lists passed `whole` are still wrapped when the
    runner computes the key before submitting (`runners.served_from_cache`)."""
    return value.unwrap() if isinstance(value, quote) else value


def current_task_key() -> str:
    """The running task's cache key, under which its pack notes the keys it uses (for gc)."""
    context = TaskRunContext.get()
    assert context is not None, "only inside a task run"
    return cache_key(context, context.parameters)


def result_key(future: PrefectFuture) -> str | None:
    """The name of the Prefect result file a cached task's result lives in, when there is one."""
    data = getattr(future.state, "data", None)
    key = getattr(getattr(data, "metadata", None), "storage_key", None)
    return Path(key).name if key else None


@task(name="discover", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_transient)
def discover_sources(corpus: str, out: str) -> tuple[list[SourceFile], DiscoveryReport]:
    """Find every input file, hashing only those whose stat changed since the last scan (the
    cache is saved once the whole scan succeeded), or take the scan an ad hoc run made while
    its server started (`flows/scan.py`); the report says which folders and links were passed
    over, and how many files were read to hash them."""
    cache_path = Paths(corpus=corpus, out=out).file_hashes
    found = take_scan(corpus, out) or scan_corpus(corpus, out, cache_path)
    found.hashes.save(cache_path)
    report = found.report
    logger = get_run_logger()
    logger.info(
        "discover: %s files hashed, %s unchanged since the last scan%s", report.hashed, report.unchanged,
        " (scanned while the Prefect server started)" if found.ahead else "",
    )
    for folder in report.output_folders:
        logger.warning("skipped %s: a textmill output folder (it holds .textmill/), never read as input", folder)
    if report.aliases:
        logger.info("%s links to files or folders read under their own path", report.aliases)
    return found.sources, report


@task(name="read")
def read_task(paths: Paths, shard_no: int, sources: list[SourceFile], settings: InputSection, reader: str) -> ShardOutcome:
    """Read one shard's files into raw documents (`reader`, the reader's fingerprint, keys the cache)."""
    report = shard_progress("read", shard_no)
    result = shard.in_pack(paths, shard_no, current_task_key(), lambda p: shard.read_shard(p, sources, settings, report))
    return log_shard("read", shard_no, result)


@task(name="document-step")
def document_task(paths: Paths, step: StepSpec, shard_no: int, refs: RefList) -> ShardOutcome:
    """Run a document-scope step over one shard."""
    report = shard_progress(step.name, shard_no)
    result = shard.in_pack(
        paths, shard_no, current_task_key(),
        lambda p: shard.run_document_shard(p, step, shard.load_refs(p.store, refs), report),
    )
    return log_shard(step.name, shard_no, result)


@task(name="summarize")
def summarize_task(paths: Paths, step: StepSpec, shard_no: int, refs: RefList, partitions: int) -> ShardOutcome:
    """Per-document summaries for a corpus-scope step, over one shard, spilled for `partitions`."""
    report = shard_progress(step.name, shard_no)
    result = shard.in_pack(
        paths, shard_no, current_task_key(),
        lambda p: shard.summarize_shard(p, step, shard.load_refs(p.store, refs), partitions, report),
    )
    return log_shard(step.name, shard_no, result)


@task(name="partition")
def partition_task(paths: Paths, step: StepSpec, partitions: list[int], bundles: list[str], layout: str) -> list[str]:
    """Reduce a group of partitions of a corpus-scope step's index, one after the other, over
    every shard's bundle; their partials' paths, in the order of `partitions`. `layout` (the
    step's `index_layout`) is here for the cache key: a new layout reduces again."""
    return [shard.reduce_partition(paths, step, partition, bundles) for partition in partitions]


@task(name="index")
def index_task(paths: Paths, step: StepSpec, partials: list[str]) -> str:
    """Combine a corpus-scope step's partition partials into its index."""
    return shard.combine_index(paths, step, partials)


@task(name="apply")
def apply_task(
    paths: Paths,
    step: StepSpec,
    shard_no: int,
    refs: RefList,
    bundle: str,
    index: str,
    decisions: str,
    fresh: str | None,
) -> ShardOutcome:
    """Apply a corpus-scope step's index to one shard (`decisions`: the key of its decisions for
    this shard; `fresh`: the key of the ids summarized this run, for the counts)."""
    report = shard_progress(f"{step.name}:apply", shard_no)
    return shard.in_pack(
        paths, shard_no, current_task_key(),
        lambda p: shard.apply_shard(
            p, step, shard.load_refs(p.store, refs), bundle, index, shard.load_ids(p.store, fresh), report
        ),
    )


@task(name="publish-shard")
def publish_shard_task(
    paths: Paths,
    step: StepSpec | None,
    shard_no: int,
    refs: RefList,
    run: RunInfo,
    force: bool,
    repair: bool = False,
) -> ShardOutcome:
    """Publish one shard's final records (skipped when they and its files are unchanged);
    `force` and `repair` write it in any case, `repair` also bypassing Prefect's cache."""
    report = shard_progress("publish", shard_no)
    result = shard.in_pack(
        paths, shard_no, current_task_key(),
        lambda p: shard.publish_shard(p, step, shard_no, refs, run, force or repair, report),
    )
    get_run_logger().info(
        "publish-%s: %s", shard_no, f"{result.computed} documents written" if result.computed else "unchanged"
    )
    return result


@task(name="publish")
def finish_publish_task(paths: Paths, step: StepSpec | None, shards: list[int], run: RunInfo) -> shard.PublishOutcome:
    """After every shard: shared stores, outputs of removed shards, statistics."""
    outcome = shard.finish_publish(paths, step, shards, run)
    logger = get_run_logger()
    logger.info("publish: %s", ", ".join(outcome.files) or "no files")
    for store, counts in (outcome.changes or {}).items():
        logger.info("publish to %s: %s", store, ", ".join(f"{v} {k}" for k, v in counts.items()))
    return outcome


@task(name="gc")
def gc_task(paths: Paths, keep: int) -> GcReport:
    """Remove from the output's state what none of the last `keep` recorded runs uses."""
    report = collect_garbage(paths.state, keep)
    get_run_logger().info("gc: %s", report.summary())
    return report


FAILED_IN = "textmill_failed_in"


def mark_failure(exc: BaseException, where: str) -> BaseException:
    """Note on `exc` which part of the run failed, for a one-line message (`failed_in`); the
    exception keeps its type and message, which Prefect records as the run's cause."""
    if getattr(exc, FAILED_IN, None) is None:
        try:
            setattr(exc, FAILED_IN, where)
        except AttributeError:
            pass
    return exc


def failed_in(exc: BaseException) -> str | None:
    """Which part of the run raised `exc` ("entities failed on shard 3"), when the flow knows."""
    return getattr(exc, FAILED_IN, None)


@contextmanager
def failing_as(where: str) -> Iterator[None]:
    """Mark any exception raised inside with `where` (see `mark_failure`)."""
    try:
        yield
    except Exception as exc:
        mark_failure(exc, where)
        raise


def log_shard(stage: str, shard_no: int, result: ShardOutcome) -> ShardOutcome:
    get_run_logger().info(
        "%s-%s: %s computed, %s cached, %s skipped", stage, shard_no, result.computed, result.cached, result.skipped
    )
    return result


def run_name() -> str:
    """Flow runs are named after the corpus folder, so the UI shows what each run processed."""
    corpus = flow_run.parameters.get("corpus", "corpus")
    return f"textmill-{Path(corpus).resolve().name}"


class ProgressArtifact:
    """The run's `textmill-progress` artifact, updated from a thread of its own: an update is an
    API call (up to a few hundred ms on a busy SQLite-backed server) the flow need not wait for.
    Only the newest value is sent; `close` sends the last one before the run goes on."""

    def __init__(self, artifact_id: UUID) -> None:
        self.artifact_id = artifact_id
        self._pending: tuple[float, str] | None = None
        self._closed = False
        self._changed = threading.Condition()
        context = contextvars.copy_context()  # the flow's settings and API client
        self._thread = threading.Thread(
            target=context.run, args=(self._send,), name="textmill-progress-artifact", daemon=True
        )
        self._thread.start()

    def show(self, progress: float, description: str) -> None:
        with self._changed:
            self._pending = (progress, description)
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join(timeout=PROGRESS_ARTIFACT_CLOSE_SECONDS)

    def _send(self) -> None:
        while True:
            with self._changed:
                while self._pending is None and not self._closed:
                    self._changed.wait()
                pending, self._pending, closed = self._pending, None, self._closed
            if pending is not None:
                try:
                    update_progress_artifact(self.artifact_id, progress=pending[0], description=pending[1])
                except Exception as exc:  # noqa: BLE001 - a progress display never fails the run
                    logging.getLogger("textmill").warning("progress artifact not updated: %s", exc)
            if closed:
                return


@dataclass
class Runner:
    """Submits a stage's shard tasks with the run's cache and retry policy, and gathers them."""

    paths: Paths
    settings: RunSection
    stages: dict[str, StageStats]
    record: RunRecord
    tag_steps: bool = False
    progress_artifact: ProgressArtifact | None = None
    expected_tasks: int = 0
    finished_tasks: int = 0
    progress_shown_at: float = 0.0
    weights: dict[int, int] = field(default_factory=dict)
    changed: dict[int, float] = field(default_factory=dict)

    def track(self, expected_tasks: int) -> None:
        """Create the run's progress artifact: the share of its shard tasks that have finished."""
        self.expected_tasks = expected_tasks
        self.progress_artifact = ProgressArtifact(
            create_progress_artifact(progress=0.0, key="textmill-progress", description="Shard tasks finished")
        )

    def close(self) -> None:
        """Send the progress artifact's last value."""
        if self.progress_artifact is not None:
            self.progress_artifact.close()

    def remember(self, future: PrefectFuture, produced: str | None = None) -> None:
        """Note in the run record a finished task's result file and a file it produced, for gc."""
        key = result_key(future)
        if key:
            self.record.add_result(key)
        if produced:
            self.record.add_artifact(self.paths.state, produced)

    def task_finished(self, stage: str) -> None:
        """Count a finished shard task; the artifact is updated at most every
        `PROGRESS_ARTIFACT_SECONDS` (each update is an API call: per task, they were most of a
        warm run's time) and when the last expected task finishes."""
        self.finished_tasks += 1
        if self.progress_artifact is None or not self.expected_tasks:
            return
        now = time.monotonic()
        if self.finished_tasks < self.expected_tasks and now - self.progress_shown_at < PROGRESS_ARTIFACT_SECONDS:
            return
        self.progress_shown_at = now
        self.progress_artifact.show(
            min(100.0, 100.0 * self.finished_tasks / self.expected_tasks),
            f"{self.finished_tasks} of {self.expected_tasks} shard tasks finished (last: {stage})",
        )

    def configure(self, fn: Any, name: str, step: str, cached: bool = True, key: Callable[..., str | None] | None = None) -> Any:
        """`fn` with the run's retry policy, the step's tag and, when `cached`, the shard cache.

        Tags only on a server someone watches: Prefect checks every task run's tags against
        concurrency limits, and on a SQLite-backed server (the temporary one of an ad hoc run)
        that check waits about 2 s for the database lock for each new tag
        (docs/operations.md, "Tags per step").
        """
        options: dict[str, Any] = {
            "task_run_name": name,
            "retries": self.settings.retries,
            "retry_delay_seconds": exponential_backoff(backoff_factor=self.settings.retry_delay_seconds),
            "retry_jitter_factor": self.settings.retry_jitter_factor,
            "retry_condition_fn": retry_transient,
        }
        if self.tag_steps:
            options["tags"] = [step]
        if cached:
            options.update(
                cache_policy=CacheKeyFnPolicy(cache_key_fn=key or cache_key),
                result_storage=self.paths.prefect_results,
                persist_result=True,
            )
        return fn.with_options(**options)

    @contextmanager
    def phase(self, stage: str, total: int, where: str) -> Iterator[None]:
        """A one-task stage (an index, publish): its own progress bar of `total` documents,
        `where` on its failure, and its task in this process (`in_this_process`)."""
        progress = listener()
        progress.start(stage, total)
        try:
            with failing_as(where), in_this_process():
                yield
        except Exception:
            progress.finish(stage, failed=True)
            raise
        shard_done(stage, 0, total)
        progress.finish(stage)

    def heaviest_first(self, shards: Sequence[int], whole_shards: bool = False) -> list[int]:
        """`shards` in the order their tasks are submitted, most work first, so the last tasks
        a worker takes are short ones and the workers finish together.

        A shard's work is the bytes of its input files times the share of its documents the
        previous stage changed (all of them before the first stage), or all its bytes once
        any document changed for a stage that rewrites `whole_shards` (publish). On BBC's cold
        run that is the bytes, 0.67 to 1.11 MB a shard (in shard order one worker idled for
        5 s at the end of the entities stage). In a run that adds 1% to 100,000 documents, it
        puts the two new shards before an old one with a single changed duplicate decision
        (first by bytes, a worker spent its language model load on that one document while a
        new shard waited). Shards the previous stage left unchanged follow by bytes."""

        def work(n: int) -> float:
            share = self.changed.get(n, 1.0)
            return self.weights.get(n, 0) * (float(share > 0) if whole_shards else share)

        return sorted(shards, key=lambda n: (-work(n), -self.weights.get(n, 0), n))

    def note_changed(self, shard_no: int, changed: int, documents: int) -> None:
        """Note how many of a shard's documents the stage just run changed (`heaviest_first`)."""
        self.changed[shard_no] = min(1.0, changed / max(1, documents))

    def map_shards(
        self,
        stage: str,
        submit: Callable[[int], PrefectFuture],
        shards: Sequence[int],
        sizes: dict[int, int],
        whole_shards: bool = False,
    ) -> dict[int, ShardOutcome]:
        """Submit one task per shard (`heaviest_first`), resolve every future, then fail with
        the first failure.

        Progress: the shard functions report their batches themselves (from a worker process
        through `textmill.flows.progress`); `shard_done` reports the rest when each task finishes.
        """
        progress = listener()
        progress.start(stage, sum(sizes.values()))
        started = time.perf_counter()
        futures = {submit(n): n for n in self.heaviest_first(shards, whole_shards)}
        results: dict[int, ShardOutcome] = {}
        failures: list[tuple[int, BaseException]] = []
        for future in as_completed(list(futures)):
            n = futures[future]
            try:
                result = future.result()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - gather all, then fail the run
                failures.append((n, exc))
                continue
            if future.state.name == "Cached":
                result = replace(result, computed=0, updated=0, cached=result.computed + result.cached, fresh=None)
            if result.task_key:
                self.record.add_task(n, result.task_key)
            self.remember(future, result.bundle)
            self.note_changed(n, result.computed + result.updated, result.refs.count)
            results[n] = result
            shard_done(stage, n, sizes[n])
            self.task_finished(stage)
        progress.finish(stage, failed=bool(failures))
        if failures:
            n, exc = min(failures, key=lambda failure: failure[0])
            raise mark_failure(exc, f"{stage.split(':')[0]} failed on shard {n}")
        stats = self.stages.setdefault(stage, StageStats())
        stats.computed += sum(r.computed for r in results.values())
        stats.cached += sum(r.cached for r in results.values())
        stats.skipped += sum(r.skipped for r in results.values())
        stats.updated += sum(r.updated for r in results.values())
        stats.seconds += time.perf_counter() - started
        return results


@flow(name="textmill", flow_run_name=run_name, task_runner=make_task_runner(DEFAULT_RUNNER))
def textmill(corpus: str, out: str = "out", config: str | None = None, publish: str | None = None) -> dict[str, Any]:
    """Run the configured pipeline over `corpus`, publishing into `out` (and, when `publish` is a
    PostgreSQL DSN without a password, into that database too); returns the manifest.

    Paths and config are checked before any work, here as well as in the CLI, so a deployment
    with an unset path fails instead of processing its working folder; the run holds the
    output folder's lock throughout, so two runs never write into one output folder at once.
    """
    corpus_dir, out_dir = check_run_paths(corpus, out)
    cfg: PipelineConfig = load_config(config)
    if publish:
        cfg = publish_to_postgres(cfg, publish)
    with output_folder_lock(out_dir, cfg.run.lock_timeout):
        return run_pipeline(cfg, Paths(corpus=str(corpus_dir), out=str(out_dir)), corpus)


def run_pipeline(cfg: PipelineConfig, paths: Paths, corpus: str) -> dict[str, Any]:
    """The run itself: discover, read, each step, publish, report."""
    logger = get_run_logger()

    with failing_as("discover failed"):
        sources, discovery = discover_sources(paths.corpus, paths.out)
    shard_map = ShardMap.load(paths.shard_map)
    members = shard_map.assign(
        sources, cfg.run.shard_size, cfg.run.max_shards, runner_workers(cfg.run.workers or default_workers(cfg.run.runner))
    )
    shard_map.save(paths.shard_map)
    runner = Runner(
        paths, cfg.run, {}, RunRecord(run_id=str(flow_run.id)), tag_steps=tag_steps(),
        weights={n: sum(src.size for src in files) for n, files in members.items()},
    )
    try:
        shards = list(members)
        run_in_process(len(shards))
        runner.track(len(shards) * (2 + sum({"document": 1, "corpus": 2}.get(s.scope, 0) for s in cfg.steps)))
        logger.info("%s files in %s shards; steps: %s", len(sources), len(shards), ", ".join(s.name for s in cfg.steps))

        read = runner.configure(read_task, "read-{shard_no}", "read")
        results = runner.map_shards(
            "read",
            lambda n: read.submit(paths, n, whole(members[n]), cfg.input, shard.READ_FINGERPRINT),
            shards,
            {n: len(members[n]) for n in shards},
        )
        refs = {n: r.refs for n, r in results.items()}

        sink: StepSpec | None = None
        for step in cfg.steps:
            sizes = {n: refs[n].count for n in shards}
            if step.scope == "document":
                doc_task = runner.configure(document_task, f"{step.name}-{{shard_no}}", step.name)
                results = runner.map_shards(step.name, lambda n: doc_task.submit(paths, step, n, refs[n]), shards, sizes)
            elif step.scope == "corpus":
                results = run_corpus_step(runner, step, shards, refs, sizes)
            else:
                sink = step
                continue
            refs = {n: r.refs for n, r in results.items()}
            totals = runner.stages[step.name]
            logger.info("%s: %s computed, %s cached, %s skipped", step.name, totals.computed, totals.cached, totals.skipped)

        run_info = RunInfo(run_id=str(flow_run.id), run_name=flow_run.name or run_name(), config_digest=cfg.digest)
        outcome = publish_shards(runner, sink, shards, refs, run_info)
        if sink is None:
            runner.stages.pop("publish", None)
        with failing_as("gc failed"), in_this_process():
            gc = runner.configure(gc_task, "gc", "gc", cached=False)
            write_run_record(paths.state, runner.record)
            gc.submit(paths, cfg.run.keep_runs).result()
        manifest = build_manifest(
            run_id=str(flow_run.id),
            run_name=flow_run.name or run_name(),
            corpus=corpus,
            config_path=str(cfg.path),
            config_digest=cfg.digest,
            files=len(sources),
            step_versions={s.name: s.version for s in cfg.steps},
            stages=runner.stages,
            stats=outcome.stats,
            outputs=[*outcome.files, "manifest.json"],
            published=outcome.changes,
            skipped_output_folders=discovery.output_folders,
            skipped_links=discovery.aliases,
            hashed_files={"hashed": discovery.hashed, "unchanged": discovery.unchanged},
            store=asdict(store_size(paths.state)),
        )
        write_manifest(Path(paths.out), manifest)
        create_markdown_artifact(key="textmill-summary", markdown=summary_markdown(manifest), description="Run summary")
        create_table_artifact(key="textmill-steps", table=steps_table(manifest), description="Per-step work and cache use")
        logger.info("done: %s", ", ".join(f"{v} {k}" for k, v in manifest["counts"].items()))
        return manifest
    finally:
        runner.close()


def publish_shards(
    runner: Runner, sink: StepSpec | None, shards: list[int], refs: dict[int, RefList], run: RunInfo
) -> shard.PublishOutcome:
    """One publish task per shard, in parallel, then one that finishes the publish; the stage's
    seconds cover both. Every shard is published again when the last finished publish's shared
    files (`textmill.sqlite`) were changed since; a shard a database does not hold under its
    current key, when the sink writes to one."""
    paths = runner.paths
    forced = shard.publish_forced(paths)
    with failing_as("publish failed"):
        stale = shard.stale_in_store(sink, refs)
    publish = runner.configure(publish_shard_task, "publish-{shard_no}", "publish", key=publish_cache_key)
    republish = runner.configure(
        publish_shard_task, "publish-{shard_no}", "publish", key=republish_cache_key
    ).with_options(refresh_cache=True)

    def submit(n: int) -> PrefectFuture:
        force = forced or n in stale
        keyed = shard.publish_cache_token(paths, sink, n, refs[n], force) is not None  # unchanged, or first
        return (publish if keyed else republish).submit(paths, sink, n, refs[n], run, force)

    runner.map_shards(
        "publish",
        submit,
        shards,
        {n: refs[n].count for n in shards},
        whole_shards=True,
    )
    started = time.perf_counter()
    with failing_as("publish failed"), in_this_process():
        repairs = [publish.submit(paths, sink, n, refs[n], run, True, True) for n in shard.unpublished(paths, shards)]
        stats = runner.stages["publish"]
        for future in repairs:
            repaired = future.result().computed
            stats.computed, stats.cached = stats.computed + repaired, stats.cached - repaired
        finish = runner.configure(finish_publish_task, "publish", "publish", cached=False)
        outcome = finish.submit(paths, sink, shards, run).result()
    runner.stages.setdefault("publish", StageStats()).seconds += time.perf_counter() - started
    return outcome


def run_corpus_step(
    runner: Runner, step: StepSpec, shards: list[int], refs: dict[int, RefList], sizes: dict[int, int]
) -> dict[int, ShardOutcome]:
    """Summarize per shard, reduce per partition, combine once, apply per shard; the step's
    seconds cover them all."""
    paths = runner.paths
    summarize = runner.configure(summarize_task, f"{step.name}-summarize-{{shard_no}}", step.name)
    partitions = shard.partition_count(step, len(shards))
    summaries = runner.map_shards(
        step.name, lambda n: summarize.submit(paths, step, n, refs[n], partitions), shards, sizes
    )
    bundles = {n: r.bundle or "" for n, r in summaries.items()}
    started = time.perf_counter()
    summarized = runner.stages[step.name].computed + runner.stages[step.name].cached
    index_path = build_index(runner, step, sorted(bundles.values()), partitions, summarized)
    decisions = shard.decisions_keys(step, index_path, paths, refs)
    runner.stages[step.name].seconds += time.perf_counter() - started
    apply = runner.configure(apply_task, f"{step.name}-{{shard_no}}", step.name)
    applied = runner.map_shards(
        f"{step.name}:apply",
        lambda n: apply.submit(
            paths, step, n, refs[n], bundles[n], index_path, decisions[n], summaries[n].fresh
        ),
        shards,
        sizes,
    )
    apply_stats = runner.stages.pop(f"{step.name}:apply")
    runner.stages[step.name].seconds += apply_stats.seconds
    runner.stages[step.name].updated += apply_stats.updated
    for n, result in applied.items():
        # The step changed the documents it summarized for the first time and those whose decision changed.
        runner.note_changed(n, summaries[n].computed + result.updated, result.refs.count)
        summaries[n] = replace(summaries[n], refs=result.refs)
    return summaries


def partition_groups(count: int, workers: int) -> list[list[int]]:
    """The partitions `0..count-1` in `PARTITION_GROUPS_PER_WORKER` groups per worker (at most
    one group per partition), contiguous and of sizes differing by at most one."""
    groups = max(1, min(count, PARTITION_GROUPS_PER_WORKER * max(1, workers)))
    bounds = [count * g // groups for g in range(groups + 1)]
    return [list(range(bounds[g], bounds[g + 1])) for g in range(groups)]


def group_name(step: StepSpec, group: list[int]) -> str:
    """A partition task's name: `dedupe-partition-3`, or `dedupe-partitions-8-15` for a group."""
    if len(group) == 1:
        return f"{step.name}-partition-{group[0]}"
    return f"{step.name}-partitions-{group[0]}-{group[-1]}"


def build_index(runner: Runner, step: StepSpec, bundles: list[str], count: int, summarized: int) -> str:
    """Partition tasks over the step's `count` partitions (`partition_groups`), in parallel on the
    run's task runner, then one that combines them; the `<step>:index` bar advances by each
    group's share of the `summarized` documents. Every partition task is resolved before a
    failure fails the run."""
    paths = runner.paths
    stage, where = f"{step.name}:index", f"{step.name} failed building its index"
    progress = listener()
    progress.start(stage, summarized)
    try:
        with failing_as(where):
            futures = {}
            workers = runner_workers(runner.settings.workers or default_workers(runner.settings.runner))
            layout = shard.index_layout(step)
            for group in partition_groups(count, workers):
                reduce = runner.configure(partition_task, group_name(step, group), step.name)
                futures[reduce.submit(paths, step, group, whole(bundles), layout)] = group
            partials: dict[int, str] = {}
            failures: list[tuple[int, BaseException]] = []
            for future in as_completed(list(futures)):
                group = futures[future]
                try:
                    for p, partial in zip(group, future.result(), strict=True):
                        partials[p] = partial
                        runner.remember(future, partial)
                        runner.remember(future, str(shard.partition_state(paths, step, p)))
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # noqa: BLE001 - gather all, then fail the run
                    failures.append((group[0], exc))
                    continue
                first, end = group[0], group[-1] + 1
                progress.advance(stage, summarized * end // count - summarized * first // count)
            if failures:
                raise min(failures, key=lambda failure: failure[0])[1]
            combine = runner.configure(index_task, f"{step.name}-index", step.name)
            combined = combine.submit(paths, step, whole([partials[p] for p in range(count)]))
            index_path: str = combined.result()
            runner.remember(combined, index_path)
    except Exception:
        progress.finish(stage, failed=True)
        raise
    progress.finish(stage)
    return index_path
