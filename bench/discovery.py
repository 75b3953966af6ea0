"""Discovery, cold against warm: hashing every file against trusting unchanged stats.

Runs `discover()` three times over CORPUS with a fresh cache folder: cold (no cache: every file
read and hashed), warm (nothing changed: stats only), then warm after touching 1% of the files
(their bytes rewritten, mtime moved back an hour so they are not racily clean), which hashes
those again. The file bytes are in the page cache from the first pass on, so "cold" here is
the hashing cost, not the disk's.

    python -m bench.discovery /tmp/corpus-100k
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_RESULTS, markdown_table, write_results
from textmill.tasks.filehashes import FileHashes
from textmill.tasks.read import discover

HOUR_NS = 3600 * 1_000_000_000


def scan(corpus: Path, cache: Path) -> dict[str, Any]:
    """One discovery with the cache, saved as the flow saves it; seconds and counts."""
    started = time.perf_counter()
    hashes = FileHashes.load(cache, corpus)
    files = sum(1 for _ in discover(corpus, hashes=hashes))
    hashes.save(cache)
    return {"seconds": time.perf_counter() - started, "files": files, "hashed": hashes.hashed, "unchanged": hashes.reused}


def age(corpus: Path) -> None:
    """Move every file's mtime an hour back, so that no entry of the first scan is racily clean."""
    for path in corpus.rglob("*"):
        if path.is_file():
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - HOUR_NS))


def touch_one_percent(corpus: Path) -> int:
    """Rewrite every hundredth file in place with the same bytes, a new (old) mtime."""
    files = sorted(p for p in corpus.rglob("*") if p.is_file())[::100]
    for path in files:
        path.write_bytes(path.read_bytes())
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - HOUR_NS))
    return len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"error: corpus folder not found: {args.corpus}")
    age(args.corpus)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "file-hashes.json"
        runs = {"cold": scan(args.corpus, cache), "warm": scan(args.corpus, cache)}
        touch_one_percent(args.corpus)
        runs["warm, 1% rewritten"] = scan(args.corpus, cache)
        cache_bytes = cache.stat().st_size
    cold = runs["cold"]["seconds"]
    table = markdown_table(
        ["scan", "files", "hashed", "unchanged", "seconds", "share of cold"],
        [[name, r["files"], r["hashed"], r["unchanged"], r["seconds"], f"{100 * r['seconds'] / cold:.1f}%"] for name, r in runs.items()],
    )
    heading = f"### Discovery of {runs['cold']['files']:,} files (cache file {cache_bytes / 1e6:.1f} MB)\n\n"
    _, md = write_results(args.results, "discovery", {"runs": runs, "cache_bytes": cache_bytes}, heading + table)
    print(md.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
