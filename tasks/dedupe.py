"""The `dedupe` step: cluster exact and near-duplicate documents, keep the most complete one.

Per document (cached): a normalised-text key and a MinHash of word shingles. Corpus-wide:
exact groups by key, near-duplicates by estimated Jaccard (MinHashLSH) and by estimated
containment (MinHashLSHEnsemble), because news sites often republish a truncated copy of a
longer article. Every LSH candidate is verified by its estimate before it is linked, and the
links are closed transitively with union-find.
"""
from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH, MinHashLSHEnsemble
from pydantic import Field

from textmill.tasks.base import CorpusStep, StepOptions
from textmill.tasks.document import Document
from textmill.tasks.union_find import UnionFind

_WORD = re.compile(r"\w+")
# Permutation scheme of the signatures in summaries: changing it changes every signature.
_SCHEME = "affine32"
_SIGNATURE_DTYPE = np.dtype("<u4")
# LSH candidates are verified afterwards, so the bands are tuned for recall over precision:
# with the default (0.5, 0.5) the ensemble finds a 25% prefix of a document only half the time.
_LSH_WEIGHTS = (0.1, 0.9)
# MinHashLSH needs at least two bands; above this candidate threshold they collapse into one.
_MAX_LSH_THRESHOLD = 0.95
# MinHashLSHEnsemble partitions by set size in time cubic in the number of distinct sizes
# (100k documents: about 4,500 sizes, two minutes); a geometric grid keeps a few hundred.
_SIZE_GRID_RATIO = 1.05


def normalized_words(text: str) -> list[str]:
    """Casefolded word tokens: case, punctuation and whitespace differences do not count."""
    return _WORD.findall(text.casefold())


def shingles(words: list[str], size: int) -> set[bytes]:
    """The distinct `size`-word shingles; a shorter non-empty text is a single shingle."""
    if not words:
        return set()
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


def encode_signature(hashvalues: np.ndarray) -> str:
    """A MinHash signature as compact base64 (little-endian uint32), not a list of ints."""
    return base64.b64encode(hashvalues.astype(_SIGNATURE_DTYPE).tobytes()).decode("ascii")


def decode_signature(data: str) -> np.ndarray:
    """Inverse of `encode_signature`."""
    return np.frombuffer(base64.b64decode(data), dtype=_SIGNATURE_DTYPE)


def estimated_containment(jaccard: float, size_a: int, size_b: int) -> float:
    """Estimate |A∩B|/|A| from the Jaccard estimate J and set sizes: J(|A|+|B|)/((1+J)|A|)."""
    if jaccard <= 0.0 or size_a <= 0:
        return 0.0
    return min(1.0, jaccard * (size_a + size_b) / ((1.0 + jaccard) * size_a))


def size_bucket(size: int) -> int:
    """Round `size` up onto a geometric grid, so the ensemble sees few distinct sizes."""
    if size <= 20:
        return size
    step = math.ceil(math.log(size) / math.log(_SIZE_GRID_RATIO) - 1e-9)
    return max(size, math.ceil(_SIZE_GRID_RATIO**step))


@dataclass(frozen=True, slots=True)
class _Entry:
    """What `build_index` keeps per document: the signature and the fields that rank a cluster."""

    key: str | None
    minhash: LeanMinHash
    size: int
    length: int
    date: str | None
    path: str

    def rank(self, doc_id: str) -> tuple[Any, ...]:
        """Canonical order: longest text, then earliest date (missing last), then path, then id."""
        return (-self.length, self.date is None, self.date or "", self.path, doc_id)


class Deduplicator(CorpusStep):
    """Mark exact and near-duplicate documents; the most complete member of a cluster stays `ok`."""

    name: ClassVar[str] = "dedupe"
    version: ClassVar[str] = "1"

    class Options(StepOptions):
        """Options of the `dedupe` step (`[steps.dedupe]`)."""

        jaccard_threshold: float = Field(
            0.8,
            gt=0.0,
            le=1.0,
            description="Estimated Jaccard similarity of two shingle sets that makes near-duplicates.",
        )
        containment: bool = Field(
            True,
            description="Also link a document whose shingles are mostly inside another (a truncated copy).",
        )
        containment_threshold: float = Field(
            0.8,
            gt=0.0,
            le=1.0,
            description="Estimated share |A∩B|/|A| of A's shingles found in B that makes A a copy of B.",
        )
        containment_min_shingles: int = Field(
            10,
            ge=1,
            description="Documents with fewer distinct shingles are never matched by containment: a few "
            "shingles found inside a long text are too weak (and too noisy an estimate) to call a copy.",
        )
        num_perm: int = Field(
            128, ge=32, le=1024, description="MinHash permutations: more is more accurate and slower."
        )
        shingle_size: int = Field(
            5, ge=1, le=32, description="Words per shingle; a shorter text is a single shingle."
        )
        seed: int = Field(1, ge=0, description="MinHash seed; signatures of different seeds never match.")

    options: Options

    def summarize(self, docs: list[Document]) -> list[dict[str, Any]]:
        """Key, signature and sizes per document: the only phase that reads the text."""
        opts = self.options
        words = [normalized_words(doc.text) for doc in docs]
        shingle_sets = [shingles(w, opts.shingle_size) for w in words]
        minhashes = MinHash.bulk(shingle_sets, num_perm=opts.num_perm, seed=opts.seed, scheme=_SCHEME)
        return [
            {
                "key": hashlib.sha256(" ".join(w).encode()).hexdigest() if w else None,
                "minhash": encode_signature(m.hashvalues),
                "size": len(s),
                "length": len(doc.text),
                "date": _date_string(doc.meta.get("date")),
                "path": doc.path,
            }
            for doc, w, s, m in zip(docs, words, shingle_sets, minhashes)
        ]

    def build_index(self, summaries: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        """Cluster the corpus; the result does not depend on the order of `summaries`."""
        entries = self._load(summaries)
        ids = sorted(entries)
        links = UnionFind(ids)
        exact_duplicates = 0
        first_with_key: dict[str, str] = {}
        for doc_id in ids:
            key = entries[doc_id].key
            if key is None:
                continue
            if key in first_with_key:
                links.union(first_with_key[key], doc_id)
                exact_duplicates += 1
            else:
                first_with_key[key] = doc_id
        # Equal keys mean equal shingle sets, so one document per key is enough from here on.
        unique = sorted(doc_id for doc_id in first_with_key.values() if entries[doc_id].size > 0)
        self._link_similar(unique, entries, links)
        if self.options.containment:
            self._link_contained(unique, entries, links)
        return _index(entries, links, exact_duplicates)

    def decide(self, index: dict[str, Any], doc_id: str, summary: dict[str, Any]) -> dict[str, Any]:
        """The document's cluster entry; a document in no cluster is its own canonical."""
        return index["clusters"].get(doc_id, {"cluster": doc_id, "duplicate_of": None})

    def apply(self, doc: Document, summary: dict[str, Any], decision: dict[str, Any]) -> Document:
        """Record the cluster; a non-canonical member becomes a `duplicate`."""
        duplicate_of = decision["duplicate_of"]
        return self.stamp(
            doc,
            cluster=decision["cluster"],
            duplicate_of=duplicate_of,
            status="duplicate" if duplicate_of else doc.status,
        )

    def _load(self, summaries: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, _Entry]:
        """Decode the summaries one at a time, keeping signatures and ranking fields only."""
        opts = self.options
        entries: dict[str, _Entry] = {}
        for doc_id, summary in summaries:
            hashvalues = decode_signature(summary["minhash"])
            if len(hashvalues) != opts.num_perm:
                raise ValueError(
                    f"summary of {doc_id!r} has {len(hashvalues)} MinHash values, expected {opts.num_perm}"
                )
            entries[doc_id] = _Entry(
                key=summary["key"],
                minhash=LeanMinHash(seed=opts.seed, hashvalues=hashvalues, scheme=_SCHEME),
                size=int(summary["size"]),
                length=int(summary["length"]),
                date=summary.get("date"),
                path=summary.get("path") or "",
            )
        return entries

    def _link_similar(self, ids: list[str], entries: dict[str, _Entry], links: UnionFind) -> None:
        """Link pairs whose estimated Jaccard similarity reaches the threshold."""
        threshold = self.options.jaccard_threshold
        lsh = MinHashLSH(
            threshold=min(threshold, _MAX_LSH_THRESHOLD),
            num_perm=self.options.num_perm,
            weights=_LSH_WEIGHTS,
        )
        with lsh.insertion_session() as session:
            for doc_id in ids:
                session.insert(doc_id, entries[doc_id].minhash, check_duplication=False)
        for doc_id in ids:
            query = entries[doc_id].minhash
            for other in lsh.query(query):
                if other > doc_id and query.jaccard(entries[other].minhash) >= threshold:
                    links.union(doc_id, other)

    def _link_contained(self, ids: list[str], entries: dict[str, _Entry], links: UnionFind) -> None:
        """Link each document to those holding most of its shingles: it is a truncated copy."""
        if len(ids) < 2:
            return
        opts = self.options
        ensemble = MinHashLSHEnsemble(
            threshold=opts.containment_threshold, num_perm=opts.num_perm, weights=_LSH_WEIGHTS
        )
        ensemble.index([(i, entries[i].minhash, size_bucket(entries[i].size)) for i in ids])
        for doc_id in ids:
            entry = entries[doc_id]
            if entry.size < opts.containment_min_shingles:
                continue
            for other in set(ensemble.query(entry.minhash, entry.size)):
                if other == doc_id:
                    continue
                container = entries[other]
                jaccard = entry.minhash.jaccard(container.minhash)
                if estimated_containment(jaccard, entry.size, container.size) >= opts.containment_threshold:
                    links.union(doc_id, other)


def _index(entries: dict[str, _Entry], links: UnionFind, exact_duplicates: int) -> dict[str, Any]:
    """Name each cluster of 2+ after its most complete member; JSON-able, sorted by id."""
    clusters: dict[str, dict[str, str | None]] = {}
    count = 0
    for group in links.groups():
        if len(group) < 2:
            continue
        count += 1
        canonical = min(group, key=lambda doc_id: entries[doc_id].rank(doc_id))
        for doc_id in group:
            clusters[doc_id] = {
                "cluster": canonical,
                "duplicate_of": None if doc_id == canonical else canonical,
            }
    duplicates = len(clusters) - count
    return {
        "clusters": dict(sorted(clusters.items())),
        "stats": {
            "documents": len(entries),
            "clusters": count,
            "exact_duplicates": exact_duplicates,
            "near_duplicates": duplicates - exact_duplicates,
        },
    }


def _date_string(value: Any) -> str | None:
    """Dates compare as ISO strings; anything else a cleaner left in `meta` is stringified."""
    if value is None or value == "":
        return None
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)
