"""Corpus indexes updated by an incremental run equal a from-scratch run over the same corpus.

Real Prefect runs over a small corpus in many shards (so the dedupe index has several
partitions): run, then add, edit and delete files, run again into the same output folder,
and compare every record's cluster, `duplicate_of` and canonical entity names with a run
over the final corpus into a fresh folder.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import SEEDS, shared_path
from flowkit import records, run_flow, set_option, shards_of

pytestmark = pytest.mark.slow

SEED_CANONICAL = "001_08a746c966a0006a.txt"


def words(relative: str) -> list[str]:
    return shared_path("corpora", "bbc", relative).read_text(encoding="utf-8").split()


def write_corpus(root: Path) -> None:
    """The seeds' cluster, a truncated-copy chain held together by its full article, exact and
    edited copies, unrelated articles, and a name whose canonical form only one file holds."""
    shutil.copytree(SEEDS, root)
    a, b = words("politics/290.txt"), words("business/010.txt")
    edited = list(a)
    edited[40] = "zebra"
    files = {
        "a.txt": " ".join(a),
        "a-copy.txt": " ".join(a),
        "a-edit.txt": " ".join(edited),
        "b-full.txt": " ".join(b),
        "b-head.txt": " ".join(b[: len(b) // 2]),
        "b-tail.txt": " ".join(b[len(b) // 2 :]),
        "c.txt": " ".join(words("tech/020.txt")),
        "s.txt": " ".join(words("sport/001.txt")),
        "k-full.txt": "Agnieszka Kowalczyk, the city's treasurer, presented the budget on Monday in Leeds.",
        "k-short.txt": "Kowalczyk said the budget was balanced, and the council agreed with Kowalczyk.",
    }
    for name, text in files.items():
        (root / name).write_text(text + "\n", encoding="utf-8")


def change_corpus(root: Path) -> None:
    """Delete the chain's middle (its cluster splits), the seeds' canonical and the full name;
    lengthen a-edit (it becomes its cluster's canonical); add a copy of an unrelated article."""
    for name in ("b-full.txt", SEED_CANONICAL, "k-full.txt"):
        (root / name).unlink()
    with (root / "a-edit.txt").open("a", encoding="utf-8") as fh:
        fh.write("And a closing paragraph that only this copy of the article carries.\n")
    shutil.copy(root / "c.txt", root / "c-copy.txt")


def outcome(out: Path) -> dict[str, Any]:
    """Per record: status, cluster, duplicate_of and the canonical name of each entity."""
    return {
        doc_id: (
            r["status"],
            r["cluster"],
            r["duplicate_of"],
            sorted((e["start"], e["label"], e["canonical"]) for e in r["entities"]),
        )
        for doc_id, r in records(out).items()
    }


def canonical_of(result: dict[str, Any], doc_id: str, text_start: int = 0) -> str | None:
    return next(c for start, _, c in result[doc_id][3] if start == text_start)


def test_incremental_corpus_indexes_equal_a_fresh_run(
    prefect_server: None, config_copy: Path, tmp_path: Path
) -> None:
    set_option(config_copy, "run", "shard_size = 3")
    set_option(config_copy, "steps.publish", 'formats = ["jsonl"]')
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    write_corpus(corpus)
    first_manifest = run_flow(corpus, out, config_copy)
    first = outcome(out)
    assert first["b-head.txt"][1] == first["b-tail.txt"][1] == "b-full.txt"
    assert first["a-edit.txt"][1] == "a-copy.txt"
    assert first["000_06b6d598dca07507.txt"][1] == SEED_CANONICAL
    assert canonical_of(first, "k-short.txt") == "Agnieszka Kowalczyk"
    states = sorted((out / ".textmill" / "indexes" / "dedupe" / "state").glob("*/p*/state.json"))
    assert len(states) > 1, "the dedupe index should run in several partitions here"

    change_corpus(corpus)
    second_manifest = run_flow(corpus, out, config_copy)
    incremental = outcome(out)
    fresh_out = tmp_path / "fresh"
    run_flow(corpus, fresh_out, config_copy)
    assert incremental == outcome(fresh_out)

    assert incremental["b-head.txt"][1:3] == ("b-head.txt", None)
    assert incremental["b-tail.txt"][1:3] == ("b-tail.txt", None)
    assert incremental["a.txt"][1:3] == ("a-edit.txt", "a-edit.txt")
    assert incremental["c-copy.txt"][1] == incremental["c.txt"][1]
    assert incremental["000_06b6d598dca07507.txt"][1] != SEED_CANONICAL
    assert canonical_of(incremental, "k-short.txt") == "Kowalczyk"
    assert second_manifest["steps"]["dedupe"]["computed"] == 2  # a-edit and c-copy only
    assert first_manifest["steps"]["dedupe"]["computed"] == 15
    # Each partition updated the state it kept (same partitions) to the bundles of the run that
    # kept it (files keep their shards, so these are not the fresh run's bundles).
    assert sorted((out / ".textmill" / "indexes" / "dedupe" / "state").glob("*/p*/state.json")) == states
    record = json.loads(sorted((out / ".textmill" / "runs").glob("*.json"))[-1].read_text())
    final = sorted(Path(name).name for name in record["artifacts"] if name.startswith("bundles/dedupe/"))
    assert len(final) == len(set(shards_of(out).values())), "one bundle per shard"
    for state in states:
        assert json.loads(state.read_text())["inputs"] == final


def test_partitions_reduced_in_groups_give_the_index_of_one_task_per_partition(
    prefect_server: None, config_copy: Path, tmp_path: Path
) -> None:
    from flowkit import task_run_states

    set_option(config_copy, "run", "shard_size = 1")
    set_option(config_copy, "steps.publish", 'formats = ["jsonl"]')
    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    grouped = run_flow(corpus, tmp_path / "grouped", config_copy, workers=1)  # 15 shards, 8 partitions: 4 groups of 2
    expected = {f"dedupe-partitions-{p}-{p + 1}" for p in range(0, 8, 2)}
    deadline = time.monotonic() + 30
    while True:  # task runs reach the server a little after the flow returns
        partition_tasks = {n for n in task_run_states(grouped["run_id"], expected=1) if n.startswith("dedupe-partition")}
        if partition_tasks == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert partition_tasks == expected
    run_flow(corpus, tmp_path / "single", config_copy, workers=2)  # 8 groups of one partition
    assert outcome(tmp_path / "grouped") == outcome(tmp_path / "single")
    assert outcome(tmp_path / "grouped")["b-head.txt"][1] == "b-full.txt"
