"""One partition of the dedupe index: buckets of band rows to verified links, kept on disk.

A partition task reads its record batch from every shard's rows file, sorts the rows by
bucket key and turns each bucket into candidate pairs: every pair of a bucket, or in a bucket
of more than `BUCKET_REACH + 1` members (boilerplate every page shares) each member with the
`BUCKET_REACH` after it in (size, shard, row) order, so no bucket costs quadratic time.
Candidates are verified from the signatures (estimated Jaccard; estimated containment for
the containment bands) and kept as links tagged with their bucket key.

Between runs the partition keeps its links (tagged with their bucket keys, with their
members' ids and ranking fields) in its state folder, with the bundles they came from. A
later run recomputes only the buckets whose membership changed: every key of a row in a
bundle that is new, or in one that is gone (read from that bundle while it still exists);
the links of the other buckets are kept. In a touched bucket that lost no member, the pairs
of two old members are not enumerated: last run's links among them that are still within
reach are kept (`Reuse.kept_links`), and only pairs with a new member are verified. A bucket's
links depend on its members only, so the result equals a rebuild over the same bundles.
Pairs are enumerated a run of whole buckets at a time (`CHUNK_ROWS`), so memory stays
bounded. The rows themselves are not kept: the bundles hold them, each partition's batch
sorted by key, so an update takes from an unchanged bundle only the rows of touched buckets
(binary search) and its census tail, instead of concatenating and scanning every row of the
partition (a sorted copy per partition cost more to sort and write each run; the rows files
stay open for the partitions a worker reduces in turn).
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from textmill.tasks.dedupe_bands import (
    CENSUS,
    EMPTY,
    IPC_OPTIONS,
    JACCARD,
    BandLayout,
    keep_rows_open,
    key_slots,
    read_docs,
    is_census,
    read_partition_rows,
    read_signatures,
    read_touched_rows,
    release_memory,
    release_signature_pages,
    size_bucket,
)

# Members a row is paired with in an oversized bucket (datatrove links consecutive members
# of a bucket; verified pairs need a little more reach to keep near-duplicates together).
BUCKET_REACH = 64
# Pairs verified at once: bounds the temporary arrays (num_perm bytes per pair).
VERIFY_CHUNK = 65_536
# Banded rows whose candidate pairs are enumerated at once (at most BUCKET_REACH pairs per
# row): bounds a partition's memory when its rows grow with the corpus.
CHUNK_ROWS = 32_768
STATE_FILE = "state.json"

_ROWS = ("key", "size", "src", "row")
_LINKS = ("key", "a_src", "a_row", "b_src", "b_row")


@dataclass(frozen=True)
class Thresholds:
    jaccard: float
    containment: float | None
    min_shingles: int


@dataclass
class Arrays:
    """Columns of equal length, by name."""

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def take(self, selector: np.ndarray) -> Arrays:
        return Arrays({name: values[selector] for name, values in self.columns.items()})

    def narrow(self, selector: np.ndarray) -> Arrays:
        """Keep `selector`'s rows, in place and a column at a time: a partition's rows are the
        largest arrays of a reduce, and a copy of all of them at once would double its peak."""
        for name in list(self.columns):
            self.columns[name] = self.columns[name][selector]
        return self

    @staticmethod
    def concat(parts: list[Arrays], names: tuple[str, ...], dtypes: dict[str, Any]) -> Arrays:
        return Arrays(
            {n: np.concatenate([p[n] for p in parts]) if parts else np.empty(0, dtypes[n]) for n in names}
        )


@dataclass(frozen=True)
class Reuse:
    """What an update knows of the rows of its touched buckets: which come from a bundle added
    since the last run (`new`), which buckets lost no member (`clean`, per row), and the links
    the touched clean buckets had last run (`links`, bundle indexes of this run)."""

    new: np.ndarray
    clean: np.ndarray
    links: Arrays

    def take(self, selector: np.ndarray) -> Reuse:
        return Reuse(self.new[selector], self.clean[selector], self.links)

    def kept_links(self, rows: Arrays) -> Arrays:
        """Last run's links of clean buckets whose two members are still within `BUCKET_REACH`
        of each other in `rows` (banded rows in bucket order). Members only join a clean
        bucket and keep their order, so these are exactly the pairs of two old members a
        rebuild would verify and link again: they are kept without reading signatures, at a
        cost that follows the links, not the pairs of the touched buckets."""
        links = self.links
        keys = rows["key"]
        if not len(links) or not len(keys):
            return Arrays.concat([], _LINKS, _LINK_TYPES)
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        bucket_keys = keys[starts]
        bucket = np.repeat(np.arange(len(starts), dtype=np.int64), np.diff(np.r_[starts, len(keys)]))
        codes = _codes(rows["src"], rows["row"])
        docs = _unique(codes)
        # A document is in a bucket at most once, so (bucket, document) names a row.
        slots = bucket * len(docs) + np.searchsorted(docs, codes)
        order = np.argsort(slots)
        sorted_slots = slots[order]

        def position(key: np.ndarray, code: np.ndarray) -> np.ndarray:
            b = np.minimum(np.searchsorted(bucket_keys, key), len(bucket_keys) - 1)
            d = np.minimum(np.searchsorted(docs, code), len(docs) - 1)
            at = np.minimum(np.searchsorted(sorted_slots, b * len(docs) + d), len(sorted_slots) - 1)
            found = (bucket_keys[b] == key) & (docs[d] == code) & (sorted_slots[at] == b * len(docs) + d)
            return np.where(found, order[at], -1)

        a = position(links["key"], _codes(links["a_src"], links["a_row"]))
        b = position(links["key"], _codes(links["b_src"], links["b_row"]))
        keep = (a >= 0) & (b >= 0)
        keep[keep] &= (b[keep] - a[keep] >= 1) & (b[keep] - a[keep] <= BUCKET_REACH) & self.clean[a[keep]]
        return _pairs(rows, keys[a[keep]], a[keep], b[keep])


_ROW_TYPES = {"key": np.uint64, "size": np.uint32, "src": np.int64, "row": np.int64}
_LINK_TYPES = {"key": np.uint64, "a_src": np.int64, "a_row": np.int64, "b_src": np.int64, "b_row": np.int64}
_MEMBERS = ("src", "row", "id", "length", "date", "path")
_MEMBER_TYPES = {"src": np.int64, "row": np.int64, "id": object, "length": np.int64, "date": object, "path": object}


def _empty_members() -> Arrays:
    return Arrays.concat([], _MEMBERS, _MEMBER_TYPES)


def reduce_partition(
    layout: BandLayout, thresholds: Thresholds, partition: int, bundles: list[Path], state: Path
) -> dict[str, Any]:
    """The partial index of `partition`: links as id pairs, the ranking fields of their members,
    and the counts of documents and exact copies; updates `state` for the next run. What the
    reduce held is given back before the process goes on to other work."""
    try:
        return _reduce(layout, thresholds, partition, bundles, state)
    finally:
        release_memory()


def _reduce(
    layout: BandLayout, thresholds: Thresholds, partition: int, bundles: list[Path], state: Path
) -> dict[str, Any]:
    bundles = sorted(bundles, key=lambda b: b.name)
    source = {folder.name: i for i, folder in enumerate(bundles)}
    keep_rows_open(bundles)
    previous = _load_state(state)
    if previous is None:
        rows = _read_rows(bundles, partition)
        census = rows["key"][is_census(rows["key"])]
        links = _links(layout, thresholds, _in_bucket_order(rows), bundles)
        del rows
        kept_members = _empty_members()
    else:
        old_folders, old_links, old_members = previous
        remap = np.array([source.get(folder.name, -1) for folder in old_folders], dtype=np.int64)
        added = np.ones(len(bundles), dtype=bool)
        added[remap[remap >= 0]] = False
        gone = [_unique(read_partition_rows(folder, partition)[0]) for folder, at in zip(old_folders, remap) if at < 0]
        lost = _unique(np.concatenate(gone)) if gone else np.empty(0, np.uint64)
        del gone
        new_rows = _read_rows(bundles, partition, np.flatnonzero(added))
        new_census = new_rows["key"][is_census(new_rows["key"])]
        touched = _unique(np.concatenate([new_rows["key"], lost]))
        for column in ("a_src", "b_src"):
            old_links.columns[column] = remap[old_links[column]]
        old_members.columns["src"] = remap[old_members["src"]]
        alive = (old_links["a_src"] >= 0) & (old_links["b_src"] >= 0)
        in_touched = _member(old_links["key"], touched)
        kept_links = old_links.take(alive & ~in_touched)
        known = old_links.take(alive & in_touched & ~_member(old_links["key"], lost))
        kept_members = old_members.take(old_members["src"] >= 0)
        old_rows, old_census = _read_touched_rows(bundles, partition, np.flatnonzero(~added), touched)
        update = Arrays.concat([new_rows, old_rows], _ROWS, _ROW_TYPES)
        del new_rows, old_rows
        _in_bucket_order(update)
        reuse = Reuse(added[update["src"]], ~_member(update["key"], lost), known)
        links = Arrays.concat([kept_links, _links(layout, thresholds, update, bundles, reuse)], _LINKS, _LINK_TYPES)
        del update
        census = np.concatenate([new_census, old_census])
    members = _members(links, kept_members, bundles)
    _save_state(state, bundles, links, members)
    return _partial(census, links, members)


def _read_rows(bundles: list[Path], partition: int, which: Iterable[int] | None = None) -> Arrays:
    """The partition's rows of the bundles at indexes `which` (default: all), tagged with their
    bundle's index."""
    parts = []
    for i in range(len(bundles)) if which is None else which:
        parts.append(_tagged(i, read_partition_rows(bundles[i], partition)))
    return Arrays.concat(parts, _ROWS, _ROW_TYPES)


def _read_touched_rows(
    bundles: list[Path], partition: int, which: Iterable[int], keys: np.ndarray
) -> tuple[Arrays, np.ndarray]:
    """The rows of the buckets in `keys` (sorted, unique) from the bundles at indexes `which`,
    tagged with their bundle's index, and those bundles' census keys."""
    parts, census = [], [np.empty(0, np.uint64)]
    for i in which:
        rows, census_keys = read_touched_rows(bundles[i], partition, keys)
        parts.append(_tagged(i, rows))
        census.append(census_keys)
    return Arrays.concat(parts, _ROWS, _ROW_TYPES), np.concatenate(census)


def _tagged(src: int, rows: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Arrays:
    key, row, size = rows
    return Arrays({"key": key, "size": size, "src": np.full(len(key), src, np.int64), "row": row.astype(np.int64)})


def combine_partials(partials: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Union-find over every partition's links; each cluster is named after its most complete
    member (longest text, then earliest date, undated last, then path, then id)."""
    from textmill.tasks.union_find import UnionFind

    number: dict[str, int] = {}
    fields: list[tuple[str, int, str | None, str]] = []
    pairs: list[np.ndarray] = []
    documents = exact = 0
    for partial in partials:
        documents += partial["documents"]
        exact += partial["exact_duplicates"]
        local = np.empty(len(partial["ids"]), dtype=np.int64)
        for i, member in enumerate(zip(partial["ids"], partial["length"], partial["date"], partial["path"])):
            at = number.get(member[0])
            if at is None:
                at = number[member[0]] = len(fields)
                fields.append(member)
            local[i] = at
        a, b = (local[np.asarray(side, dtype=np.int64)] for side in partial["links"])
        pairs.append(np.stack([np.minimum(a, b), np.maximum(a, b)]))
    # Each link once, as one integer per pair (a row-wise unique sorts several times slower).
    members = max(1, len(fields))
    ends = np.concatenate(pairs, axis=1) if pairs else np.empty((2, 0), np.int64)
    links = _unique(ends[0] * members + ends[1])
    groups = UnionFind()
    for a, b in zip((links // members).tolist(), (links % members).tolist()):
        groups.union(a, b)
    clusters: dict[str, dict[str, str | None]] = {}
    count = 0
    for group in groups.groups():
        if len(group) < 2:
            continue
        count += 1
        canonical = fields[min(group, key=lambda at: _rank(fields[at]))][0]
        for at in group:
            doc_id = fields[at][0]
            clusters[doc_id] = {"cluster": canonical, "duplicate_of": None if doc_id == canonical else canonical}
    return {
        "clusters": dict(sorted(clusters.items())),
        "stats": {
            "documents": documents,
            "clusters": count,
            "exact_duplicates": exact,
            "near_duplicates": len(clusters) - count - exact,
        },
    }


def _rank(member: tuple[str, int, str | None, str]) -> tuple[Any, ...]:
    doc_id, length, date, path = member
    return (-length, date is None, date or "", path, doc_id)


def _in_bucket_order(rows: Arrays) -> Arrays:
    """`rows`, sorted in place by key, then size, shard and row: each bucket's members together,
    in the order oversized buckets are paired in. An update sorts only the rows of touched
    buckets."""
    return rows.narrow(np.lexsort((rows["row"], rows["src"], rows["size"], rows["key"])))


def _unique(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values, found by sorting. numpy 2.3 and later hash integers in
    `np.unique`, which on millions of mostly distinct keys is about 100 times slower: 6 s against
    0.06 s for 3,000,000 random uint64 keys with numpy 2.4.6, sorted or not."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Whether each value is in `sorted_set` (sorted, unique)."""
    if not len(sorted_set) or not len(values):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def _links(
    layout: BandLayout, thresholds: Thresholds, rows: Arrays, bundles: list[Path], reuse: Reuse | None = None
) -> Arrays:
    """Verified links of the buckets of `rows` (sorted by key, size, src, row; narrowed in
    place as it goes, so the caller must not use them after); with `reuse`, only the candidate
    pairs an update may have changed are verified again."""
    keys = rows["key"]
    if len(keys) < 2:
        return Arrays.concat([], _LINKS, _LINK_TYPES)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, len(keys)])
    multi = np.repeat(counts >= 2, counts)
    del starts, counts
    if reuse is not None:
        reuse = reuse.take(multi)
    rows.narrow(multi)
    del multi
    keys = rows["key"]
    if not len(keys):
        return Arrays.concat([], _LINKS, _LINK_TYPES)
    slots = key_slots(keys)
    found = [_census_links(rows, slots)]
    is_banded = (slots != CENSUS) & (slots != EMPTY)
    del keys, slots
    if np.count_nonzero(is_banded) > 1:
        banded = rows.narrow(is_banded)
        if reuse is not None:
            reuse = reuse.take(is_banded)
            found.append(reuse.kept_links(banded))
        for chunk in _bucket_chunks(banded["key"], CHUNK_ROWS):
            found.extend(
                _verified_band_links(
                    layout, thresholds, banded.take(chunk), bundles, None if reuse is None else reuse.take(chunk)
                )
            )
    return Arrays.concat(found, _LINKS, _LINK_TYPES)


def _census_links(rows: Arrays, slots: np.ndarray) -> Arrays:
    """Links of consecutive census rows with the same key: the exact copies of a text."""
    keys = rows["key"]
    census = np.flatnonzero(slots == CENSUS)
    a, b = census[:-1], census[1:]
    same = keys[a] == keys[b]
    return _pairs(rows, keys[a[same]], a[same], b[same])


def _bucket_chunks(keys: np.ndarray, limit: int) -> list[slice]:
    """Consecutive runs of whole buckets of about `limit` rows (a larger bucket is a run of its
    own): the candidate pairs of a partition are enumerated and verified one run at a time, so
    their arrays stay bounded however many rows the partition holds."""
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    chunks, begin = [], 0
    while begin < len(keys):
        at = int(np.searchsorted(starts, begin + limit))
        end = int(starts[at]) if at < len(starts) else len(keys)
        chunks.append(slice(begin, end))
        begin = end
    return chunks


def _pairs(rows: Arrays, keys: np.ndarray, a: np.ndarray, b: np.ndarray) -> Arrays:
    return Arrays(
        {"key": keys, "a_src": rows["src"][a], "a_row": rows["row"][a], "b_src": rows["src"][b], "b_row": rows["row"][b]}
    )


def _verified_band_links(
    layout: BandLayout, thresholds: Thresholds, rows: Arrays, bundles: list[Path], reuse: Reuse | None
) -> list[Arrays]:
    """Pairs of each bucket (within `BUCKET_REACH`) that the banding rules make candidates,
    then verified from the signatures of their members only (read once per shard). With
    `reuse`, the pairs of two old members of a bucket that lost none are left out: such a pair
    was a candidate last run too (members only join such a bucket, so the members between two
    old ones only grow), and it is a link exactly when it was one then (`Reuse.kept_links`)."""
    keys = rows["key"]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, len(keys)])
    bucket = np.repeat(np.arange(len(starts)), counts)
    sizes = rows["size"].astype(np.float64)
    grid = _size_grid(rows["size"])
    slots = key_slots(keys)
    is_jaccard = np.array(layout.kinds, dtype=np.int8)[slots] == JACCARD
    band_r = np.array(layout.widths, dtype=np.int64)[slots]
    band_no = np.array(layout.bands, dtype=np.int64)[slots]
    xqs = np.array(layout.xqs, dtype=np.float64)
    params = np.array(layout.params, dtype=np.int64).reshape(-1, 2)

    # Which rows' pairs are enumerated: all of them, or in an update those with a new member
    # or in a bucket that lost one.
    fresh = None if reuse is None else reuse.new | ~reuse.clean
    firsts, seconds, forwards, backwards = [], [], [], []
    for distance in range(1, min(BUCKET_REACH, int(counts.max()) - 1) + 1):
        same = bucket[:-distance] == bucket[distance:]
        if fresh is not None:
            same &= fresh[:-distance] | reuse.new[distance:]
        first = np.flatnonzero(same)
        second = first + distance
        forward = backward = np.zeros(len(first), dtype=bool)
        if thresholds.containment is not None:
            contained = ~is_jaccard[first]
            forward = contained & _candidate(thresholds, sizes[first], grid[second], band_r[first], band_no[first], xqs, params)
            backward = contained & _candidate(thresholds, sizes[second], grid[first], band_r[first], band_no[first], xqs, params)
        keep = is_jaccard[first] | forward | backward
        firsts.append(first[keep])
        seconds.append(second[keep])
        forwards.append(forward[keep])
        backwards.append(backward[keep])
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    forward, backward = np.concatenate(forwards), np.concatenate(backwards)
    found: list[Arrays] = []
    if not len(first):
        return found

    docs = (rows["src"].astype(np.uint64) << np.uint64(32)) | rows["row"].astype(np.uint64)
    ends = np.concatenate([first, second])
    unique_docs, doc_of_end = np.unique(docs[ends], return_inverse=True)
    signatures = _gather_signatures(layout.num_perm, unique_docs, bundles)
    doc_a, doc_b = doc_of_end[: len(first)], doc_of_end[len(first) :]
    for chunk in range(0, len(first), VERIFY_CHUNK):
        part = slice(chunk, chunk + VERIFY_CHUNK)
        a, b = first[part], second[part]
        jaccard = np.count_nonzero(signatures[doc_a[part]] == signatures[doc_b[part]], axis=1) / layout.num_perm
        link = is_jaccard[a] & (jaccard >= thresholds.jaccard)
        if thresholds.containment is not None:
            link |= forward[part] & _estimate_passes(thresholds.containment, jaccard, sizes[a], sizes[b])
            link |= backward[part] & _estimate_passes(thresholds.containment, jaccard, sizes[b], sizes[a])
        found.append(_pairs(rows, keys[a[link]], a[link], b[link]))
    return found


def _candidate(
    thresholds: Thresholds,
    q: np.ndarray,
    x_grid: np.ndarray,
    band_r: np.ndarray,
    band_no: np.ndarray,
    xqs: np.ndarray,
    params: np.ndarray,
) -> np.ndarray:
    """Whether a query of size `q` would find a target of size `size_bucket(x)` through this
    band, as the ensemble does with its banding `(b, r)` for the ratio `size_bucket(x)/q`."""
    at = np.minimum(np.searchsorted(xqs, x_grid / q, side="left"), len(xqs) - 1)
    b, r = params[at, 0], params[at, 1]
    return (q >= thresholds.min_shingles) & (r == band_r) & (band_no < b)


def _estimate_passes(threshold: float, jaccard: np.ndarray, q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """`estimated_containment(jaccard, q, x) >= threshold`, elementwise, in the same float steps."""
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = np.where(jaccard > 0, jaccard * (q + x) / ((1.0 + jaccard) * q), 0.0)
    return estimate >= threshold


def _size_grid(sizes: np.ndarray) -> np.ndarray:
    """`size_bucket` of each size, computed once per distinct size in Python (exact floats)."""
    distinct, inverse = np.unique(sizes, return_inverse=True)
    return np.array([float(size_bucket(int(s))) for s in distinct], dtype=np.float64)[inverse]


def _gather_signatures(num_perm: int, docs: np.ndarray, bundles: list[Path]) -> np.ndarray:
    """Signatures of `docs` (sorted `src << 32 | row` codes), read one shard file at a time.
    The mapped pages are given back once read: a partition's candidates touch most pages of
    every shard's signatures, at 1,000,000 documents about 512 MB, which would otherwise stay
    resident until the partition ends."""
    out = np.empty((len(docs), num_perm), dtype=np.uint32)
    src = (docs >> np.uint64(32)).astype(np.int64)
    row = (docs & np.uint64(0xFFFFFFFF)).astype(np.int64)
    bounds = np.searchsorted(src, np.arange(len(bundles) + 1))
    for s in np.flatnonzero(np.diff(bounds)):
        found = read_signatures(bundles[s], row[bounds[s] : bounds[s + 1]])
        if found.shape[1] != num_perm:
            raise ValueError(f"{bundles[s]} holds signatures of {found.shape[1]} values, expected {num_perm}")
        out[bounds[s] : bounds[s + 1]] = found
    release_signature_pages()
    return out


def _members(links: Arrays, known: Arrays, bundles: list[Path]) -> Arrays:
    """Id and ranking fields of every document in `links`: those `known` from the last run,
    the others read from their shards' documents files."""
    codes = _unique(np.concatenate([_codes(links["a_src"], links["a_row"]), _codes(links["b_src"], links["b_row"])]))
    known_codes = _codes(known["src"], known["row"])
    order = np.argsort(known_codes)
    known, known_codes = known.take(order), known_codes[order]
    have = _member(codes, known_codes)
    parts = [known.take(_member(known_codes, codes[have]))]
    missing = codes[~have]
    src, row = missing >> 32, missing & 0xFFFFFFFF
    for s in _unique(src):
        rows = row[src == s]
        table = read_docs(bundles[int(s)], ["id", "length", "date", "path"]).take(pa.array(rows))
        parts.append(
            Arrays(
                {
                    "src": np.full(len(rows), s, np.int64),
                    "row": rows.astype(np.int64),
                    "id": np.array(table.column("id").to_pylist(), dtype=object),
                    "length": table.column("length").to_numpy(),
                    "date": np.array(table.column("date").to_pylist(), dtype=object),
                    "path": np.array(table.column("path").to_pylist(), dtype=object),
                }
            )
        )
    return Arrays.concat(parts, _MEMBERS, _MEMBER_TYPES)


def _codes(src: np.ndarray, row: np.ndarray) -> np.ndarray:
    return (src.astype(np.int64) << 32) | row.astype(np.int64)


def _partial(census: np.ndarray, links: Arrays, members: Arrays) -> dict[str, Any]:
    """In columns, which JSON writes and reads several times faster than a record per member:
    the members (id order) with their ranking fields, and the links as pairs of member indexes;
    the partition's documents and exact copies are counted from its `census` keys (one per
    document)."""
    census_keys = census[key_slots(census) == CENSUS]
    documents = len(census)
    exact = len(census_keys) - len(_unique(census_keys))
    order = np.argsort(members["id"], kind="stable")
    members = members.take(order)
    codes = _codes(members["src"], members["row"])
    by_code = np.argsort(codes)
    a = by_code[np.searchsorted(codes[by_code], _codes(links["a_src"], links["a_row"]))]
    b = by_code[np.searchsorted(codes[by_code], _codes(links["b_src"], links["b_row"]))]
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0) if len(a) else np.empty((0, 2), np.int64)
    return {
        "ids": members["id"].tolist(),
        "length": [int(v) for v in members["length"].tolist()],
        "date": members["date"].tolist(),
        "path": members["path"].tolist(),
        "links": [pairs[:, 0].tolist(), pairs[:, 1].tolist()],
        "documents": documents,
        "exact_duplicates": exact,
    }


def _write_arrays(path: Path, arrays: Arrays, names: tuple[str, ...]) -> None:
    table = pa.table({n: pa.array(arrays[n].tolist() if arrays[n].dtype == object else arrays[n]) for n in names})
    with pa.ipc.new_file(path, table.schema, options=IPC_OPTIONS) as writer:
        writer.write_table(table)


def _read_arrays(path: Path, names: tuple[str, ...], dtypes: dict[str, Any]) -> Arrays:
    with pa.OSFile(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    columns = {}
    for n in names:
        if dtypes[n] is object:
            columns[n] = np.array(table.column(n).to_pylist(), dtype=object)
        else:
            columns[n] = table.column(n).to_numpy().astype(dtypes[n], copy=True)
    return Arrays(columns)


def _load_state(state: Path) -> tuple[list[Path], Arrays, Arrays] | None:
    """The links (and their members) this partition kept last time, with the bundles they came
    from; None when there is none, or when a bundle that has gone since can no longer be read
    (its rows say which buckets lost a member): the partition is then rebuilt."""
    try:
        meta = json.loads((state / STATE_FILE).read_text())
        folders = [Path(f) for f in meta["bundles"]]
        if not all(f.is_dir() for f in folders):
            return None
        links = _read_arrays(state / meta["links"], _LINKS, _LINK_TYPES)
        members = _read_arrays(state / meta["members"], _MEMBERS, _MEMBER_TYPES)
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None
    return folders, links, members


def _save_state(state: Path, bundles: list[Path], links: Arrays, members: Arrays) -> None:
    """Write new links and members files, point the state file at them, then drop the old ones."""
    state.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex
    meta = {
        "inputs": [b.name for b in bundles],
        "bundles": [str(b) for b in bundles],
        "links": f"links-{tag}.arrow",
        "members": f"members-{tag}.arrow",
    }
    _write_arrays(state / meta["links"], links, _LINKS)
    _write_arrays(state / meta["members"], members, _MEMBERS)
    tmp = state / f".{STATE_FILE}.{tag}"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, state / STATE_FILE)
    for old in state.glob("*.arrow"):
        if old.name not in (meta["links"], meta["members"]):
            old.unlink(missing_ok=True)
