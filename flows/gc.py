"""Garbage collection of a run's state: what no kept run can reach any more is removed.

Each finished run writes a record (`.textmill/runs/`): for each pack, the cache keys of the
shard tasks whose output it used (a task Cached in this run is named as much as one that ran,
since its result carries its key), the cache keys of its other cached tasks, and the files its
tasks produced under `.textmill`. Collecting keeps the last `keep` runs and removes, in an
order that never leaves a cached task result pointing at something gone:

1. Prefect result files (`prefect/`) of tasks no kept run names, so such a task computes again
   instead of returning references to removed rows or files;
2. files and folders produced by runs no longer kept, unless a kept run produced them too
   (partials, indexes, a corpus step's bundle folders and its partitions' state folders);
3. in each pack, uses of tasks no kept run names and every record no remaining use names;
   packs no kept run names at all (a shard the corpus left behind), whole; and the folders
   of the store's earlier layouts (file per record; packs per shard count);
4. the records of runs no longer kept.

Files under `.textmill` that no run record ever named (the lock, `published.json`, anything
another part of textmill keeps there for itself) are never touched.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from textmill.flows.lock import HOLDER_FILE, LOCK_FILE
from textmill.flows.report import human_bytes
from textmill.flows.store import FILE_PER_RECORD_KINDS, Store, connect, levels, packs_of
from textmill.tasks.atomic import write_atomic

RUNS = "runs"
LOCK_FILES = frozenset({LOCK_FILE.name, HOLDER_FILE.name})


@dataclass
class RunRecord:
    """What one finished run needs kept, by reference only (no per-document data)."""

    run_id: str
    packs: dict[str, list[str]] = field(default_factory=dict)  # shard "n" -> task keys noted in its pack
    results: list[str] = field(default_factory=list)  # cache keys of Prefect result files
    artifacts: list[str] = field(default_factory=list)  # files and folders tasks produced, relative to `.textmill`

    def add_task(self, shard: int, key: str) -> None:
        tasks = self.packs.setdefault(str(shard), [])
        if key not in tasks:
            tasks.append(key)

    def add_result(self, key: str) -> None:
        if key not in self.results:
            self.results.append(key)

    def add_artifact(self, state: Path, path: str | Path) -> None:
        """Note a file or folder a task produced; only those under `state` are collected."""
        try:
            relative = Path(path).resolve().relative_to(state.resolve()).as_posix()
        except ValueError:
            return
        if relative not in self.artifacts:
            self.artifacts.append(relative)


@dataclass
class GcReport:
    """What a collection removed."""

    kept: int = 0
    dropped: int = 0
    records: int = 0
    packs: int = 0
    results: int = 0
    files: int = 0
    freed: int = 0

    def summary(self) -> str:
        return (
            f"kept {self.kept} runs, dropped {self.dropped}; removed {self.records} store records, "
            f"{self.packs} packs, {self.results} cached task results, {self.files} files; {human_bytes(self.freed)} freed"
        )


@dataclass
class StoreSize:
    """Everything under `.textmill`: files and bytes."""

    bytes: int = 0
    files: int = 0


def write_run_record(state: Path, record: RunRecord) -> Path:
    """Save `record` as the newest run (names sort by finishing time)."""
    path = state / RUNS / f"{time.time_ns():020d}-{record.run_id}.json"
    write_atomic(path, json.dumps(asdict(record), sort_keys=True).encode())
    return path


def run_records(state: Path) -> list[Path]:
    """Run records, oldest first."""
    folder = state / RUNS
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def load_record(path: Path) -> RunRecord:
    return RunRecord(**json.loads(path.read_text()))


def collect_garbage(state: Path, keep: int) -> GcReport:
    """Keep what the last `keep` recorded runs use, remove the rest (see the module docstring).

    Without any run record nothing is removed: an interrupted first run's work is still worth
    reusing.
    """
    if keep < 1:
        raise ValueError("keep at least one run")
    paths = run_records(state)
    report = GcReport()
    if not paths:
        return report
    kept, expired = [load_record(p) for p in paths[-keep:]], [load_record(p) for p in paths[:-keep]]
    report.kept, report.dropped = len(kept), len(expired)
    before = store_size(state).bytes

    live_packs: dict[str, set[str]] = {}
    for record in kept:
        for pack, tasks in record.packs.items():
            live_packs.setdefault(pack, set()).update(tasks)
    live_results = {key for record in kept for key in record.results}
    live_results.update(task for tasks in live_packs.values() for task in tasks)
    live_artifacts = {name for record in kept for name in record.artifacts}

    results = state / "prefect"
    if results.is_dir():
        for entry in os.scandir(results):
            if entry.is_file() and entry.name not in live_results:
                os.unlink(entry.path)
                report.results += 1

    for name in sorted({name for record in expired for name in record.artifacts} - live_artifacts):
        target = state / name
        if target.is_file():
            target.unlink()
            report.files += 1
        elif target.is_dir():
            report.files += sum(len(names) for _, _, names in os.walk(target))
            shutil.rmtree(target)

    root = state / "store"
    for kind in FILE_PER_RECORD_KINDS:
        if (root / kind).is_dir():
            report.files += sum(len(names) for _, _, names in os.walk(root / kind))
            shutil.rmtree(root / kind)
    for level in levels(root):
        folder = root / str(level)
        report.packs += len(list(folder.glob("*.sqlite")))
        shutil.rmtree(folder)
    for path in packs_of(root):
        tasks = live_packs.get(path.stem)
        if not tasks:
            path.unlink()
            Path(f"{path}-journal").unlink(missing_ok=True)
            report.packs += 1
            continue
        store = Store(connect(path), path, track=False)
        try:
            report.records += store.collect(tasks)
        finally:
            store.release()

    for path in paths[:-keep]:
        path.unlink()
    report.freed = max(0, before - store_size(state).bytes)
    return report


def store_size(state: Path) -> StoreSize:
    """Files and bytes under `state` (the output's `.textmill`), but for the run lock's own files."""
    size = StoreSize()
    for folder, _, names in os.walk(state):
        for name in names:
            if folder == str(state) and name in LOCK_FILES:
                continue
            try:
                size.bytes += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
            size.files += 1
    return size
