"""The default runner: worker processes on this machine give the same corpus as threads, load
each step once per process, report their task runs to the run's server and move the bars per batch."""
from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import re
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from bench.synth import generate
from conftest import CONFIG, shared_path
from flowkit import Recorder, install_plugin, jsonl_lines, records, set_option, shards_of, task_run_states
from textmill.flows.config import RunSection, load_config
from textmill.flows.gc import RunRecord
from textmill.flows.pipeline import Runner, textmill
from textmill.flows.progress import set_listener
from textmill.flows import runners
from textmill.flows.interrupt import FORK_SERVER_ENV
from textmill.flows.runners import ShardProcessRunner, make_task_runner
from textmill.flows.shard import Paths

pytestmark = pytest.mark.slow
T = TypeVar("T")

LOG_STEPS = '''
import os

from pydantic import Field

from textmill.tasks.base import DocumentStep, StepOptions


class LogOptions(StepOptions):
    log: str = Field(..., description="file the step writes its notes to")


class SetupLog(DocumentStep):
    """Passes documents through; notes each process that sets it up, as a model load would be."""

    name = "setuplog"
    version = "1"
    Options = LogOptions

    def setup(self):
        with open(self.options.log, "a") as log:
            log.write(f"{os.getpid()}\\n")

    def process(self, docs):
        return [self.stamp(d) for d in docs]


class ForkSetupLog(SetupLog):
    """The same, for a step whose setup may be shared by forked processes."""

    name = "forksetuplog"
    setup_before_fork = True


class OrderLog(DocumentStep):
    """Passes documents through; notes the order in which it sees them."""

    name = "orderlog"
    version = "1"
    Options = LogOptions

    def process(self, docs):
        with open(self.options.log, "a") as log:
            log.write("".join(d.id + "\\n" for d in docs))
        return [self.stamp(d) for d in docs]
'''


@pytest.fixture
def log_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway distribution with the `setuplog` and `orderlog` steps, on sys.path (worker
    processes inherit it)."""
    return install_plugin(
        monkeypatch, tmp_path / "site", "textmill_logsteps", LOG_STEPS,
        "setuplog = textmill_logsteps:SetupLog\nforksetuplog = textmill_logsteps:ForkSetupLog\n"
        "orderlog = textmill_logsteps:OrderLog",
    )


@pytest.fixture
def fresh_fork_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No fork server running before the test (it may start one) nor after it."""
    monkeypatch.setattr(runners, "_fork_server_api", [])
    monkeypatch.setenv(FORK_SERVER_ENV, "")
    multiprocessing.forkserver._forkserver._stop()
    yield
    multiprocessing.forkserver._forkserver._stop()


def config_with(
    tmp_path: Path, name: str, log: Path, shard_size: int, step: str = "setuplog", after: str = "clean"
) -> Path:
    """A copy of the default config with the logging `step` after step `after` (clean or dedupe),
    writing to `log`."""
    folder = tmp_path / name
    shutil.copytree(CONFIG.parent, folder, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    path = folder / "pipeline.toml"
    steps = ["clean", "dedupe"]
    steps.insert(steps.index(after) + 1, step)
    path.write_text(
        path.read_text().replace('steps = ["clean", "dedupe"', "steps = [" + ", ".join(f'"{s}"' for s in steps))
        + f'\n[steps.{step}]\nlog = "{log}"\n'
    )
    set_option(path, "run", f"shard_size = {shard_size}")
    return path


def with_children_watched(run: Callable[[], T], parents: set[int] | None = None) -> tuple[T, set[int]]:
    """`run()`'s result and the ids of the multiprocessing children seen while it ran (their
    parents' ids added to `parents`)."""
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            for child in multiprocessing.active_children():
                if child.pid is None or child.pid in seen:
                    continue
                seen.add(child.pid)
                if parents is not None:
                    try:
                        parents.add(psutil.Process(child.pid).ppid())
                    except psutil.NoSuchProcess:
                        pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        return run(), seen
    finally:
        done.set()
        watcher.join()


def sorted_lines(out: Path) -> list[str]:
    return sorted(jsonl_lines(out))


def test_the_default_runner_is_worker_processes() -> None:
    assert isinstance(textmill.task_runner, ShardProcessRunner)
    assert textmill.task_runner._max_workers == (os.cpu_count() or 1)


def test_worker_processes_give_the_same_corpus_as_threads(
    prefect_server: None, log_steps: Path, tmp_path: Path
) -> None:
    """80 generated documents in shards of about 16 over two worker processes: the output is the
    thread runner's, each process sets each step up once, and every task run reaches the server."""
    corpus = tmp_path / "corpus"
    planted = generate(shared_path("corpora", "bbc"), corpus, 80, seed=301, exact_rate=0.1, near_rate=0.1)
    log = tmp_path / "setups.log"
    config = str(config_with(tmp_path, "config", log, 16))
    threads = textmill.with_options(task_runner=make_task_runner("threads", 2))(
        corpus=str(corpus), out=str(tmp_path / "threads"), config=config
    )
    threads_setups = Counter(log.read_text().split())
    log.unlink()
    processes = textmill.with_options(task_runner=make_task_runner("processes", 2))(
        corpus=str(corpus), out=str(tmp_path / "processes"), config=config
    )

    assert processes["counts"] == threads["counts"]
    assert processes["counts"]["duplicate"] >= planted.exact
    assert sorted_lines(tmp_path / "processes") == sorted_lines(tmp_path / "threads")
    assert threads_setups == {str(os.getpid()): 1}
    setups = Counter(log.read_text().split())
    assert str(os.getpid()) not in setups, "the shards ran in worker processes"
    assert 1 <= len(setups) <= 2 and set(setups.values()) == {1}, f"one setup per worker process: {setups}"

    warm, spawned = with_children_watched(
        lambda: textmill.with_options(task_runner=make_task_runner("processes", 2))(
            corpus=str(corpus), out=str(tmp_path / "processes"), config=config
        )
    )
    assert warm["counts"] == processes["counts"] and all(s["computed"] == 0 for s in warm["steps"].values())
    assert not spawned, "a warm run, served from the cache, starts no worker process"

    shards = 6  # 80 files, 16 to a shard: 5, made 6 so that each of the 2 workers gets 3
    per_shard = ("read", "clean", "setuplog", "language", "entities")
    states = task_run_states(processes["run_id"], expected=shards * len(per_shard), timeout=30)
    assert set(states.values()) == {"Completed"}, states
    for stage in per_shard:
        assert {name for name in states if re.fullmatch(rf"{stage}-\d+", name)} == {f"{stage}-{n}" for n in range(shards)}


def test_workers_forked_from_the_fork_server_give_the_same_corpus(
    prefect_server: None, log_steps: Path, fresh_fork_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the CLI has started its fork server (`prepare_fork_server`, which imports Prefect,
    textmill and every installed step in it), the worker processes are forked from it: the
    corpus is the thread runner's and each worker sets each step up once."""
    corpus = tmp_path / "corpus"
    generate(shared_path("corpora", "bbc"), corpus, 40, seed=302, exact_rate=0.1, near_rate=0.1)
    log = tmp_path / "setups.log"
    config = str(config_with(tmp_path, "config", log, 10))
    threads = textmill.with_options(task_runner=make_task_runner("threads", 2))(
        corpus=str(corpus), out=str(tmp_path / "threads"), config=config
    )
    log.unlink()
    runners.prepare_fork_server()
    assert os.environ[FORK_SERVER_ENV] == str(os.getpid())
    parents: set[int] = set()

    def run() -> dict:
        return textmill.with_options(task_runner=make_task_runner("processes", 2))(
            corpus=str(corpus), out=str(tmp_path / "forked"), config=config
        )

    forked, children = with_children_watched(run, parents)
    assert forked["counts"] == threads["counts"]
    assert sorted_lines(tmp_path / "forked") == sorted_lines(tmp_path / "threads")
    assert children and len(parents) == 1 and os.getpid() not in parents, "forked by the fork server"
    setups = Counter(log.read_text().split())
    assert set(setups) <= {str(pid) for pid in children} and set(setups.values()) == {1}, setups

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")  # the server moved: spawn
    assert runners.fork_server_context() is None


@pytest.mark.parametrize("files_over_limit", [False, True])
def test_a_step_that_may_be_set_up_before_a_fork_is_set_up_once_in_the_fork_server(
    prefect_server: None, log_steps: Path, fresh_fork_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    files_over_limit: bool,
) -> None:
    """`setup_before_fork`: the fork server sets the step up as it starts, and the workers
    forked from it find it ready; a step without it is set up in each worker, as before. Over
    `MODELS_IN_FORK_SERVER_MAX_FILES` files, every step is set up in each worker."""
    corpus = tmp_path / "corpus"
    generate(shared_path("corpora", "bbc"), corpus, 30, seed=303, exact_rate=0.1, near_rate=0.1)
    before_fork, per_worker = tmp_path / "before-fork.log", tmp_path / "per-worker.log"
    config = config_with(tmp_path, "config", before_fork, 10, step="forksetuplog")
    text = config.read_text().replace('"forksetuplog", ', '"forksetuplog", "setuplog", ')
    config.write_text(text + f'\n[steps.setuplog]\nlog = "{per_worker}"\n')
    monkeypatch.setattr(runners, "MODELS_IN_FORK_SERVER_MAX_FILES", 29 if files_over_limit else 30)
    runners.prepare_fork_server(load_config(config).steps, files=30)
    parents: set[int] = set()

    def run() -> dict:
        return textmill.with_options(task_runner=make_task_runner("processes", 2))(
            corpus=str(corpus), out=str(tmp_path / "out"), config=str(config)
        )

    manifest, children = with_children_watched(run, parents)
    assert manifest["counts"]["ok"] > 0
    assert len(parents) == 1 and not parents & children
    in_workers = [per_worker] + ([before_fork] if files_over_limit else [])
    if not files_over_limit:
        assert before_fork.read_text().split() == [str(p) for p in parents], "once, in the fork server"
    for log in in_workers:
        setups = Counter(log.read_text().split())
        assert set(setups) <= {str(p) for p in children} and set(setups.values()) == {1}, log.name
    assert all(
        [s["step"] for s in record["steps"]][1:3] == ["forksetuplog", "setuplog"]
        for record in records(tmp_path / "out").values()
        if record["status"] == "ok"
    )


def test_progress_moves_per_batch_from_worker_processes(prefect_server: None, tmp_path: Path) -> None:
    """Two shards of about 150 documents: a worker reports each batch of 64 as it finishes."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(300):
        (corpus / f"{n:03}.txt").write_text(f"Report number {n} from the city council. " * (1 + n % 7) + f"Item {n * 7919}.\n")
    config = tmp_path / "pipeline.toml"
    shutil.copy(CONFIG, config)
    (tmp_path / "boilerplate.toml").write_bytes((CONFIG.parent / "boilerplate.toml").read_bytes())
    set_option(config, "pipeline", 'steps = ["clean", "dedupe", "publish"]')
    set_option(config, "run", "shard_size = 150")
    set_option(config, "steps.publish", 'formats = ["jsonl"]')
    recorder = Recorder()
    set_listener(recorder)
    try:
        manifest = textmill.with_options(task_runner=make_task_runner("processes", 2))(
            corpus=str(corpus), out=str(tmp_path / "out"), config=str(config)
        )
    finally:
        set_listener(None)
    assert manifest["documents"] == 300
    for stage in ("read", "clean", "dedupe", "dedupe:apply"):
        assert sum(recorder.advances(stage)) == 300, stage
    assert 64 in recorder.advances("clean"), f"no batch reported before its shard finished: {recorder.advances('clean')}"
    assert len(recorder.advances("read")) > 2, "files are reported as they are read"


def test_shard_tasks_are_submitted_largest_first(log_steps: Path, tmp_path: Path) -> None:
    """With one task at a time, a stage's shards run in the order of their input bytes, largest
    first: on two or more workers the last tasks taken are then the short ones."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sizes = {"a": 1, "b": 9, "c": 4, "d": 6}  # shards of two files each, in id order
    for prefix, words in sizes.items():
        for n in range(2):
            text = " ".join(f"{prefix}{n}word{w}" for w in range(120 * words))
            (corpus / f"{prefix}{n}.txt").write_text(f"Document {prefix}{n}. {text}.\n")
    log = tmp_path / "order.log"
    config = config_with(tmp_path, "config", log, 2, step="orderlog")
    out = tmp_path / "out"
    textmill.with_options(task_runner=make_task_runner("threads", 1))(corpus=str(corpus), out=str(out), config=str(config))

    shard_of = shards_of(out)
    assert len(set(shard_of.values())) == 4, shard_of
    ran = [shard_of[doc_id] for doc_id in log.read_text().split()]
    order = [n for i, n in enumerate(ran) if i == 0 or ran[i - 1] != n]
    by_bytes = sorted(set(shard_of.values()), key=lambda n: -sum((corpus / f).stat().st_size for f, m in shard_of.items() if m == n))
    assert order == by_bytes, f"shards ran in {order}, largest first is {by_bytes}"
    assert [shard_of[f"{p}0.txt"] for p in "bdca"] == by_bytes



@pytest.mark.parametrize("after", ["clean", "dedupe"])
def test_an_incremental_run_submits_the_shards_with_the_most_changed_bytes_first(
    log_steps: Path, tmp_path: Path, after: str
) -> None:
    """After a change, a shard's work is its bytes times the share of its documents the
    previous step changed (a document step, or a corpus step's summaries and decisions): a
    new shard goes before a larger old one with one edited document of two."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()

    def write(name: str, words: int) -> None:
        text = " ".join(f"{name}word{w}" for w in range(120 * words))
        (corpus / f"{name}.txt").write_text(f"Document {name}. {text}.\n")

    for prefix, words in {"a": 1, "b": 9, "c": 4, "d": 6}.items():
        for n in range(2):
            write(f"{prefix}{n}", words)
    log = tmp_path / "order.log"
    config = config_with(tmp_path, "config", log, 2, step="orderlog", after=after)
    out = tmp_path / "out"
    flow = textmill.with_options(task_runner=make_task_runner("threads", 1))
    flow(corpus=str(corpus), out=str(out), config=str(config))

    log.unlink()
    with open(corpus / "b1.txt", "a") as fh:
        fh.write("A correction.\n")
    for n in range(2):
        write(f"e{n}", 6)
    flow(corpus=str(corpus), out=str(out), config=str(config))

    ran = log.read_text().split()
    assert sorted(ran) == ["b1.txt", "e0.txt", "e1.txt"], ran
    shard_of = shards_of(out)
    assert shard_of["b1.txt"] not in {shard_of["e0.txt"], shard_of["e1.txt"]}
    assert ran[-1] == "b1.txt", f"the old shard (9 units, half changed) ran before the new one (6 units): {ran}"


def test_a_publish_weighs_every_byte_of_a_shard_with_any_change() -> None:
    """Document stages weigh the changed share; publish rewrites a changed shard whole."""
    runner = Runner(
        Paths(corpus="corpus", out="out"), RunSection(), {}, RunRecord(run_id="run"),
        weights={0: 1000, 1: 300, 2: 200, 3: 900}, changed={0: 0.01, 1: 1.0, 2: 1.0, 3: 0.0},
    )
    assert runner.heaviest_first([0, 1, 2, 3]) == [1, 2, 0, 3]
    assert runner.heaviest_first([0, 1, 2, 3], whole_shards=True) == [0, 1, 2, 3]
