"""The dedupe index's partitioned phases, called directly: bands, spill, reduce with state, combine."""
from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from datasketch import LeanMinHash, MinHashLSH, MinHashLSHEnsemble

from conftest import shared_path
from textmill.tasks.bundle import read_summaries, write_bundle
from textmill.tasks.dedupe import Deduplicator, decode_signature
from textmill.tasks import dedupe_bands
from textmill.tasks.dedupe_bands import (
    CONTAINMENT,
    JACCARD,
    ROW_SCHEMA,
    ROWS_FILE,
    ROWS_OPTIONS,
    BandLayout,
    read_partition_rows,
    read_touched_rows,
)
from textmill.tasks import dedupe_index
from textmill.tasks.dedupe_index import BUCKET_REACH, Reuse
from textmill.tasks.document import Document

Pairs = list[tuple[str, dict[str, Any]]]


def article(relative: str) -> list[str]:
    return shared_path("corpora", "bbc", relative).read_text(encoding="utf-8").split()


def summaries(texts: dict[str, str]) -> Pairs:
    step = Deduplicator()
    docs = [Document(id=i, path=f"{i}.txt", sha256="0" * 64, text=t) for i, t in sorted(texts.items())]
    return list(zip([d.id for d in docs], step.summarize(docs)))


def bundles(root: Path, pairs: Pairs, shards: int, partitions: int, step: Deduplicator) -> list[Path]:
    """`pairs` split into `shards` bundle folders, as the flow writes them."""
    folders = []
    for s in range(shards):
        members = sorted(p for i, p in enumerate(pairs) if i % shards == s)
        name = hashlib.sha256(" ".join(i for i, _ in members).encode()).hexdigest()[:16]
        folder = root / f"bundle-{partitions}-{s}-{name}"
        write_bundle(folder, members, step, partitions)
        folders.append(folder)
    return folders


def index(step: Deduplicator, folders: list[Path], partitions: int, state: Path) -> dict[str, Any]:
    return step.combine([step.reduce(p, folders, state / f"p{p}") for p in range(partitions)])


@pytest.fixture(scope="module")
def corpus() -> dict[str, str]:
    """Clusters of every kind: exact copies, an edited copy, truncated copies (containment),
    a chain held together by its middle member, and unrelated articles."""
    a = article("politics/290.txt")
    b = article("business/010.txt")
    c = article("tech/020.txt")
    edited = list(a)
    edited[40] = "zebra"
    return {
        "a": " ".join(a),
        "a-copy": " ".join(a),
        "a-edit": " ".join(edited),
        "a-head": " ".join(a[: len(a) * 2 // 5]),
        "b-full": " ".join(b),
        "b-head": " ".join(b[: len(b) // 2]),
        "b-tail": " ".join(b[len(b) // 2 :]),
        "c": " ".join(c),
        "s": " ".join(article("sport/001.txt")),
        "e": " ".join(article("entertainment/001.txt")),
    }


def test_layout_matches_datasketch_bands() -> None:
    layout = BandLayout.of(128, 0.8, 0.8)
    lsh = MinHashLSH(threshold=0.8, num_perm=128, weights=(0.1, 0.9))
    jaccard = [i for i, k in enumerate(layout.kinds) if k == JACCARD]
    assert [(layout.starts[i], layout.widths[i]) for i in jaccard] == [(i * lsh.r, lsh.r) for i in range(lsh.b)]
    ensemble = MinHashLSHEnsemble(threshold=0.8, num_perm=128, weights=(0.1, 0.9))
    assert layout.params == tuple((int(b), int(r)) for b, r in ensemble.params)
    widths = {layout.widths[i] for i, k in enumerate(layout.kinds) if k == CONTAINMENT}
    assert widths == {int(r) for _, r in ensemble.params}
    for r in widths:
        used = max(int(b) for b, rr in ensemble.params if rr == r)
        assert sum(1 for i, k in enumerate(layout.kinds) if k == CONTAINMENT and layout.widths[i] == r) == used
    assert BandLayout.of(128, 0.8, None).kinds == (JACCARD,) * lsh.b


def test_partitioned_index_equals_the_in_memory_datasketch_one(corpus: dict[str, str], tmp_path: Path) -> None:
    """Every partition count and shard split gives the clusters MinHashLSH + MinHashLSHEnsemble give."""
    step = Deduplicator()
    pairs = summaries(corpus)
    expected = datasketch_clusters(pairs, step)
    assert expected == [["a", "a-copy", "a-edit", "a-head"], ["b-full", "b-head", "b-tail"]]
    for shards, partitions in ((1, 1), (3, 4), (10, 32)):
        built = index(step, bundles(tmp_path, pairs, shards, partitions, step), partitions, tmp_path / f"s{shards}")
        assert clusters(built) == expected
        assert built["stats"] == {"documents": 10, "clusters": 2, "exact_duplicates": 1, "near_duplicates": 4}
        assert built["clusters"]["b-head"] == {"cluster": "b-full", "duplicate_of": "b-full"}


def test_rows_of_a_bucket_meet_in_one_partition(corpus: dict[str, str], tmp_path: Path) -> None:
    step = Deduplicator()
    folders = bundles(tmp_path, summaries(corpus), 3, 8, step)
    where: dict[int, set[int]] = {}
    for p in range(8):
        for folder in folders:
            for key in read_partition_rows(folder, p)[0]:
                where.setdefault(int(key), set()).add(p)
    assert where and all(len(parts) == 1 for parts in where.values())


def test_incremental_reduce_equals_a_rebuild(corpus: dict[str, str], tmp_path: Path) -> None:
    """Update a kept state with removed, edited and added documents; compare with a fresh state.
    Removing b-full splits its cluster (its halves only overlap through it); removing the
    canonical a-copy and lengthening a-edit moves the canonical of the other cluster."""
    step = Deduplicator()
    partitions = 4
    before = summaries(corpus)
    state = tmp_path / "state"
    first = index(step, bundles(tmp_path / "v1", before, 4, partitions, step), partitions, state)
    assert first["clusters"]["b-tail"]["cluster"] == "b-full"
    assert first["clusters"]["a-edit"]["cluster"] == "a-copy"  # as long as `a`, first by path

    changed = dict(corpus)
    del changed["b-full"], changed["a-copy"]
    changed["a-edit"] = corpus["a-edit"] + " and a closing line only the edited copy carries"
    changed["n-copy"] = corpus["c"]
    after = summaries(changed)
    folders = bundles(tmp_path / "v2", after, 4, partitions, step)
    updated = index(step, folders, partitions, state)
    rebuilt = index(step, folders, partitions, tmp_path / "fresh")
    assert updated == rebuilt
    assert "b-head" not in updated["clusters"] and "b-tail" not in updated["clusters"]
    assert updated["clusters"]["a"] == {"cluster": "a-edit", "duplicate_of": "a-edit"}
    assert updated["clusters"]["n-copy"]["cluster"] == "c"

    back = index(step, bundles(tmp_path / "v1", before, 4, partitions, step), partitions, state)
    assert back == first


def boilerplate_pages(count: int) -> dict[str, str]:
    """`count` near-identical pages (one word differs), which share every band: one bucket each."""
    words = article("politics/290.txt")
    pages = {}
    for i in range(count):
        page = list(words)
        page[10] = f"page{i}"
        pages[f"p{i:04d}"] = " ".join(page)
    return pages


def test_a_huge_bucket_costs_linear_time_and_still_clusters(tmp_path: Path) -> None:
    """Hundreds of near-identical pages share every band: each is paired with the next
    BUCKET_REACH only, and the chain still joins them all."""
    texts = boilerplate_pages(3 * BUCKET_REACH)
    step = Deduplicator(Deduplicator.Options(containment=False))
    pairs = summaries(texts)
    started = time.perf_counter()
    built = index(step, bundles(tmp_path, pairs, 2, 2, step), 2, tmp_path / "state")
    assert time.perf_counter() - started < 30
    assert len({entry["cluster"] for entry in built["clusters"].values()}) == 1
    assert len(built["clusters"]) == len(texts)


def test_an_added_bundle_reuses_old_links_and_equals_a_rebuild(
    corpus: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New files in a new shard touch buckets full of old members (boilerplate pages past
    BUCKET_REACH, clusters): each partition verifies only the pairs with a new member, keeps
    the old pairs' verdicts, and its partial equals a fresh state's. A shard gone since (its
    bundle folder removed too) is dropped from the kept rows."""
    pages = boilerplate_pages(2 * BUCKET_REACH + 10)
    step = Deduplicator()
    partitions = 3
    first = bundles(tmp_path / "v1", summaries({**corpus, **pages}), 3, partitions, step)

    def partials(folders: list[Path], state: Path) -> list[dict[str, Any]]:
        return [step.reduce(p, folders, state / f"p{p}") for p in range(partitions)]

    partials(first, tmp_path / "state")
    late = {"p-late": pages["p0007"].replace("page7", "late")}
    late["a-late"] = corpus["a"] + " with a line the wire added"
    late["u-late"] = " ".join(article("tech/030.txt"))
    added = bundles(tmp_path / "v2", summaries(late), 1, partitions, step)
    folders = sorted([*first, *added], key=lambda f: f.name)
    updated = partials(folders, tmp_path / "state")
    assert updated == partials(folders, tmp_path / "fresh")
    linked = {frozenset((p["ids"][i], p["ids"][j])) for p in updated for i, j in zip(*p["links"])}
    assert any("a-late" in pair and pair & {"a", "a-copy", "a-edit"} for pair in linked)
    assert any("p-late" in pair for pair in linked)

    with monkeypatch.context() as patched:  # old verdicts forgotten: links are lost, so they are reused
        patched.setattr(Reuse, "kept_links", lambda self, rows: self.links.take(np.zeros(0, dtype=np.int64)))
        partials(first, tmp_path / "fault")
        assert partials(folders, tmp_path / "fault") != updated

    shutil.rmtree(first[0])
    rest = [f for f in folders if f != first[0]]
    assert partials(rest, tmp_path / "state") == partials(rest, tmp_path / "fresh-2")


def test_bucket_chunks_are_whole_buckets_covering_every_row() -> None:
    keys = np.repeat(np.arange(8, dtype=np.uint64), [1, 3, 9, 2, 2, 40, 1, 5])
    chunks = dedupe_index._bucket_chunks(keys, 4)
    assert chunks[0].start == 0 and chunks[-1].stop == len(keys)
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:]))
    for chunk in chunks:
        assert chunk.start == 0 or keys[chunk.start - 1] != keys[chunk.start]
    assert [c.stop - c.start for c in chunks] == [4, 9, 4, 40, 6]


def test_pairs_enumerated_a_few_buckets_at_a_time_give_the_same_partials(
    corpus: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition enumerates and verifies its candidate pairs in runs of whole buckets, so its
    memory stays bounded: runs of a few rows (a bucket past BUCKET_REACH alone in its run) give
    the same partials as one run, when the index is built and when it is updated."""
    pages = boilerplate_pages(2 * BUCKET_REACH + 10)
    step = Deduplicator()
    partitions = 2
    first = bundles(tmp_path / "v1", summaries({**corpus, **pages}), 3, partitions, step)
    late = {"p-late": pages["p0007"].replace("page7", "late"), "a-late": corpus["a"] + " with a line the wire added"}
    folders = sorted([*first, *bundles(tmp_path / "v2", summaries(late), 1, partitions, step)], key=lambda f: f.name)

    def build_and_update(state: Path) -> list[dict[str, Any]]:
        built = [step.reduce(p, first, state / f"p{p}") for p in range(partitions)]
        return built + [step.reduce(p, folders, state / f"p{p}") for p in range(partitions)]

    whole = build_and_update(tmp_path / "whole")
    runs: list[int] = []
    chunks = dedupe_index._bucket_chunks
    monkeypatch.setattr(dedupe_index, "CHUNK_ROWS", 5)
    monkeypatch.setattr(dedupe_index, "_bucket_chunks", lambda keys, limit: runs.append(len(c := chunks(keys, limit))) or c)
    assert build_and_update(tmp_path / "chunked") == whole
    assert max(runs) > 10


def resident_kb(path: Path) -> int:
    """This process's resident kilobytes of the maps of `path` (Linux's /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_a_reduce_gives_back_the_signature_pages_it_read(corpus: dict[str, str], tmp_path: Path) -> None:
    """A worker reduces its partitions, then goes on to other stages: the signatures it read
    (every shard's, on a large corpus) do not stay resident in it."""
    step = Deduplicator()
    folders = bundles(tmp_path, summaries(corpus), 1, 1, step)
    signatures = folders[0] / dedupe_bands.SIGNATURES_FILE
    dedupe_bands.read_signatures(folders[0], np.arange(len(corpus)))
    assert resident_kb(signatures) > 0
    dedupe_bands.release_memory()
    assert resident_kb(signatures) == 0
    step.reduce(0, folders, tmp_path / "state")
    assert resident_kb(signatures) == 0
    assert len(dedupe_bands.read_signatures(folders[0], np.arange(len(corpus)))) == len(corpus)


def test_signature_pages_are_given_back_as_soon_as_a_run_of_buckets_is_verified(
    corpus: dict[str, str], tmp_path: Path
) -> None:
    """Within one partition, too: gathering the signatures of a run of buckets leaves none of
    their pages resident, so a partition over a large corpus does not hold every shard's."""
    step = Deduplicator()
    folders = bundles(tmp_path, summaries(corpus), 1, 1, step)
    docs = np.arange(len(corpus), dtype=np.uint64)  # shard 0: codes are the rows
    gathered = dedupe_index._gather_signatures(step.options.num_perm, docs, folders)
    assert gathered.shape == (len(corpus), step.options.num_perm)
    assert resident_kb(folders[0] / dedupe_bands.SIGNATURES_FILE) == 0
    assert np.array_equal(gathered, dedupe_bands.read_signatures(folders[0], np.arange(len(corpus))))


def test_unique_by_sorting_equals_numpys() -> None:
    rng = np.random.default_rng(7)
    for values in (np.empty(0, np.uint64), rng.integers(0, 50, 1000, dtype=np.uint64), rng.integers(0, 2**63, 1000, dtype=np.uint64)):
        assert np.array_equal(dedupe_index._unique(values), np.unique(values))


def test_bundle_keeps_the_summaries_for_apply(corpus: dict[str, str], tmp_path: Path) -> None:
    step = Deduplicator()
    pairs = summaries(corpus)
    folder = tmp_path / "bundle"
    write_bundle(folder, pairs, step, 2)
    assert list(read_summaries(folder)) == pairs
    assert sorted(p.name for p in folder.iterdir()) == [
        "dedupe-docs.arrow", "dedupe-rows.arrow", "dedupe-signatures.npy", "summaries.jsonl.gz"
    ]
    write_bundle(folder, [], step, 2)  # an existing bundle is never rewritten
    assert list(read_summaries(folder)) == pairs


def clusters(built: dict[str, Any]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for doc_id, entry in built["clusters"].items():
        groups.setdefault(entry["cluster"], []).append(doc_id)
    return sorted(sorted(g) for g in groups.values())


def datasketch_clusters(pairs: Pairs, step: Deduplicator) -> list[list[str]]:
    """The clusters of the in-memory indexes the partitioned one replaces (MinHashLSH for
    Jaccard, MinHashLSHEnsemble for containment, both verified by their estimates)."""
    from textmill.tasks.union_find import UnionFind

    opts = step.options
    hashes = {i: LeanMinHash(seed=opts.seed, hashvalues=decode_signature(s["minhash"]), scheme="affine32") for i, s in pairs}
    sizes = {i: s["size"] for i, s in pairs}
    links = UnionFind(hashes)
    lsh = MinHashLSH(threshold=opts.jaccard_threshold, num_perm=opts.num_perm, weights=(0.1, 0.9))
    ensemble = MinHashLSHEnsemble(threshold=opts.containment_threshold, num_perm=opts.num_perm, weights=(0.1, 0.9))
    for i, m in hashes.items():
        lsh.insert(i, m)
    from textmill.tasks.dedupe_bands import size_bucket

    ensemble.index([(i, m, size_bucket(sizes[i])) for i, m in hashes.items()])
    for i, m in hashes.items():
        for other in lsh.query(m):
            if other != i and m.jaccard(hashes[other]) >= opts.jaccard_threshold:
                links.union(i, other)
        for other in ensemble.query(m, sizes[i]):
            j = m.jaccard(hashes[other])
            if other != i and j * (sizes[i] + sizes[other]) / ((1 + j) * sizes[i]) >= opts.containment_threshold:
                links.union(i, other)
    return sorted(sorted(g) for g in links.groups() if len(g) > 1)


def unsort_rows(folder: Path, partitions: int) -> None:
    """Rewrite a bundle's rows file with each batch in reverse key order, as bundles written
    before batches were sorted may hold them."""
    batches = [read_partition_rows(folder, p) for p in range(partitions)]
    dedupe_bands.keep_rows_open([])
    with pa.ipc.new_file(folder / ROWS_FILE, ROW_SCHEMA, options=ROWS_OPTIONS) as writer:
        for key, row, size in batches:
            order = np.lexsort((row, key))[::-1]
            writer.write_batch(pa.record_batch([pa.array(key[order]), pa.array(row[order]), pa.array(size[order])], schema=ROW_SCHEMA))


def test_rows_of_touched_buckets_by_binary_search_equal_a_scan(corpus: dict[str, str], tmp_path: Path) -> None:
    step = Deduplicator()
    folders = bundles(tmp_path, summaries(corpus), 2, 3, step)
    for folder in folders:
        for p in range(3):
            key, row, size = read_partition_rows(folder, p)
            assert np.all(key[1:] >= key[:-1]), "each partition's batch is sorted by key"
            wanted = np.unique(np.concatenate([key[::3], np.array([0, 2**64 - 1], dtype=np.uint64)]))
            mask = np.isin(key, wanted)
            got, census = read_touched_rows(folder, p, wanted)
            for column, expected in zip(got, (key[mask], row[mask], size[mask])):
                assert np.array_equal(column, expected)
            assert np.array_equal(census, key[(key >> np.uint64(52)) >= np.uint64(4094)])
    unsort_rows(folders[0], 3)
    key, row, size = read_partition_rows(folders[0], 1)
    assert not np.all(key[1:] >= key[:-1])
    wanted = np.unique(key[::2])
    got, census = read_touched_rows(folders[0], 1, wanted)
    assert sorted(census.tolist()) == sorted(k for k in key.tolist() if k >> 52 >= 4094)
    assert sorted(zip(*(c.tolist() for c in got))) == sorted(
        (k, r, z) for k, r, z in zip(key.tolist(), row.tolist(), size.tolist()) if k in set(wanted.tolist())
    )


def test_an_update_over_unsorted_bundles_equals_a_rebuild(corpus: dict[str, str], tmp_path: Path) -> None:
    """An unchanged bundle kept from before batches were sorted is read by a scan instead of a
    binary search, with the same result; the other shard loses b-full (which held b-head and
    b-tail of the kept shard together) and gains a copy of c and a near copy of the kept a."""
    step = Deduplicator()
    partitions = 4
    pairs = dict(summaries({**corpus, "n-copy": corpus["c"], "n-a": corpus["a"] + " with a closing line"}))
    others = ["b-full", "c", "n-copy", "n-a"]
    kept = tmp_path / "kept"
    write_bundle(kept, [(i, pairs[i]) for i in sorted(pairs) if i not in others], step, partitions)
    unsort_rows(kept, partitions)
    before, after = tmp_path / "before", tmp_path / "after"
    write_bundle(before, [(i, pairs[i]) for i in others if not i.startswith("n-")], step, partitions)
    write_bundle(after, [(i, pairs[i]) for i in others if i != "b-full"], step, partitions)
    state = tmp_path / "state"
    first = index(step, [kept, before], partitions, state)
    assert first["clusters"]["b-tail"]["cluster"] == "b-full"
    updated = index(step, [kept, after], partitions, state)
    assert updated == index(step, [kept, after], partitions, tmp_path / "fresh")
    assert updated["clusters"]["n-copy"]["cluster"] == "c"
    assert updated["clusters"]["a"]["cluster"] == updated["clusters"]["n-a"]["cluster"] == "n-a", "joins a kept cluster"
    assert "b-head" not in updated["clusters"] and "b-tail" not in updated["clusters"]


def test_signature_rows_are_uint32(corpus: dict[str, str], tmp_path: Path) -> None:
    step = Deduplicator()
    folder = bundles(tmp_path, summaries(corpus), 1, 1, step)[0]
    key, row, size = read_partition_rows(folder, 0)
    assert key.dtype == np.uint64 and row.dtype == np.uint32 and size.dtype == np.uint32
    layout = step.layout()
    assert len(key) == 10 + 9 * len(layout.starts)  # a census row each; band rows for the 9 distinct texts


def test_decisions_key_follows_the_shards_cluster_entries_only() -> None:
    step = Deduplicator()
    index = {"clusters": {"a": {"cluster": "a", "duplicate_of": None}, "b": {"cluster": "a", "duplicate_of": "a"}}}
    key = step.decisions_key(index, ["a", "c"])
    other_shard_changed = {"clusters": {**index["clusters"], "b": {"cluster": "b", "duplicate_of": None}}}
    assert step.decisions_key(other_shard_changed, ["a", "c"]) == key
    canonical_moved = {"clusters": {**index["clusters"], "a": {"cluster": "b", "duplicate_of": "b"}}}
    assert step.decisions_key(canonical_moved, ["a", "c"]) != key
    joined = {"clusters": {**index["clusters"], "c": {"cluster": "a", "duplicate_of": "a"}}}
    assert step.decisions_key(joined, ["a", "c"]) != key
    assert step.decisions_key(index, ["c", "a"]) != key, "the shard's order is part of the key"
