"""The store on real runs: one pack per shard, what garbage collection keeps, a growing and shrinking corpus."""
from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import shared_path
from flowkit import computed, records, run_flow, set_option, shards_of, task_run_states

from textmill.flows.shard import IDS_KIND

pytestmark = pytest.mark.slow

STEPS = 'steps = ["clean", "dedupe", "language", "publish"]'


def pipeline(config: Path, shard_size: int, keep_runs: int = 3) -> Path:
    """The config copy without entities (fast), with `shard_size` and `keep_runs`."""
    set_option(config, "pipeline", STEPS)
    set_option(config, "run", f"shard_size = {shard_size}")
    set_option(config, "run", f"keep_runs = {keep_runs}")
    return config


def packs(out: Path) -> dict[str, Path]:
    """Shard number -> its pack file."""
    root = out / ".textmill" / "store"
    return {int(p.stem): p for p in sorted(root.glob("*.sqlite"))}


def keys(out: Path, every_kind: bool = False) -> dict[str, set[str]]:
    """Every stored key, by kind, over all packs; unless `every_kind`, not the ids a run's corpus
    step summarized for the first time (`idlists`): they record that run, not the corpus."""
    found: dict[str, set[str]] = {}
    for path in packs(out).values():
        with sqlite3.connect(path) as db:
            tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                if table != "uses" and (every_kind or table != IDS_KIND):
                    found.setdefault(table, set()).update(k for (k,) in db.execute(f"SELECT key FROM {table}"))
    return found


def state_files(out: Path) -> list[Path]:
    return [p for p in (out / ".textmill").rglob("*") if p.is_file() and p.name not in ("lock", "lock.holder")]


def write_articles(folder: Path, count: int, start: int = 0) -> None:
    """Short English texts of random words: no two are near-duplicates."""
    folder.mkdir(parents=True, exist_ok=True)
    words = (
        "the council said on monday that its plan for the harbour and the river bridge would cost more than "
        "expected while residents of the old district asked why the school the museum and the railway station "
        "had waited so long for repairs after a wet winter and a difficult year for local shops and markets"
    ).split()
    for i in range(start, start + count):
        rng = random.Random(i)
        (folder / f"article-{i:04d}.txt").write_text(" ".join(rng.choice(words) for _ in range(80)) + ".\n")


def test_store_files_grow_with_shards_not_documents(prefect_server: None, config_copy: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    bbc = shared_path("corpora", "bbc")
    corpus.mkdir()
    for source in sorted((bbc / "business").glob("*.txt"))[:240]:
        shutil.copy(source, corpus / source.name)
    out = tmp_path / "out"
    manifest = run_flow(corpus, out, pipeline(config_copy, shard_size=30))
    assert manifest["documents"] == 240
    assert sorted(packs(out)) == list(range(8))
    files = state_files(out)
    store = [p for p in files if p.relative_to(out / ".textmill").parts[0] == "store"]
    assert len(store) == 8, "one pack per shard holds every record of every step"
    # Besides the packs: per shard a cached result per task and a publish state, the corpus
    # step's bundle folders and partitions; far fewer files than the 240 x 5 records they hold.
    assert len(files) < 240, sorted(str(p.relative_to(out)) for p in files)
    assert manifest["store"] == {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    stored = keys(out)
    assert len(stored["docs"]) >= 240 * 3 and len(stored["listings"]) == 240 and len(stored["summaries"]) >= 200


def test_gc_after_an_edit_keeps_exactly_what_a_cold_run_stores(
    prefect_server: None, seeds_copy: Path, config_copy: Path, tmp_path: Path
) -> None:
    config = pipeline(config_copy, shard_size=2, keep_runs=1)
    out = tmp_path / "out"
    run_flow(seeds_copy, out, config)
    before = keys(out)
    edited = seeds_copy / "002_8a38857d99c895f8.txt"
    edited.write_text(edited.read_text() + "\nA closing line added by the editor, long enough to change the text.\n")
    edit_run = run_flow(seeds_copy, out, config)
    assert computed(edit_run)["clean"] == 1

    fresh = tmp_path / "fresh"
    run_flow(seeds_copy, fresh, config)
    after = keys(out)
    assert after == keys(fresh)
    assert after != before and before["docs"] - after["docs"], "the edited file's old records are gone"
    records_left = list((out / ".textmill" / "runs").iterdir())
    assert len(records_left) == 1
    named = set(json.loads(records_left[0].read_text())["results"])
    assert {p.name for p in (out / ".textmill" / "prefect").iterdir()} <= named, "only the kept run's cached results"
    folders = {p.name for p in (out / ".textmill" / "bundles" / "dedupe").iterdir()}
    assert folders == {p.name for p in (fresh / ".textmill" / "bundles" / "dedupe").iterdir()}, (
        "the edited shard's old bundle folder is gone; one per shard is left, as a cold run leaves"
    )

    warm = run_flow(seeds_copy, out, config)
    assert computed(warm) == {"clean": 0, "dedupe": 0, "language": 0, "publish": 0}
    assert warm["read"]["computed"] == 0
    assert records(out) == records(fresh)


def test_a_cached_shards_rows_survive_gc(prefect_server: None, seeds_copy: Path, config_copy: Path, tmp_path: Path) -> None:
    config = pipeline(config_copy, shard_size=2, keep_runs=1)
    out = tmp_path / "out"
    run_flow(seeds_copy, out, config, workers=1)
    by_shard = {n: keys_of(path) for n, path in packs(out).items()}
    assert sorted(by_shard) == [0, 1, 2] and list(shards_of(out).values()).count(2) == 1
    (seeds_copy / "harvest.txt").write_text("A short note on the harvest in the valley, written for this test alone.\n")
    second = run_flow(seeds_copy, out, config, workers=1)
    assert second["read"]["computed"] == 1
    assert shards_of(out)["harvest.txt"] == 2, "a new file tops up the last shard"
    # 3 shards x (read, clean, dedupe summary and apply, language, publish), 2 dedupe
    # partitions, the index, discover, publish's finish and gc.
    states = task_run_states(second["run_id"], expected=24)
    untouched = {name for name, state in states.items() if name.startswith("read-") and state == "Cached"}
    assert untouched == {"read-0", "read-1"}, states
    for shard in (0, 1):
        assert all(states[f"{step}-{shard}"] == "Cached" for step in ("clean", "language", "publish")), states
        # The run before is no longer kept, yet the shard it computed and this run only cached keeps every row.
        assert keys_of(packs(out)[shard]) == by_shard[shard]
    third = run_flow(seeds_copy, out, config, workers=1)
    assert computed(third) == {"clean": 0, "dedupe": 0, "language": 0, "publish": 0}


def keys_of(pack: Path) -> set[str]:
    with sqlite3.connect(pack) as db:
        return {k for table in ("docs", "summaries", "listings") for (k,) in db.execute(f"SELECT key FROM {table}")}


def test_new_files_fill_new_shards_and_every_file_keeps_its_shard(
    prefect_server: None, config_copy: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    write_articles(corpus, 8)
    config = pipeline(config_copy, shard_size=2, keep_runs=1)
    out = tmp_path / "out"
    first = run_flow(corpus, out, config)
    assert sorted(packs(out)) == [0, 1, 2, 3]
    assert computed(first)["clean"] == 8
    assigned = shards_of(out)

    write_articles(corpus, 3, start=8)
    grown = run_flow(corpus, out, config)
    assert sorted(packs(out)) == [0, 1, 2, 3, 4, 5]
    assert {k: v for k, v in shards_of(out).items() if k in assigned} == assigned
    assert grown["read"]["computed"] == 3
    assert computed(grown) == {"clean": 3, "dedupe": 3, "language": 3, "publish": 3}, "old shards publish nothing"
    assert grown["counts"] == {"ok": 11}
    # 6 shards x (read, clean, dedupe summary and apply, language, publish), 4 dedupe
    # partitions (as with 4 shards), the index, discover, publish's finish and gc.
    states = task_run_states(grown["run_id"], expected=44)
    old = {f"{stage}-{n}" for stage in ("read", "clean", "dedupe-summarize", "dedupe", "language", "publish") for n in range(4)}
    assert {name: states[name] for name in old} == dict.fromkeys(old, "Cached"), (
        "a new index that decides nothing new for the old shards leaves every one of their tasks Cached"
    )

    for path in sorted(corpus.iterdir())[:8]:  # shards 0-3 empty: their packs go with the run that used them
        path.unlink()
    shrunk = run_flow(corpus, out, config)
    assert sorted(packs(out)) == [4, 5]
    assert shrunk["read"]["computed"] == 0
    assert computed(shrunk) == {"clean": 0, "dedupe": 0, "language": 0, "publish": 0}
    assert shrunk["published"]["sqlite"]["deleted"] == 8
    fresh = tmp_path / "fresh"
    run_flow(corpus, fresh, config)
    assert keys(out) == keys(fresh)
    assert records(out) == records(fresh)

    set_option(config, "run", "shard_size = 500")  # applies to shards being filled
    resized = run_flow(corpus, out, config)
    assert resized["read"]["computed"] == 0 and computed(resized) == {"clean": 0, "dedupe": 0, "language": 0, "publish": 0}
    assert sorted(set(shards_of(out).values())) == [4, 5]


def test_textmill_gc_reports_what_it_removed(prefect_server: None, seeds_copy: Path, config_copy: Path, tmp_path: Path) -> None:
    from textmill.flows.cli import app

    config = pipeline(config_copy, shard_size=500)
    out = tmp_path / "out"
    run_flow(seeds_copy, out, config)
    edited = seeds_copy / "002_8a38857d99c895f8.txt"
    edited.write_text(edited.read_text() + "\nA closing line added by the editor, long enough to change the text.\n")
    run_flow(seeds_copy, out, config)
    before = keys(out, every_kind=True)
    earlier_layout = out / ".textmill" / "store" / "docs" / "ab"  # one gzip file per record, before packs
    earlier_layout.mkdir(parents=True)
    (earlier_layout / f"ab{'0' * 62}.json.gz").write_bytes(b"")
    result = CliRunner().invoke(app, ["gc", str(out), "--keep", "1", "--config", str(config)])
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith("gc: kept 1 runs, dropped 1; removed ") and line.endswith(" freed"), line
    removed = before["docs"] - keys(out)["docs"]
    counts = dict(part.split(" ", 1)[::-1] for part in line.split("removed ", 1)[1].split(";")[0].split(", "))
    assert int(counts["store records"]) == sum(len(before[k] - keys(out, every_kind=True).get(k, set())) for k in before) > 0
    assert removed, "the first run's records of the edited file are gone"
    assert not earlier_layout.parent.exists()
    again = CliRunner().invoke(app, ["gc", str(out), "--keep", "1", "--config", str(config)])
    assert "removed 0 store records, 0 packs, 0 cached task results, 0 files" in again.output
    assert run_flow(seeds_copy, out, config)["read"]["computed"] == 0

    empty = tmp_path / "empty"
    empty.mkdir()
    missing = CliRunner().invoke(app, ["gc", str(empty)])
    assert missing.exit_code == 2 and "holds no textmill state" in missing.output
    assert not os.listdir(empty)
