"""Publishing per shard: a change rewrites only its shard's parts; SQLite is updated in place."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pytest

from conftest import published_files
from flowkit import computed, records, run_flow, set_option, shards_of, task_run_states
from textmill.flows.store import Store
from textmill.tasks.base import block_of

pytestmark = pytest.mark.slow


@pytest.fixture
def config(config_copy: Path) -> Path:
    set_option(config_copy, "pipeline", 'steps = ["clean", "dedupe", "language", "publish"]')
    set_option(config_copy, "run", "shard_size = 2")
    return config_copy


def parts_of(out: Path, shard: int) -> set[str]:
    return {f"jsonl/part-{shard:05d}.jsonl", f"documents/part-{shard:05d}.parquet", f"entities/part-{shard:05d}.parquet"}


def sqlite_rows(out: Path) -> dict[str, tuple]:
    with sqlite3.connect(out / "textmill.sqlite") as db:
        return {row[0]: row for row in db.execute("SELECT id, status, text, cluster FROM documents")}


def test_a_change_rewrites_only_its_shard_and_sqlite_in_place(
    prefect_server: None, seeds_copy: Path, config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = run_flow(seeds_copy, out, config, workers=1)
    shard_of = shards_of(out)
    shards = set(shard_of.values())
    assert shards == {0, 1, 2}, "five seeds in id order, two to a shard"
    before = published_files(out)
    assert set(before) == {name for n in shards for name in parts_of(out, n)} | {"textmill.sqlite"}
    database = (out / "textmill.sqlite").stat().st_ino

    edited = next(p for p in sorted(seeds_copy.iterdir()) if p.name.startswith("003"))
    edited.write_text(edited.read_text() + "\nA closing line added by the newsroom on a later day.\n")
    second = run_flow(seeds_copy, out, config, workers=1)
    after = published_files(out)
    assert shards_of(out) == shard_of, "an edit keeps every file's shard"
    touched = parts_of(out, shard_of[edited.name])
    members = sum(1 for n in shard_of.values() if n == shard_of[edited.name])
    assert {name for name in after if after[name] != before[name]} == {
        f"jsonl/part-{shard_of[edited.name]:05d}.jsonl",
        f"documents/part-{shard_of[edited.name]:05d}.parquet",
        "textmill.sqlite",
    }, "the entities part is unchanged (no entities step), every other shard untouched"
    assert touched & set(after)
    assert second["steps"]["publish"]["computed"] == members
    assert second["steps"]["publish"]["cached"] == 5 - members
    assert second["published"]["sqlite"] == {"inserted": 0, "updated": 1, "unchanged": 4, "deleted": 0}
    assert (out / "textmill.sqlite").stat().st_ino == database, "updated in place, not rebuilt"
    assert "A closing line added" in records(out)[edited.name]["text"]
    assert sqlite_rows(out)[edited.name][2] == records(out)[edited.name]["text"]
    assert first["counts"] == second["counts"]

    third = run_flow(seeds_copy, out, config, workers=1)
    expected = {f"publish-{n}": "Cached" for n in shards}
    deadline = time.monotonic() + 120
    while True:  # task runs reach the server a little after the flow returns (later under load)
        states = task_run_states(third["run_id"], expected=1)
        published = {name: state for name, state in states.items() if name.startswith("publish-")}
        if published.keys() == expected.keys() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert published == expected, "the shard written last run is Cached now: its task ran under the key it has since"


def test_deletions_remove_rows_and_removed_shards_lose_their_parts(
    prefect_server: None, seeds_copy: Path, config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_flow(seeds_copy, out, config, workers=1)
    removed = next(p for p in sorted(seeds_copy.iterdir()) if p.name.startswith("002"))
    removed.unlink()
    manifest = run_flow(seeds_copy, out, config, workers=1)
    assert manifest["documents"] == 4
    assert manifest["published"]["sqlite"]["deleted"] == 1
    assert removed.name not in records(out)
    assert removed.name not in sqlite_rows(out)
    assert removed.name not in set(pd.read_parquet(out / "documents")["id"])
    with sqlite3.connect(out / "textmill.sqlite") as db:
        db.execute("INSERT INTO documents_fts(documents_fts) VALUES ('integrity-check')")  # raises if out of step
        found = db.execute(
            "SELECT d.id FROM documents_fts f JOIN documents d ON d.rowid = f.rowid WHERE documents_fts MATCH 'Putin'"
        ).fetchall()
    assert {i for (i,) in found} == set(records(out)), "every remaining seed mentions Putin; the removed one is gone"

    last = next(p for p in sorted(seeds_copy.iterdir()) if p.name.startswith("004"))
    assert shards_of(out)[last.name] == 2 and list(shards_of(out).values()).count(2) == 1
    last.unlink()  # shard 2's only file: its parts must go
    two = run_flow(seeds_copy, out, config, workers=1)
    assert two["documents"] == 3
    assert sorted(p.name for p in (out / "documents").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert sorted(p.name for p in (out / "jsonl").iterdir()) == ["part-00000.jsonl", "part-00001.jsonl"]
    assert sorted(p.name for p in (out / ".textmill" / "publish").glob("shard-*.json")) == ["shard-0.json", "shard-1.json"]
    assert set(records(out)) == set(sqlite_rows(out)) == {p.name for p in seeds_copy.iterdir()}


def test_the_dataset_reads_as_one_table_with_the_records_and_a_warm_run_reads_no_record(
    prefect_server: None, seeds_copy: Path, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    run_flow(seeds_copy, out, config, workers=1)
    recs = records(out)
    frame = pd.read_parquet(out / "documents").set_index("id")
    assert sorted(frame.index) == sorted(recs) and len(list((out / "documents").iterdir())) > 1
    assert {i: (r["status"], r["text"], r["cluster"]) for i, r in recs.items()} == {
        i: (row["status"], row["text"], row["cluster"]) for i, row in frame.iterrows()
    }
    assert sorted(duckdb.sql(f"SELECT id FROM '{out}/documents/*.parquet'").fetchall()) == [(i,) for i in sorted(recs)]
    assert sorted(pl.read_parquet(f"{out}/documents/*.parquet")["id"].to_list()) == sorted(recs)
    assert set(sqlite_rows(out)) == set(recs)
    before = published_files(out)

    def refuse(self: Store, key: str) -> None:
        raise AssertionError(f"a warm run read record {key}")

    monkeypatch.setattr(Store, "get_doc", refuse)
    warm = run_flow(seeds_copy, out, config, workers=1)
    assert computed(warm)["publish"] == 0 and warm["steps"]["publish"]["cached"] == 5
    assert warm["counts"] == {"duplicate": 2, "ok": 3}
    assert published_files(out) == before


def clusters_as_built(out: Path) -> tuple[set[tuple], set[tuple]]:
    """`textmill.sqlite`'s clusters table, and the same table computed from its documents."""
    with sqlite3.connect(out / "textmill.sqlite") as db:
        table = set(db.execute("SELECT id, canonical, size FROM clusters"))
        computed_now = set(db.execute(
            "SELECT cluster, coalesce(min(id) FILTER (WHERE duplicate_of IS NULL), cluster), count(*) FROM documents"
            " WHERE cluster IS NOT NULL GROUP BY cluster HAVING count(*) > 1"
        ))
    return table, computed_now


def digests_as_built(out: Path) -> tuple[str, str]:
    """The last run's `content_digest` in `textmill.sqlite`, and the digest summed from every row."""
    from textmill.tasks.sinks import content_sum

    with sqlite3.connect(out / "textmill.sqlite") as db:
        (recorded,) = db.execute("SELECT content_digest FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()
        return recorded, f"{content_sum(db):064x}"


def checked_as_built(out: Path) -> set[tuple]:
    """`textmill.sqlite`'s clusters table, checked to equal the one computed from its documents,
    with the last run's content digest checked to equal the one summed from every row."""
    recorded, summed = digests_as_built(out)
    assert recorded == summed
    table, expected = clusters_as_built(out)
    assert table == expected, (table, expected)
    return table


def test_clusters_follow_additions_edits_and_deletions_in_place(
    prefect_server: None, seeds_copy: Path, config: Path, tmp_path: Path
) -> None:
    """The clusters table is refreshed for the clusters the changed and deleted rows touch, and
    the content digest moved by the rows changed; after each run both equal what is computed
    from every document."""
    out = tmp_path / "out"
    names = sorted(p.name for p in seeds_copy.iterdir())
    run_flow(seeds_copy, out, config, workers=1)
    table = checked_as_built(out)
    assert len(table) == 1, table
    canonical = next(iter(table))[1]

    # The canonical member goes and a copy of another seed arrives in the same run.
    (seeds_copy / canonical).unlink()
    (seeds_copy / "005_copy.txt").write_bytes((seeds_copy / names[2]).read_bytes())
    manifest = run_flow(seeds_copy, out, config, workers=1)
    assert manifest["published"]["sqlite"]["deleted"] == 1
    table = checked_as_built(out)
    assert len(table) == 2 and canonical not in {name for row in table for name in row[:2]}, table
    assert canonical not in sqlite_rows(out)

    # Only an addition: no row to delete, a new cluster.
    (seeds_copy / "006_copy.txt").write_bytes((seeds_copy / names[3]).read_bytes())
    manifest = run_flow(seeds_copy, out, config, workers=1)
    assert manifest["published"]["sqlite"]["deleted"] == 0
    table = checked_as_built(out)
    assert len(table) == 3, table

    # A longer version of a clustered seed: it becomes the canonical member, the cluster is
    # renamed after it, and no row is deleted.
    longer = (seeds_copy / names[3]).read_text() + "\nA further paragraph on what officials said the next morning.\n"
    (seeds_copy / "007_longer.txt").write_text(longer)
    manifest = run_flow(seeds_copy, out, config, workers=1)
    assert manifest["published"]["sqlite"]["deleted"] == 0
    table = checked_as_built(out)
    assert ("007_longer.txt", "007_longer.txt", 3) in table, table

    # A deletion that leaves a cluster of one: its row goes.
    (seeds_copy / "005_copy.txt").unlink()
    run_flow(seeds_copy, out, config, workers=1)
    table = checked_as_built(out)
    assert len(table) == 2, table
    assert set(sqlite_rows(out)) == {p.name for p in seeds_copy.iterdir()}


def test_a_shard_larger_than_part_size_is_written_in_blocks_and_a_change_rewrites_only_its_block(
    prefect_server: None, seeds_copy: Path, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five seeds in one shard, `part_size = 1`: eight blocks by a hash of the id. An edit
    rewrites the parts of its block and reads no other record; a deletion that empties a block
    removes its parts; the dataset always equals a publish from scratch."""
    set_option(config, "run", "shard_size = 5")
    set_option(config, "steps.publish", "part_size = 1")
    out = tmp_path / "out"
    first = run_flow(seeds_copy, out, config, workers=1)
    ids = sorted(shards_of(out))
    blocks = {doc_id: block_of(doc_id, 8) for doc_id in ids}

    def block_parts(block: int) -> set[str]:
        return {f"jsonl/part-00000-{block:03d}.jsonl", f"documents/part-00000-{block:03d}.parquet",
                f"entities/part-00000-{block:03d}.parquet"}

    before = published_files(out)
    assert set(before) == {name for b in set(blocks.values()) for name in block_parts(b)} | {"textmill.sqlite"}
    assert first["published"]["sqlite"] == {"inserted": 5, "updated": 0, "unchanged": 0, "deleted": 0}

    edited = next(p for p in sorted(seeds_copy.iterdir()) if p.name.startswith("003"))
    edited.write_text(edited.read_text() + "\nA closing line added by the newsroom on a later day.\n")
    block = blocks[edited.name]
    neighbours = {doc_id for doc_id, b in blocks.items() if b == block}
    real_get_doc = Store.get_doc
    read: list[str] = []

    def get_doc(self: Store, key: str) -> Any:
        doc = real_get_doc(self, key)
        read.append(doc.id)
        return doc

    monkeypatch.setattr(Store, "get_doc", get_doc)
    second = run_flow(seeds_copy, out, config, workers=1)
    after = published_files(out)
    changed = {name for name in after if after[name] != before[name]}
    assert changed <= block_parts(block) | {"textmill.sqlite"} and f"jsonl/part-00000-{block:03d}.jsonl" in changed
    assert (second["steps"]["publish"]["computed"], second["steps"]["publish"]["cached"]) == (len(neighbours), 5 - len(neighbours))
    assert second["published"]["sqlite"] == {"inserted": 0, "updated": 1, "unchanged": 4, "deleted": 0}
    assert set(read) <= neighbours, "the steps read the edited record, and the publish only the records of its block"
    assert "A closing line added" in records(out)[edited.name]["text"]
    monkeypatch.undo()

    alone = [doc_id for doc_id in ids if list(blocks.values()).count(blocks[doc_id]) == 1 and doc_id != edited.name]
    (seeds_copy / alone[0]).unlink()
    third = run_flow(seeds_copy, out, config, workers=1)
    assert third["published"]["sqlite"]["deleted"] == 1
    assert not block_parts(blocks[alone[0]]) & set(published_files(out)), "the emptied block's parts are gone"

    scratch = tmp_path / "scratch"
    run_flow(seeds_copy, scratch, config, workers=1)
    assert records(out) == records(scratch)
    assert sqlite_rows(out) == sqlite_rows(scratch)
    for folder in ("documents", "entities"):
        assert sorted(duckdb.sql(f"SELECT * FROM '{out}/{folder}/*.parquet'").fetchall()) == sorted(
            duckdb.sql(f"SELECT * FROM '{scratch}/{folder}/*.parquet'").fetchall()
        )

    set_option(config, "steps.publish", "part_size = 1024")
    run_flow(seeds_copy, out, config, workers=1)
    assert set(published_files(out)) == parts_of(out, 0) | {"textmill.sqlite"}, "the blocks' parts gave way to the shard's"
    assert records(out) == records(scratch)


@pytest.mark.parametrize(
    ("records_", "previous", "expected"),
    [(1, None, 1), (1024, None, 1), (1025, None, 2), (1563, None, 2), (15_625, None, 16),
     (2048, 1, 1), (2049, 1, 4), (600, 2, 2), (512, 2, 1), (4096, 2, 2), (4097, 2, 8)],
)
def test_a_shard_keeps_its_block_count_while_its_blocks_hold_a_quarter_to_twice_part_size(
    records_: int, previous: int | None, expected: int
) -> None:
    from textmill.tasks.publish import Publisher

    assert Publisher().blocks(records_, previous) == expected
