"""LSH bands of MinHash signatures as rows on disk: the layout, the keys and a shard's files.

Every candidate pair of the dedupe index comes from two documents sharing a bucket, a 64-bit
key: the top 12 bits name a *slot* (one band of one banding, or the exact-text census), the
other 52 a hash of the band's values. A row is `(key, row, size)`; a shard writes its rows
to one file with one record batch per partition (`partition = mix(key) % partitions`), so
the rows of a bucket always meet in one partition task, whatever shard they came from. Each
batch is sorted by key, so an update finds the rows of the buckets it touches by binary
search, and the census rows (the highest slots) are the batch's tail.

Slots, for signatures of `num_perm` values:

* Jaccard: the `(b, r)` bands datasketch's `MinHashLSH` picks for the threshold (weights 0.1,
  0.9), so the candidates are exactly those a `MinHashLSH` query returns.
* Containment: `MinHashLSHEnsemble` answers "is Q mostly inside X" with one banding per ratio
  of set sizes: for `x/q` on its grid of ratios it picks the `(b, r)` that best separates
  containment above the threshold (converted to a Jaccard by the sizes) from below. The
  ensemble keeps `num_perm // r` bands of width `r` for each `r` it uses and queries the
  first `b`; here each of those bands is a slot, and a pair in a bucket of slot `(r, band)`
  is a candidate when the banding for `size_bucket(x)/q` is `(b, r)` with `band < b`. The
  size grid is fixed (`size_bucket`), not fitted to the corpus as the ensemble's size
  partitions are, so a document's candidates never depend on which other documents exist.
* Census: one row per document keyed by its normalised text, so exact copies meet too.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import math
import mmap
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

# LSH candidates are verified afterwards, so the bands are tuned for recall over precision:
# with the default (0.5, 0.5) the ensemble finds a 25% prefix of a document only half the time.
LSH_WEIGHTS = (0.1, 0.9)
# MinHashLSH needs at least two bands; above this candidate threshold they collapse into one.
MAX_LSH_THRESHOLD = 0.95
_SIZE_GRID_RATIO = 1.05

SLOT_BITS = 12
HASH_BITS = 64 - SLOT_BITS
CENSUS = (1 << SLOT_BITS) - 2  # one row per document with words: its normalised text
EMPTY = (1 << SLOT_BITS) - 1  # one row per document without words: counted, never linked
JACCARD, CONTAINMENT = 0, 1
# The smallest census key: in a batch sorted by key, the census rows are the tail from here.
CENSUS_FLOOR = np.uint64(CENSUS << HASH_BITS)

DOCS_FILE = "dedupe-docs.arrow"
# Signatures apart, uncompressed (random values do not compress), so that a partition reads
# the rows of the documents it verifies through a memory map instead of the whole column.
SIGNATURES_FILE = "dedupe-signatures.npy"
ROWS_FILE = "dedupe-rows.arrow"
ROW_SCHEMA = pa.schema([("key", pa.uint64()), ("row", pa.uint32()), ("size", pa.uint32())])
IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")
# Rows files are uncompressed: their keys are hashes, which zstd does not shrink, and
# decompressing was most of reading a partition's batch.
ROWS_OPTIONS = pa.ipc.IpcWriteOptions()

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def size_bucket(size: int) -> int:
    """Round `size` up onto a fixed geometric grid (ratio 1.05): the containment banding is
    chosen per grid point, and a fixed grid keeps it a function of the two documents alone."""
    if size <= 20:
        return size
    step = math.ceil(math.log(size) / math.log(_SIZE_GRID_RATIO) - 1e-9)
    return max(size, math.ceil(_SIZE_GRID_RATIO**step))


def mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 values: a cheap, well-spread, platform-stable hash."""
    x = values.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def slot_keys(slot: int, hashes: np.ndarray) -> np.ndarray:
    """Bucket keys: the slot in the top bits, the top 52 bits of `hashes` below it."""
    return (np.uint64(slot) << np.uint64(HASH_BITS)) | (hashes >> np.uint64(SLOT_BITS))


def key_slots(keys: np.ndarray) -> np.ndarray:
    return (keys >> np.uint64(HASH_BITS)).astype(np.int64)


def partition_of(keys: np.ndarray, partitions: int) -> np.ndarray:
    return (mix(keys) % np.uint64(partitions)).astype(np.int64)


def text_hash(text_key: str) -> int:
    """64 bits of a summary's normalised-text key (itself a sha256 hex digest)."""
    return int(text_key[:16], 16)


def id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big")


@dataclass(frozen=True)
class BandLayout:
    """Every slot's band (first value, width) and kind, and the containment banding per size ratio."""

    num_perm: int
    jaccard_threshold: float
    containment_threshold: float
    starts: tuple[int, ...]
    widths: tuple[int, ...]
    kinds: tuple[int, ...]
    bands: tuple[int, ...]  # the band's position in its banding
    xqs: tuple[float, ...]  # the ensemble's grid of size ratios x/q
    params: tuple[tuple[int, int], ...]  # (b, r) per grid ratio

    @staticmethod
    @cache
    def of(num_perm: int, jaccard_threshold: float, containment_threshold: float | None) -> BandLayout:
        """The layout for these options (`containment_threshold` None: no containment slots)."""
        from datasketch import MinHashLSH, MinHashLSHEnsemble  # SciPy: 0.5 s, paid by the tasks that band

        lsh = MinHashLSH(threshold=min(jaccard_threshold, MAX_LSH_THRESHOLD), num_perm=num_perm, weights=LSH_WEIGHTS)
        starts = [i * lsh.r for i in range(lsh.b)]
        widths = [lsh.r] * lsh.b
        kinds = [JACCARD] * lsh.b
        bands = list(range(lsh.b))
        xqs: tuple[float, ...] = ()
        params: tuple[tuple[int, int], ...] = ()
        if containment_threshold is not None:
            ensemble = MinHashLSHEnsemble(threshold=containment_threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
            xqs = tuple(float(x) for x in ensemble.xqs)
            params = tuple((int(b), int(r)) for b, r in ensemble.params)
            for r in sorted({r for _, r in params}):
                used = max(b for b, rr in params if rr == r)
                for i in range(min(used, num_perm // r)):
                    starts.append(i * r)
                    widths.append(r)
                    kinds.append(CONTAINMENT)
                    bands.append(i)
        if len(starts) >= CENSUS:
            raise ValueError(f"{len(starts)} LSH bands do not fit in {SLOT_BITS}-bit slots")
        return BandLayout(
            num_perm, jaccard_threshold, containment_threshold or 0.0,
            tuple(starts), tuple(widths), tuple(kinds), tuple(bands), xqs, params,
        )

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """`(slots, n)` bucket keys of `n` signatures, one row per slot."""
        values = signatures.astype(np.uint64)
        keys = np.empty((len(self.starts), len(signatures)), dtype=np.uint64)
        for slot, (start, width) in enumerate(zip(self.starts, self.widths)):
            acc = np.full(len(signatures), ((slot + 1) * _GOLDEN) & _MASK64, dtype=np.uint64)
            for column in range(start, start + width):
                acc = mix(acc ^ values[:, column])
            keys[slot] = slot_keys(slot, acc)
        return keys


def write_shard_files(
    layout: BandLayout,
    partitions: int,
    summaries: list[tuple[str, dict[str, Any]]],
    signatures: np.ndarray,
    folder: Path,
) -> None:
    """A shard's columnar documents (ids, signatures, sizes, ranking fields) and its rows.

    Of several documents with the same text in the shard only the first gets band rows: the
    census links the copies, and the bands stay small when a page is copied many times.
    """
    n = len(summaries)
    sizes = np.array([int(s["size"]) for _, s in summaries], dtype=np.uint32)
    docs = pa.table(
        {
            "id": pa.array([doc_id for doc_id, _ in summaries], pa.string()),
            "size": pa.array(sizes, pa.uint32()),
            "length": pa.array([int(s["length"]) for _, s in summaries], pa.int64()),
            "date": pa.array([s.get("date") for _, s in summaries], pa.string()),
            "path": pa.array([s.get("path") or "" for _, s in summaries], pa.string()),
        }
    )
    with pa.ipc.new_file(folder / DOCS_FILE, docs.schema, options=IPC_OPTIONS) as writer:
        writer.write_table(docs)
    np.save(folder / SIGNATURES_FILE, np.ascontiguousarray(signatures.reshape(n, layout.num_perm), dtype="<u4"))

    census = np.empty(n, dtype=np.uint64)
    first_of_text: dict[str, int] = {}
    banded: list[int] = []
    for i, (doc_id, summary) in enumerate(summaries):
        text_key = summary["key"]
        if text_key is None:
            census[i] = slot_keys(EMPTY, np.array([id_hash(doc_id)], dtype=np.uint64))[0]
            continue
        census[i] = slot_keys(CENSUS, np.array([text_hash(text_key)], dtype=np.uint64))[0]
        if text_key not in first_of_text and sizes[i] > 0:
            first_of_text[text_key] = i
            banded.append(i)
    band_rows = np.array(banded, dtype=np.uint32)
    band_keys = layout.band_keys(signatures[band_rows]) if len(band_rows) else np.empty((0, 0), np.uint64)
    keys = np.concatenate([census, band_keys.reshape(-1)])
    rows = np.concatenate([np.arange(n, dtype=np.uint32), np.tile(band_rows, len(layout.starts))])
    parts = partition_of(keys, partitions)
    order = np.lexsort((rows, keys, parts))
    bounds = np.searchsorted(parts[order], np.arange(partitions + 1))
    with pa.ipc.new_file(folder / ROWS_FILE, ROW_SCHEMA, options=ROWS_OPTIONS) as writer:
        for p in range(partitions):
            chosen = order[bounds[p] : bounds[p + 1]]
            writer.write_batch(
                pa.record_batch(
                    [pa.array(keys[chosen]), pa.array(rows[chosen]), pa.array(sizes[rows[chosen]])],
                    schema=ROW_SCHEMA,
                )
            )


def read_partition_rows(folder: Path, partition: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One partition's `(key, row, size)` arrays from a shard's rows file."""
    batch = _read_batch(folder, partition)
    return tuple(batch.column(i).to_numpy(zero_copy_only=False).copy() for i in range(3))  # type: ignore[return-value]


def read_touched_rows(
    folder: Path, partition: int, keys: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """From one read of a partition's batch: the `(key, row, size)` rows of the buckets in
    `keys` (sorted, unique), and the keys of its census rows (one per document)."""
    batch = _read_batch(folder, partition)
    columns = [batch.column(i).to_numpy(zero_copy_only=False) for i in range(3)]
    key = columns[0]
    chosen = _rows_with_keys(key, keys)
    if _is_sorted(key):
        census = key[np.searchsorted(key, CENSUS_FLOOR) :].copy()
    else:
        census = key[is_census(key)]
    return (columns[0][chosen], columns[1][chosen], columns[2][chosen]), census


def is_census(keys: np.ndarray) -> np.ndarray:
    """Whether each key is a census row's (`CENSUS` or `EMPTY` slot, the highest two)."""
    return keys >= CENSUS_FLOOR


def _rows_with_keys(key: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Indexes of the rows of `key` whose key is in `keys` (sorted, unique), in row order: by
    binary search when `key` is sorted (every bundle since batches are), else by a scan."""
    if not _is_sorted(key):
        at = np.minimum(np.searchsorted(keys, key), max(len(keys) - 1, 0))
        return np.flatnonzero(keys[at] == key) if len(keys) else np.empty(0, np.int64)
    # Most touched buckets have no row in a given bundle: find each key's first row, then the
    # ends of the runs of the keys that are there only.
    lo = np.searchsorted(key, keys, side="left")
    present = lo < len(key)
    present[present] = key[lo[present]] == keys[present]
    lo = lo[present]
    counts = np.searchsorted(key, keys[present], side="right") - lo
    total = int(counts.sum())
    if not total:
        return np.empty(0, np.int64)
    return np.arange(total) + np.repeat(lo - (np.cumsum(counts) - counts), counts)


def _is_sorted(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] >= values[:-1]))


def _read_batch(folder: Path, partition: int) -> pa.RecordBatch:
    readers = _open_rows()
    reader = readers.get(str(folder))
    if reader is None:
        reader = readers[str(folder)] = pa.ipc.open_file(pa.OSFile(str(folder / ROWS_FILE)))
    return reader.get_batch(partition)


def keep_rows_open(folders: list[Path]) -> None:
    """Close this thread's rows and signatures files other than those of `folders`.

    A worker reduces several partitions in turn over the same shards: keeping their rows files
    open saves opening each file and parsing its footer per partition, most of reading one
    batch, and keeping their signatures mapped saves parsing each `.npy` header and mapping the
    file again (a fifth of a partition's update at 100,000 documents). A bundle's files are
    never rewritten (a changed shard gets a new bundle), so an open file cannot go stale;
    closing the others lets a collected bundle's space go.
    """
    keep = {str(folder) for folder in folders}
    for opened in (_open_rows(), _open_signatures()):
        for folder in [f for f in opened if f not in keep]:
            del opened[folder]


def _open_rows() -> dict[str, pa.ipc.RecordBatchFileReader]:
    readers = getattr(_rows_files, "readers", None)
    if readers is None:
        readers = _rows_files.readers = {}
    return readers


def _open_signatures() -> dict[str, tuple[mmap.mmap, np.ndarray]]:
    maps = getattr(_rows_files, "signatures", None)
    if maps is None:
        maps = _rows_files.signatures = {}
    return maps


def _map_signatures(path: Path) -> tuple[mmap.mmap, np.ndarray]:
    """A `.npy` file mapped read-only, with the map itself, so its pages can be given back."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        if fortran:
            raise ValueError(f"{path} holds a Fortran-ordered array, expected C order")
        offset = fh.tell()
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    count = int(np.prod(shape))
    return mapped, np.frombuffer(mapped, dtype=dtype, count=count, offset=offset).reshape(shape)


def release_memory() -> None:
    """Give back what reducing a partition leaves in the process: the pages of the mapped
    signatures files (they stay in the OS's page cache, and a later read faults them in
    again), the memory Arrow's pool keeps for reuse, and the free memory at the top of glibc's
    heap. Without it a worker that reduced its partitions kept every signature it touched
    resident into the stages after: at 1,000,000 documents up to every shard's signatures,
    about 512 bytes per document, under the language models it loads next."""
    release_signature_pages()
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def release_signature_pages() -> None:
    """Drop this thread's mapped signature pages from the process (not from the page cache)."""
    if hasattr(mmap, "MADV_DONTNEED"):
        for mapped, _ in _open_signatures().values():
            mapped.madvise(mmap.MADV_DONTNEED)


@cache
def _malloc_trim() -> Any:
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_rows_files = threading.local()


def read_docs(folder: Path, columns: list[str]) -> pa.Table:
    """Columns of a shard's documents file, in row order (the others are not read)."""
    with pa.OSFile(str(folder / DOCS_FILE)) as source:
        names = pa.ipc.open_file(source).schema.names
    fields = [names.index(c) for c in columns]
    with pa.OSFile(str(folder / DOCS_FILE)) as source:
        reader = pa.ipc.open_file(source, options=pa.ipc.IpcReadOptions(included_fields=fields))
        return reader.read_all().select(columns)


def read_signatures(folder: Path, rows: np.ndarray) -> np.ndarray:
    """The signatures of a shard's documents at `rows`, `(len(rows), num_perm)` uint32; only
    their pages of the file are read (the file stays mapped: `keep_rows_open`)."""
    maps = _open_signatures()
    if str(folder) not in maps:
        maps[str(folder)] = _map_signatures(folder / SIGNATURES_FILE)
    return maps[str(folder)][1][rows].astype(np.uint32, copy=False)
