"""Memory of the dedup index per document: the one structure of a run that grows with the corpus.

The dedupe step's `build_index` holds every document's MinHash in a `MinHashLSH` (Jaccard) and a
`MinHashLSHEnsemble` (containment) at once; everything else in a run streams shard by shard.
This measures the Python heap that `build_index` allocates (tracemalloc peak) on generated
corpora of the given sizes, so the growth of a run's peak RSS can be checked against it.

    python -m bench.index_memory --corpus ../shared/corpora/bbc --sizes 1000,4000
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_RESULTS, markdown_table, write_results
from bench.synth import generate
from textmill.tasks.dedupe import Deduplicator
from textmill.tasks.document import Document


def index_bytes(texts: list[str]) -> dict[str, Any]:
    """tracemalloc peak of `build_index` over the summaries of `texts` (default options)."""
    step = Deduplicator()
    docs = [Document(id=f"d{i:07d}", path=f"d{i:07d}", sha256="", text=t) for i, t in enumerate(texts)]
    summaries = [(d.id, s) for d, s in zip(docs, step.summarize(docs))]
    tracemalloc.start()
    index = step.build_index(iter(summaries))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"documents": len(texts), "peak_bytes": peak, "bytes_per_document": peak / len(texts), "stats": index["stats"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--sizes", default="1000,4000")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"error: corpus folder not found: {args.corpus}")
    points = []
    for size in (int(x) for x in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            generate(args.corpus, Path(tmp), size, seed=size)
            texts = [p.read_text(encoding="utf-8") for p in sorted(Path(tmp).rglob("*.txt"))]
        points.append(index_bytes(texts))
        print(f"{size} documents: {points[-1]['bytes_per_document']:.0f} bytes per document", file=sys.stderr)
    table = markdown_table(
        ["documents", "index peak MB", "bytes per document"],
        [[p["documents"], p["peak_bytes"] / 1e6, round(p["bytes_per_document"])] for p in points],
    )
    _, md = write_results(args.results, "index-memory", {"points": points}, "### Dedup index memory (tracemalloc peak of build_index)\n\n" + table)
    print(md.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
