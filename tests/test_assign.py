"""Shard assignment: files keep their shard, new files fill new shards, large corpora get larger shards."""
from __future__ import annotations

from pathlib import Path

from textmill.flows.assign import ShardMap, top_up
from textmill.tasks.read import SourceFile


def files(*ids: str) -> list[SourceFile]:
    return [SourceFile(id=i, sha256="0" * 64, size=1) for i in ids]


def ids(members: dict[int, list[SourceFile]]) -> dict[int, list[str]]:
    return {n: [src.id for src in group] for n, group in members.items()}


def test_a_first_run_fills_shards_in_id_order() -> None:
    members = ShardMap().assign(files("e", "a", "d", "b", "c"), shard_size=2, max_shards=64)
    assert ids(members) == {0: ["a", "b"], 1: ["c", "d"], 2: ["e"]}


def test_new_files_top_up_the_last_shard_then_open_new_ones_and_edits_and_deletions_move_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shards.json"
    first = ShardMap()
    first.assign(files("a", "b", "c", "d", "e"), shard_size=2, max_shards=64)
    first.save(path)

    again = ShardMap.load(path)
    members = again.assign(files("a", "c", "d", "e", "0-new", "f", "g"), shard_size=2, max_shards=64)
    assert ids(members) == {0: ["a"], 1: ["c", "d"], 2: ["e", "0-new"], 3: ["f", "g"]}, (
        "b's removal leaves shard 0 thinner; a new id that sorts first still goes to the end"
    )
    assert again.shards == {"a": 0, "c": 1, "d": 1, "e": 2, "0-new": 2, "f": 3, "g": 3}


def test_the_map_file_is_rewritten_only_when_the_map_changed(tmp_path: Path) -> None:
    path = tmp_path / "shards.json"
    first = ShardMap()
    first.assign(files("a", "b", "c"), shard_size=2, max_shards=64)
    first.save(path)
    written = path.stat().st_ino, path.stat().st_mtime_ns
    same = ShardMap.load(path)
    same.assign(files("a", "b", "c"), shard_size=2, max_shards=64)
    same.save(path)
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == written
    grown = ShardMap.load(path)
    grown.assign(files("a", "b", "c", "d"), shard_size=2, max_shards=64)
    grown.save(path)
    assert ShardMap.load(path).shards == {"a": 0, "b": 0, "c": 1, "d": 1}
    path.unlink()
    grown.save(path)
    assert ShardMap.load(path).shards == {"a": 0, "b": 0, "c": 1, "d": 1}, "a lost file is written again"


def test_a_shard_emptied_by_deletions_is_gone_and_a_changed_shard_size_applies_to_shards_being_filled() -> None:
    shard_map = ShardMap()
    shard_map.assign(files("a", "b", "c", "d"), shard_size=2, max_shards=64)
    members = shard_map.assign(files("a", "b", "x", "y", "z"), shard_size=3, max_shards=64)
    assert ids(members) == {0: ["a", "b", "x"], 1: ["y", "z"]}, "shard 1 (c, d) is gone; its number is reused"


def test_past_max_shards_new_shards_grow() -> None:
    members = ShardMap().assign(files(*(f"{n:03}" for n in range(100))), shard_size=10, max_shards=4)
    assert [len(group) for group in members.values()] == [25, 25, 25, 25]


def test_an_unreadable_or_foreign_map_is_a_first_run(tmp_path: Path) -> None:
    path = tmp_path / "shards.json"
    for text in ("not json", '{"format": 99, "shards": {"a": 5}}', '{"format": 1, "shards": {"a": -1}}', "[]"):
        path.write_text(text)
        assert ShardMap.load(path).shards == {}
    assert ShardMap.load(tmp_path / "missing.json").shards == {}


def test_new_shards_share_the_new_files_evenly_and_few_of_them_spread_over_the_workers() -> None:
    first = ShardMap().assign(files(*(f"a{n:03}" for n in range(45))), shard_size=10, max_shards=64, workers=2)
    assert [len(group) for group in first.values()] == [8, 8, 8, 7, 7, 7], "six shards, not five: three per worker"
    shard_map = ShardMap()
    shard_map.assign(files(*(f"a{n:03}" for n in range(40))), shard_size=10, max_shards=2, workers=2)
    grown = shard_map.assign(
        files(*(f"a{n:03}" for n in range(40)), *(f"b{n:03}" for n in range(30))), shard_size=10, max_shards=2, workers=2
    )
    assert [len(group) for group in grown.values()] == [35, 35], (
        "the last shards (one per worker) topped up to the new capacity (70 / 2), 15 new files each"
    )
    few = ShardMap().assign(files(*(f"c{n:03}" for n in range(9))), shard_size=20, max_shards=64, workers=4)
    assert [len(group) for group in few.values()] == [9], "no new shard below half of shard_size for a worker's sake"


def test_files_added_run_after_run_top_up_one_shard_per_worker() -> None:
    """A schedule adding files each run: every run's new files go to as many shards as there are
    workers, so no run leaves a core idle, and shards open only once those are full."""
    shard_map = ShardMap()
    corpus = [f"{n:05}" for n in range(6400)]
    shard_map.assign(files(*corpus), shard_size=100, max_shards=1000, workers=2)
    sizes = []
    for run in range(3):
        corpus += [f"new{run}-{n:03}" for n in range(100)]
        members = shard_map.assign(files(*corpus), shard_size=100, max_shards=1000, workers=2)
        new = {n: len([s for s in group if s.id.startswith(f"new{run}-")]) for n, group in members.items()}
        sizes.append({n: k for n, k in new.items() if k})
    assert sizes[0] == {64: 50, 65: 50}, "the first addition opens one shard per worker"
    assert sizes[1] == {64: 50, 65: 50}, "the next one tops up both, not the last alone"
    assert sizes[2] == {66: 50, 67: 50}, "full at 100: new shards again"


def test_full_shards_are_not_reopened_for_the_sliver_a_growing_capacity_gives_them() -> None:
    """Past `max_shards`, each addition raises the capacity a little; shards left with less
    room than half of `shard_size` keep their files, and the new ones go to new shards."""
    shard_map = ShardMap()
    corpus = [f"{n:04}" for n in range(400)]
    shard_map.assign(files(*corpus), shard_size=10, max_shards=16, workers=2)  # 16 shards of 25
    corpus += [f"new-{n:02}" for n in range(16)]  # capacity 26: a room of 1 in every shard
    members = shard_map.assign(files(*corpus), shard_size=10, max_shards=16, workers=2)
    assert [len(members[n]) for n in range(16)] == [25] * 16, "no old shard reopened"
    assert {n: len(g) for n, g in members.items() if n >= 16} == {16: 8, 17: 8}
    corpus += [f"next-{n:02}" for n in range(10)]  # the new shards have room (19 each): topped up
    members = shard_map.assign(files(*corpus), shard_size=10, max_shards=16, workers=2)
    assert {n: len(g) for n, g in members.items() if n >= 16} == {16: 13, 17: 13}


def test_top_up_shares_evenly_within_each_room() -> None:
    assert top_up(30, [15, 15]) == [15, 15]
    assert top_up(5, [3, 10]) == [3, 2]
    assert top_up(50, [0, 10]) == [0, 10]
    assert top_up(7, []) == []
    assert top_up(0, [4, 4]) == [0, 0]


def test_new_shards_come_in_a_multiple_of_the_workers_unless_they_would_be_under_half_size() -> None:
    corpus = files(*(f"{n:04}" for n in range(2225)))
    assert [len(g) for g in ShardMap().assign(corpus, shard_size=500, max_shards=64, workers=1).values()] == [445] * 5
    balanced = ShardMap().assign(corpus, shard_size=500, max_shards=64, workers=2)
    assert [len(g) for g in balanced.values()] == [371] * 5 + [370], "5 shards on 2 workers leave one idle a fifth of the time"
    assert len(ShardMap().assign(corpus, shard_size=500, max_shards=64, workers=4)) == 8
    assert len(ShardMap().assign(corpus, shard_size=500, max_shards=64, workers=3)) == 6
    small = ShardMap().assign(files(*(f"{n:03}" for n in range(5))), shard_size=4, max_shards=64, workers=4)
    assert [len(g) for g in small.values()] == [3, 2], "four shards would hold under half of shard_size each"
    single = ShardMap().assign(files("a", "b", "c"), shard_size=1, max_shards=64, workers=2)
    assert [len(g) for g in single.values()] == [1, 1, 1], "never an empty shard"
