"""The `dedupe` step: cluster exact and near-duplicate documents, keep the most complete one.

Per document (cached): a normalised-text key and a MinHash of word shingles. Corpus-wide:
exact groups by key, near-duplicates by estimated Jaccard (the bands of datasketch's
MinHashLSH) and by estimated containment (the bandings of its MinHashLSHEnsemble), because
news sites often republish a truncated copy of a longer article. The index is partitioned
on disk (`tasks/dedupe_bands.py`, `tasks/dedupe_index.py`): each shard writes its band rows
per partition, each partition verifies the candidates of its buckets, and union-find closes
the verified links only, so no process holds the corpus's signatures.
"""
from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from textmill.tasks.base import CorpusStep, StepOptions
from textmill.tasks.dedupe_bands import BandLayout, size_bucket, write_shard_files
from textmill.tasks.dedupe_index import Thresholds, combine_partials, reduce_partition
from textmill.tasks.document import Document

__all__ = [
    "Deduplicator",
    "decode_signature",
    "encode_signature",
    "estimated_containment",
    "normalized_words",
    "shingles",
    "size_bucket",
]

_WORD = re.compile(r"\w+")
# Permutation scheme of the signatures in summaries: changing it changes every signature.
_SCHEME = "affine32"
_SIGNATURE_DTYPE = np.dtype("<u4")


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


class Deduplicator(CorpusStep):
    """Mark exact and near-duplicate documents; the most complete member of a cluster stays `ok`."""

    name: ClassVar[str] = "dedupe"
    version: ClassVar[str] = "2"
    # 2: partials in columns; partition state keeps its rows (tasks/dedupe_index.py).
    index_layout: ClassVar[str] = "2"
    libraries: ClassVar[tuple[str, ...]] = ("datasketch",)

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
        partitions: int = Field(
            64,
            ge=1,
            le=4096,
            description="Most partitions of the on-disk index, one task each (never more than shards); "
            "a partition task holds the band rows of its share of the buckets.",
        )

    options: Options

    def summarize(self, docs: list[Document]) -> list[dict[str, Any]]:
        """Key, signature and sizes per document: the only phase that reads the text."""
        from datasketch import MinHash  # SciPy: 0.5 s, paid by the processes that summarize

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

    def partitions(self, shards: int) -> int:
        """`partitions` of the options, but no more than one per shard (a small corpus needs no
        more tasks than it has shards), rounded down to a power of two: a new count rebuilds
        every partition, so a growing corpus changes it only when its shards double."""
        return min(self.options.partitions, 1 << (max(1, shards).bit_length() - 1))

    def layout(self) -> BandLayout:
        """The slots of the band rows for these options."""
        opts = self.options
        return BandLayout.of(
            opts.num_perm, opts.jaccard_threshold, opts.containment_threshold if opts.containment else None
        )

    def spill(self, summaries: list[tuple[str, dict[str, Any]]], folder: Path, partitions: int) -> None:
        """The shard's signatures in columns and its band rows, one record batch per partition."""
        opts = self.options
        signatures = np.empty((len(summaries), opts.num_perm), dtype=np.uint32)
        for i, (doc_id, summary) in enumerate(summaries):
            hashvalues = decode_signature(summary["minhash"])
            if len(hashvalues) != opts.num_perm:
                raise ValueError(
                    f"summary of {doc_id!r} has {len(hashvalues)} MinHash values, expected {opts.num_perm}"
                )
            signatures[i] = hashvalues
        write_shard_files(self.layout(), partitions, summaries, signatures, folder)

    def reduce(self, partition: int, bundles: list[Path], state: Path) -> dict[str, Any]:
        """Verified links of this partition's buckets, updated from the bundles that changed."""
        opts = self.options
        thresholds = Thresholds(
            opts.jaccard_threshold,
            opts.containment_threshold if opts.containment else None,
            opts.containment_min_shingles,
        )
        return reduce_partition(self.layout(), thresholds, partition, bundles, state)

    def combine(self, partials: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """Clusters by union-find over the verified links; the result does not depend on the
        order of the documents, their shards or earlier runs."""
        return combine_partials(partials)

    def decide(self, index: dict[str, Any], doc_id: str, summary: dict[str, Any]) -> dict[str, Any]:
        """The document's cluster entry; a document in no cluster is its own canonical."""
        return index["clusters"].get(doc_id, {"cluster": doc_id, "duplicate_of": None})

    def decisions_key(self, index: dict[str, Any], doc_ids: list[str]) -> str | None:
        """The cluster entries of `doc_ids`: a document's decision is its entry alone."""
        clusters = index["clusters"]
        key = hashlib.sha256()
        for doc_id in doc_ids:
            entry = clusters.get(doc_id) or {"cluster": "", "duplicate_of": None}  # ids are never empty
            key.update(f"{doc_id}\0{entry['cluster']}\0{entry['duplicate_of'] or ''}\0".encode())
        return key.hexdigest()

    def apply(self, doc: Document, summary: dict[str, Any], decision: dict[str, Any]) -> Document:
        """Record the cluster; a non-canonical member becomes a `duplicate`."""
        duplicate_of = decision["duplicate_of"]
        return self.stamp(
            doc,
            cluster=decision["cluster"],
            duplicate_of=duplicate_of,
            status="duplicate" if duplicate_of else doc.status,
        )


def _date_string(value: Any) -> str | None:
    """Dates compare as ISO strings; anything else a cleaner left in `meta` is stringified."""
    if value is None or value == "":
        return None
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)
