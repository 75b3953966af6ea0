"""Quality checks of textmill's steps on real corpora: `python -m bench.quality KIND --corpus PATH`.

What the subcommands share lives here: the pipeline config's steps built exactly as a worker
builds them, a corpus read through textmill's own reader, word counts, progress bars and the
results files. Nothing here imports Prefect: the checks call the steps directly, so what they
measure is the step, not the orchestration.
"""
from __future__ import annotations

import itertools
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.common import REPO, write_results
from textmill.tasks.base import DocumentStep, Step
from textmill.tasks.document import Document
from textmill.tasks.read import discover, read_source

CONFIG = REPO / "config" / "pipeline.toml"
WORD = re.compile(r"\w+")
console = Console(stderr=True)
T = TypeVar("T")


class QualityError(Exception):
    """A problem the user can fix (a wrong corpus path): reported as one line, exit code 2."""


def require_dir(path: Path, what: str, *needed: str) -> Path:
    """`path` as a resolved folder holding every name in `needed`, else a QualityError saying what is wrong."""
    if not path.is_dir():
        raise QualityError(f"{what} corpus folder not found: {path}")
    missing = [name for name in needed if not (path / name).exists()]
    if missing:
        raise QualityError(f"{path} is not the {what} corpus: it has no {', '.join(missing)}")
    return path.resolve()


def config_step(name: str, config: Path = CONFIG, **overrides: Any) -> Step:
    """Step `name` as the pipeline runs it: options from the config (plus `overrides`), set up.

    Built like `flows/shard.py: step_for` does it, from the validated config, so rule paths
    resolve against the config's folder.
    """
    from textmill.flows.config import load_config
    from textmill.tasks.registry import build_step, load_registry

    cfg = load_config(config)
    spec = next((s for s in cfg.steps if s.name == name), None)
    if spec is None:
        raise QualityError(f"{config} has no step {name!r} in its pipeline")
    step = build_step(name, {**spec.options, **overrides}, load_registry(), Path(spec.config_dir))
    step.setup()
    return step


def max_bytes(config: Path = CONFIG) -> int:
    """The reader's size limit from the config's `[input]` section."""
    from textmill.flows.config import load_config

    return load_config(config).input.max_bytes


def read_corpus(root: Path, limit: int | None = None, suffix: str = "") -> list[Document]:
    """Every file under `root` (ending in `suffix`) as textmill's reader turns it into Documents."""
    limit_bytes = max_bytes()
    sources = [s for s in discover(root) if s.id.endswith(suffix)]
    if limit is not None:
        sources = sources[:limit]
    docs: list[Document] = []
    with bar("read", len(sources)) as advance:
        for src in sources:
            docs.extend(read_source(root, src, limit_bytes))
            advance(1)
    return docs


def first_files(root: Path, limit: int, target: Path) -> Path:
    """A copy of the first `limit` files of `root`, in the reader's order, under `target` (development runs)."""
    for src in itertools.islice(discover(root), limit):
        (target / src.id).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / src.id, target / src.id)
    return target


def clean(docs: list[Document], **overrides: Any) -> tuple[list[Document], float]:
    """The documents after the config's clean step, with its options changed by `overrides`
    (rejected ones stay in, with status `rejected`), and the seconds spent in `process` alone
    (setup and config loading excluded)."""
    from textmill.flows.shard import BATCH  # the batch a shard task hands to a document step

    cleaner = config_step("clean")
    assert isinstance(cleaner, DocumentStep)
    if overrides:
        options = type(cleaner.options).model_validate({**cleaner.options.model_dump(), **overrides})
        cleaner = type(cleaner)(options, cleaner.config_dir)
    out: list[Document] = []
    seconds = 0.0
    cleaner.process(list(docs[:1]))  # warm-up: lazily built parsers
    with bar("textmill clean", len(docs)) as advance:
        for batch in batches(docs, BATCH):
            started = time.perf_counter()
            out.extend(cleaner.process(list(batch)))
            seconds += time.perf_counter() - started
            advance(len(batch))
    return out, seconds


def words(text: str) -> int:
    """Word count as `\\w+` tokens: the unit of every words/s figure here."""
    return len(WORD.findall(text))


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields `advance(n)`."""
    progress = Progress(
        TextColumn(f"{description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """`(fn(), seconds)`."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def rate(count: float, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


def finish(results_dir: Path, kind: str, data: dict[str, Any], markdown: str, started: float) -> None:
    """Write `quality-<kind>.json` and `.md`, print the tables and the total run time."""
    seconds = time.perf_counter() - started
    data = {**data, "run_seconds": round(seconds, 1)}
    json_path, md_path = write_results(results_dir, f"quality-{kind}", data, markdown)
    print(markdown)
    print(f"Results: {json_path}, {md_path}", file=sys.stderr)
    print(f"Total run time: {seconds:.1f} s")
