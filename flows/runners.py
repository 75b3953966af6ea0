"""Task runners: worker processes on one machine (the default), Prefect's thread pool, or Dask
worker processes (prefect-dask); and whether the run reports to a server someone watches.

Every worker process builds a step once (`textmill.flows.shard.step_for`) and keeps it for the
run, so a spaCy model loads once per worker, not once per shard.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import json
import multiprocessing
import multiprocessing.forkserver
import os
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

from prefect.cache_policies import CacheKeyFnPolicy
from prefect.filesystems import LocalFileSystem
from prefect.futures import PrefectConcurrentFuture
from prefect.results import ResultStore
from prefect.states import Completed
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from textmill.flows import progress
from textmill.flows.apiserver import temporary_api_url
from textmill.flows.config import StepSpec
from textmill.flows.interrupt import FORK_SERVER_ENV, ignore_interrupt_in_cli_worker
from textmill.tasks.base import ConfigError

RUNNERS = ("processes", "threads", "dask")
DEFAULT_RUNNER = "processes"
MAX_DEFAULT_THREADS = 4


def default_workers(kind: str) -> int:
    """Shard tasks at once when the config does not say.

    Processes and Dask: one worker process per core. Threads: the model-bound steps hold the
    GIL, so threads beyond the first add memory (each holds a shard) but little speed; on BBC 1,
    2 and 4 threads ran within 2% of each other (docs/operations.md). Prefect's own default pool
    is unbounded, hence the cap.
    """
    cores = os.cpu_count() or 1
    return min(cores, MAX_DEFAULT_THREADS) if kind == "threads" else cores


T = TypeVar("T")


class whole(quote[T]):
    """A task parameter Prefect passes as it is, without walking it: Prefect's `quote`, made
    picklable (a pickled `quote` comes back wrapping a 1-tuple of its value).

    Prefect walks every element of every parameter of a task run twice, looking for futures to
    wait on and to record as inputs: about 50 ms per list of 1,500 references, which made the
    walks most of a warm run at 100,000 documents. textmill passes lists of references, files
    and paths `whole`; they never hold futures.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[type[whole[T]], tuple[T]]:
        return (type(self), (self.unwrap(),))


class ServesCacheWithoutRuns:
    """A task runner mixin: when `cached_task_runs()` says no, a task whose result Prefect's
    cache holds is not submitted; its future is already done, in a `Cached` state holding the
    cached result record, read as Prefect reads it (`cached_future`).

    A task run of a cached shard costs the flow process and the server about 20 ms of CPU (its
    state events and their handling), for 64 shards of every stage; on the temporary server of
    an ad hoc run nobody sees those runs, and it does not record them (`apiserver`). On two
    cores they were about 2.4 s of a 9-second warm run at 100,000 documents (docs/benchmarks.md).
    """

    serve_cache_without_runs = False

    def __enter__(self) -> Any:
        self.serve_cache_without_runs = not cached_task_runs()
        return super().__enter__()  # type: ignore[misc]

    def without_run(self, task: Any, parameters: dict[str, Any], wait_for: Any = None) -> PrefectConcurrentFuture | None:
        """The cached result's done future, when this task needs no run (None: submit it)."""
        if not self.serve_cache_without_runs or wait_for:
            return None
        return cached_future(task, parameters)

    def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None) -> Any:
        future = self.without_run(task, parameters, wait_for)
        if future is not None:
            return future
        return super().submit(task, parameters, wait_for, dependencies)  # type: ignore[misc]


class ShardThreadRunner(ServesCacheWithoutRuns, ThreadPoolTaskRunner):
    """Prefect's thread pool, serving cached shards without task runs where nobody watches."""


class ShardProcessRunner(ServesCacheWithoutRuns, ProcessPoolTaskRunner):
    """Prefect's process pool, with additions for shard tasks.

    - Progress: worker processes send the documents each batch finishes back to this process
      (`textmill.flows.progress.forward_to`), so the terminal's bars move per batch as with
      threads, not once per finished shard.
    - Work that gains nothing from another process runs on threads of this process: every task
      of a run of one shard per stage (`in_process`), and any task Prefect will serve from its
      cache (`served_from_cache`). A worker process costs seconds to start (it imports Prefect
      and textmill and loads its models), more than a small or unchanged corpus takes.
    - On a server nobody watches, a task Prefect would serve from its cache gets no task run at
      all (`ServesCacheWithoutRuns`).

    Worker processes start on the first task sent to them and stay until the flow run ends.
    They are forked from the fork server the CLI started while the temporary server booted
    (`prepare_fork_server`), which imported Prefect and textmill once, or else spawned (each
    importing them itself, about 1.7 s before its first task); either way they have the CLI's
    environment (PREFECT_API_URL included, so their task runs report to the run's server).
    """

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(max_workers=max_workers)
        self.in_process = False
        self._threads: ThreadPoolTaskRunner | None = None
        self._progress_queue: Any = None
        self._progress_thread: threading.Thread | None = None

    def duplicate(self) -> ShardProcessRunner:
        return type(self)(max_workers=self._max_workers)

    def __enter__(self) -> ShardProcessRunner:
        progress.new_run()
        queue = multiprocessing.get_context("spawn").Queue()
        self._progress_queue = queue
        self._initializer, self._initargs = start_worker, (queue, api_url())
        self._progress_thread = threading.Thread(
            target=progress.receive_forwarded, args=(queue,), name="textmill-progress", daemon=True
        )
        self._progress_thread.start()
        self._threads = ThreadPoolTaskRunner(max_workers=default_workers("threads")).__enter__()
        super().__enter__()
        context = fork_server_context()
        if context is not None:
            # Prefect's pool spawns; the same pool, forked instead: no process has started yet, and
            # CPython's executor keeps its initializer and arguments (Prefect's) as attributes.
            spawning = self._executor
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self._max_workers,
                mp_context=context,
                initializer=spawning._initializer,
                initargs=spawning._initargs,
            )
            spawning.shutdown(wait=False)
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        try:
            super().__exit__(exc_type, exc_value, traceback)
        finally:
            if self._threads is not None:
                self._threads.__exit__(exc_type, exc_value, traceback)
                self._threads = None
            if self._progress_queue is not None:
                self._progress_queue.put(None)
                if self._progress_thread is not None:
                    self._progress_thread.join(timeout=5)
                self._progress_queue.close()
                self._progress_queue = None

    def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None) -> Any:
        future = self.without_run(task, parameters, wait_for)
        if future is not None:
            return future
        if self._threads is not None and (self.in_process or served_from_cache(task, parameters)):
            return self._threads.submit(task, parameters, wait_for, dependencies)
        return ProcessPoolTaskRunner.submit(self, task, parameters, wait_for, dependencies)


def served_from_cache(task: Any, parameters: dict[str, Any]) -> bool:
    """Whether Prefect will serve this task run from its cache (`cache_record_key`)."""
    return cache_record_key(task, parameters) is not None


def cache_record_key(task: Any, parameters: dict[str, Any]) -> str | None:
    """The key of the record Prefect would serve this task run from: the task is keyed by a
    cache-key function (textmill's shard tasks are: `textmill.flows.pipeline.cache_key`) and a
    record under that key exists in its result storage folder. None whenever that cannot be told."""
    policy, storage = getattr(task, "cache_policy", None), getattr(task, "result_storage", None)
    if not isinstance(policy, CacheKeyFnPolicy) or not isinstance(storage, (str, Path)) or task.refresh_cache:
        return None
    try:
        key = policy.compute_key(SimpleNamespace(task=task), parameters, {})
    except Exception:  # noqa: BLE001 - a key function that needs a real run context: let the worker decide
        return None
    return key if key and (Path(storage) / key).is_file() else None


def cached_future(task: Any, parameters: dict[str, Any]) -> PrefectConcurrentFuture | None:
    """A done future in the `Cached` state Prefect's engine would give this task run, holding the
    cached record (so `state.data.metadata.storage_key` names its file, as for a real run);
    None when there is no record or it cannot be read: Prefect's own run then decides."""
    key = cache_record_key(task, parameters)
    if key is None:
        return None
    try:
        record = ResultStore(result_storage=LocalFileSystem(basepath=str(task.result_storage))).read(key)
    except Exception:  # noqa: BLE001 - an unreadable record: Prefect's run computes the task again
        return None
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()
    done.set_result(Completed(name="Cached", data=record))
    future = PrefectConcurrentFuture(uuid.uuid4(), done)
    future.wait()  # takes the final state from the done future: `state` never asks the API for a run that has none
    return future


# Modules a worker process needs for its first task, imported once in the fork server (with
# the installed steps' modules).
FORK_SERVER_PRELOAD = ("textmill.flows.pipeline",)
# Imported first by the fork server: sets up the steps named in FORK_SERVER_STEPS_ENV.
FORK_SERVER_SETUP = "textmill.flows.forkserver_steps"
FORK_SERVER_STEPS_ENV = "TEXTMILL_FORK_SERVER_STEPS"
# Above this many files the fork server loads no model. A forked worker's RSS starts with all the
# fork server holds (1,067 MB with heliport and py3langid), and the dedupe index's partitions add
# their working set on top, which grows with the corpus: at 1,000,000 documents (+1% edited) a
# worker peaked at 2,314 MB that way, against 1,600 MB loading its models after the dedupe
# step (docs/benchmarks.md). The seconds saved matter to small runs, not to hour-long ones.
MODELS_IN_FORK_SERVER_MAX_FILES = 250_000
# `off` in the environment: spawn every worker (for comparison, or should forking ever misbehave).
FORK_SERVER_SWITCH = "TEXTMILL_FORK_SERVER"
_fork_server_api: list[str | None] = []


def prepare_fork_server(specs: Sequence[StepSpec] = (), files: int = 0) -> None:
    """Start the fork server this process's worker processes will be forked from, let it import
    Prefect and textmill now, and, for a corpus of at most `MODELS_IN_FORK_SERVER_MAX_FILES`
    `files`, set up those of the run's `specs` whose step may be set up before a fork (Linux
    only; a no-op elsewhere).

    A spawned worker imports them itself before its first task, about 1.7 s per worker, and
    loads its models (heliport's 850 MB, spaCy's) before its first language or entities task,
    seconds more, on the run's critical path, every run. The CLI calls this while it waits for
    its temporary server, when a core is idle, and only when the scan found files to read (a
    run with nothing to compute starts no worker, and would pay for nothing). The fork server
    keeps the environment of this moment; a pool made after PREFECT_API_URL changed spawns
    instead.
    """
    if not sys.platform.startswith("linux") or _fork_server_api or os.environ.get(FORK_SERVER_SWITCH) == "off":
        return
    from textmill.tasks.registry import load_registry

    registry = load_registry()
    steps = sorted({cls.__module__ for cls in registry.values()})  # a worker loads every step's
    shared = [] if files > MODELS_IN_FORK_SERVER_MAX_FILES else [
        asdict(s) for s in specs if s.name in registry and registry[s.name].setup_before_fork
    ]
    os.environ[FORK_SERVER_ENV] = str(os.getpid())
    os.environ[FORK_SERVER_STEPS_ENV] = json.dumps({"sys_path": sys.path, "steps": shared})
    try:
        multiprocessing.get_context("forkserver").set_forkserver_preload([FORK_SERVER_SETUP, *FORK_SERVER_PRELOAD, *steps])
        multiprocessing.forkserver.ensure_running()
    finally:
        del os.environ[FORK_SERVER_STEPS_ENV]  # for the fork server alone, not for later children
    _fork_server_api.append(os.environ.get("PREFECT_API_URL"))


def fork_server_context() -> Any:
    """The forkserver context when `prepare_fork_server` started one whose environment still
    names this process's API; None otherwise (the pool spawns)."""
    if not _fork_server_api or _fork_server_api[0] != os.environ.get("PREFECT_API_URL"):
        return None
    return multiprocessing.get_context("forkserver")


def start_worker(queue: Any, parent_api_url: str | None) -> None:
    """Runs once in each worker process before its first task: progress goes back to the parent,
    one API client serves every task run of the worker, and the worker skips the interpreter's
    teardown when it exits (`exit_without_teardown`)."""
    ignore_interrupt_in_cli_worker()
    progress.forward_to(queue)
    keep_api_client(parent_api_url)
    atexit.register(exit_without_teardown)


def exit_without_teardown() -> None:
    """The last exit handler of a worker process (the first registered): end the process now.

    By then the worker has returned from its last task, multiprocessing has flushed its queues
    (progress, Prefect's forwarded logs and events) and every exit handler registered later,
    Prefect's included, has run. What is left is the interpreter freeing every object of the
    models the worker loaded, 0.5 to 1.5 s with spaCy and heliport in memory, which the run
    waited for at its end (`ProcessPoolExecutor.shutdown` joins the workers).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(0)


def api_url() -> str | None:
    """The Prefect API this process reports to (None: none configured)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def keep_api_client(parent_api_url: str | None) -> None:
    """Enter a Prefect client context for the rest of this worker's life. Without one, Prefect
    builds two clients for each task run in a worker process (each an HTTP client with a new TLS
    context, tens of ms); with one in the context, both calls take it. Only when this process
    reports to the same API as its parent: a client made here without an API configured would
    start a server of its own."""
    from prefect.context import SyncClientContext

    if parent_api_url is None or api_url() != parent_api_url:
        return
    _worker_client.append(SyncClientContext().__enter__())


# The worker's kept client context (entered once, never left: it lives as long as the process).
_worker_client: list[Any] = []


def flow_task_runner() -> Any:
    """The task runner of the flow run this thread is in (None outside a flow run)."""
    from prefect.context import FlowRunContext

    return getattr(FlowRunContext.get(), "task_runner", None)


def runner_workers(fallback: int) -> int:
    """Shard tasks the flow run's task runner runs at once (`--workers` included, which the
    config does not see): a pool's size, a Dask cluster's threads; `fallback` when it cannot
    tell (an unbounded pool, no flow run)."""
    runner = flow_task_runner()
    client = getattr(runner, "_client", None)
    if client is not None:
        return sum(client.nthreads().values()) or fallback
    kwargs = getattr(runner, "cluster_kwargs", None)
    if isinstance(kwargs, dict) and kwargs.get("n_workers"):
        return int(kwargs["n_workers"]) * int(kwargs.get("threads_per_worker") or 1)
    size = getattr(runner, "_max_workers", None)
    return size if isinstance(size, int) and 0 < size < 1 << 16 else fallback


def run_in_process(shards: int) -> None:
    """Tell the flow run's task runner how many shards each stage has: with one, worker
    processes would only add their start-up (a no-op for other runners)."""
    runner = flow_task_runner()
    if isinstance(runner, ShardProcessRunner):
        runner.in_process = shards <= 1


@contextmanager
def in_this_process() -> Iterator[None]:
    """Tasks submitted inside run on threads of the flow's process: for a stage of one task (an
    index, publish), where another process offers no parallelism, only its start-up."""
    runner = flow_task_runner()
    if not isinstance(runner, ShardProcessRunner):
        yield
        return
    before, runner.in_process = runner.in_process, True
    try:
        yield
    finally:
        runner.in_process = before


def make_task_runner(kind: str, workers: int | None = None, dask_address: str | None = None) -> Any:
    """The Prefect task runner for `kind` (see RUNNERS), `workers` at once (or the default)."""
    if kind not in RUNNERS:
        raise ConfigError(f"unknown runner {kind!r}; choose {', '.join(map(repr, RUNNERS))}")
    if dask_address and kind != "dask":
        raise ConfigError("a Dask address needs the dask runner (--runner dask)")
    workers = workers or default_workers(kind)
    if kind == "threads":
        return ShardThreadRunner(max_workers=workers)
    if kind == "processes":
        return ShardProcessRunner(max_workers=workers)
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}
    )


STEP_TAGS_ENV = "TEXTMILL_STEP_TAGS"
CACHED_RUNS_ENV = "TEXTMILL_CACHED_TASK_RUNS"


def watched_server() -> bool:
    """Whether runs report to a Prefect server someone can watch: a configured one, not the
    temporary server of an ad hoc run (`textmill.flows.apiserver`), which disappears with it."""
    from prefect.settings import PREFECT_API_URL

    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    return bool(url) and url != temporary_api_url()


def for_watched_server(variable: str) -> bool:
    """An `on`, `off` or `auto` environment setting (default `auto`: on only where someone
    watches, `watched_server`); anything else is a ConfigError naming the variable."""
    setting = os.environ.get(variable, "auto").strip().lower()
    if setting not in ("on", "off", "auto"):
        raise ConfigError(f"{variable}={setting!r}: use on, off or auto")
    return setting == "on" or (setting == "auto" and watched_server())


def tag_steps() -> bool:
    """Whether task runs carry their step's tag: `TEXTMILL_STEP_TAGS` is `on`, `off` or `auto`.

    `auto` (the default) tags only on a watched server (`watched_server`): each new tag costs a
    concurrency-limit check on the server's database (docs/operations.md, "Tags per step"), worth
    paying where someone filters the UI by step, not on a throwaway server.
    """
    return for_watched_server(STEP_TAGS_ENV)


def cached_task_runs() -> bool:
    """Whether a shard task served from Prefect's cache still gets a task run (shown `Cached`):
    `TEXTMILL_CACHED_TASK_RUNS` is `on`, `off` or `auto`.

    `auto` (the default): only on a watched server (`watched_server`), whose UI shows every
    shard of every step; the temporary server of an ad hoc run records no task runs.
    """
    return for_watched_server(CACHED_RUNS_ENV)


def loaded_steps() -> list[str]:
    """Names of the steps this process has built (on a Dask worker: `client.run(loaded_steps)`)."""
    from textmill.flows import shard

    return sorted(step.name for step in shard._steps.values())
