"""Memory of the dedupe index phases per document: the structure of a run that grows with the corpus.

The index runs as the flow runs it: the summarize phase writes each shard's bundle (its
signatures in columns and its band rows per partition), then one process per partition
reduces its buckets to verified links, then one process combines the links into clusters.
Each phase runs in its own processes here and reports their peak RSS (`ru_maxrss`); the
per-document part is (peak - the RSS of a process that loaded the same libraries and read one
shard's files) / documents.
After the cold build, one shard changes (1% of its documents dropped, as many added) and every
partition updates its kept state: the incremental reduce. Then every shard changes (1% of each
shard's documents edited, as `bench.scale`'s edited run does): every bundle is new and every old
one gone, the update that holds the most. Recall is checked against the duplicates the
generator planted.

    python -m bench.index_memory --corpus ../shared/corpora/bbc --sizes 10000
    python -m bench.index_memory --folder /tmp/dd-c100k   # a corpus bench.synth already wrote
    python -m bench.index_memory --corpus ../shared/corpora/bbc --sizes 100000 --work /tmp/im  # keep and reuse
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_RESULTS, markdown_table, write_results
from bench.synth import generate

SHARD_SIZE = 500


def peak_mb() -> float:
    """This process's peak RSS (VmHWM). Not `ru_maxrss`: Linux carries that across exec from
    the parent's fork, so a small child of a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summarize_shard(args: tuple[Path, list[str], Path, int, frozenset[str]]) -> tuple[str, float]:
    """Summarize one shard's files (those in the last item edited: a word added) and write its
    bundle; returns the folder and this worker's peak."""
    from textmill.tasks.bundle import write_bundle
    from textmill.tasks.dedupe import Deduplicator
    from textmill.tasks.document import Document

    root, ids, folder, partitions, edited = args
    if folder.exists():  # kept from an earlier measurement (--work)
        return str(folder), 0.0
    step = Deduplicator()
    texts = {i: (root / i).read_text(encoding="utf-8") for i in ids}
    docs = [Document(id=i, path=i, sha256="", text=texts[i] + (" edited" if i in edited else "")) for i in ids]
    write_bundle(folder, list(zip(ids, step.summarize(docs))), step, partitions)
    return str(folder), peak_mb()


def summarize_all(jobs: list[tuple[Path, list[str], Path, int, frozenset[str]]]) -> list[tuple[str, float]]:
    """`summarize_shard` over `jobs` on two spawned workers."""
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(summarize_shard, jobs))


def child(command: list[str]) -> dict[str, Any]:
    """Run `python -m bench.index_memory <command>` and parse the JSON it prints."""
    out = subprocess.run([sys.executable, "-m", "bench.index_memory", *command], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(root: Path, planted: dict[str, str] | None, work: Path, partitions: int) -> dict[str, Any]:
    ids = sorted(str(p.relative_to(root)) for p in root.rglob("*.txt"))
    members = {n: ids[start : start + SHARD_SIZE] for n, start in enumerate(range(0, len(ids), SHARD_SIZE))}  # as a first run assigns them
    count = min(partitions, len(members))
    started = time.perf_counter()
    jobs = [(root, members[s], work / "bundles" / f"shard-{s}", count, frozenset()) for s in sorted(members)]
    results = summarize_all(jobs)
    summarize_s = time.perf_counter() - started
    bundles = [folder for folder, _ in results]
    listing = work / "bundles.json"
    listing.write_text(json.dumps(bundles))
    baseline = child(["baseline", str(listing)])["peak_mb"]
    imports = child(["imports"])["peak_mb"]

    def reduce_all(tag: str) -> tuple[list[dict[str, Any]], float]:
        began = time.perf_counter()
        runs = [child(["reduce", str(listing), str(p), str(work / "state" / f"p{p}"), str(work / f"{tag}-{p}.json")]) for p in range(count)]
        return runs, time.perf_counter() - began

    reduces, reduce_s = reduce_all("cold")
    partials = [str(work / f"cold-{p}.json") for p in range(count)]
    combined = child(["combine", json.dumps(partials), str(work / "index.json")])
    index = json.loads((work / "index.json").read_text())

    # One shard changes: 1% of its documents leave, as many new ones (copies of another shard's) arrive.
    first = sorted(members)[0]
    drop = max(1, len(members[first]) // 100)
    other = sorted(members)[-1]
    changed_ids = members[first][drop:] + members[other][:drop]
    changed = work / "bundles" / f"shard-{first}-changed"
    summarize_shard((root, sorted(changed_ids), changed, count, frozenset()))
    bundles[bundles.index(str(work / "bundles" / f"shard-{first}"))] = str(changed)
    listing.write_text(json.dumps(bundles))
    incremental, incremental_s = reduce_all("warm")

    # Every shard changes: every hundredth document of each gets a word more.
    edit_jobs = [
        (root, members[s], work / "bundles" / f"shard-{s}-edited", count, frozenset(members[s][::100]))
        for s in sorted(members)
    ]
    listing.write_text(json.dumps([folder for folder, _ in summarize_all(edit_jobs)]))
    edited, edited_s = reduce_all("edited")

    recall = None
    if planted:
        clusters = index["clusters"]
        found = sum(
            1 for dup, original in planted.items()
            if dup in clusters and clusters[dup]["cluster"] == clusters.get(original, {}).get("cluster")
        )
        recall = found / len(planted)
    n = len(ids)
    reduce_peak = max(r["peak_mb"] for r in reduces)
    summarize_peak = max(peak for _, peak in results)
    return {
        "documents": n,
        "shards": len(members),
        "partitions": count,
        "baseline_mb": baseline,
        "summarize_peak_mb": summarize_peak,
        "summarize_seconds": summarize_s,
        "reduce_peak_mb": reduce_peak,
        "reduce_bytes_per_document": (reduce_peak - baseline) * 2**20 / n,
        "reduce_seconds": reduce_s,
        "reduce_task_seconds_max": max(r["seconds"] for r in reduces),
        "reduce_task_seconds_sum": sum(r["seconds"] for r in reduces),
        "combine_peak_mb": combined["peak_mb"],
        "combine_bytes_per_document": (combined["peak_mb"] - imports) * 2**20 / n,
        "imports_mb": imports,
        "combine_seconds": combined["seconds"],
        "incremental_reduce_peak_mb": max(r["peak_mb"] for r in incremental),
        "incremental_reduce_seconds": incremental_s,
        "incremental_reduce_task_seconds_sum": sum(r["seconds"] for r in incremental),
        "edited_reduce_peak_mb": max(r["peak_mb"] for r in edited),
        "edited_reduce_bytes_per_document": (max(r["peak_mb"] for r in edited) - baseline) * 2**20 / n,
        "edited_reduce_seconds": edited_s,
        "bundle_bytes_per_document": sum(f.stat().st_size for f in (work / "bundles").rglob("*") if f.is_file()) / n,
        "state_bytes_per_document": sum(f.stat().st_size for f in (work / "state").rglob("*") if f.is_file()) / n,
        "stats": index["stats"],
        "planted_duplicates": len(planted) if planted else None,
        "planted_recall": recall,
    }


def command(argv: list[str]) -> None:
    """The child processes: `imports`, `baseline LISTING`, `reduce LISTING PARTITION STATE OUT`, `combine PARTIALS OUT`."""
    from textmill.tasks.dedupe import Deduplicator

    step = Deduplicator()
    step.layout()  # computed once per process; not part of a phase's time
    started = time.perf_counter()
    if argv[0] == "baseline":  # the fixed cost: libraries loaded, one shard's files read
        import numpy as np

        from textmill.tasks.dedupe_bands import read_docs, read_partition_rows, read_signatures

        first = Path(json.loads(Path(argv[1]).read_text())[0])
        read_partition_rows(first, 0), read_docs(first, ["id", "length", "date", "path"]), step.layout()
        read_signatures(first, np.arange(len(read_docs(first, ["id"]))))
    elif argv[0] == "reduce":
        bundles = [Path(b) for b in json.loads(Path(argv[1]).read_text())]
        partial = step.reduce(int(argv[2]), bundles, Path(argv[3]))
        Path(argv[4]).write_text(json.dumps(partial))
    elif argv[0] == "combine":
        partials = (json.loads(Path(p).read_text()) for p in json.loads(argv[1]))
        Path(argv[2]).write_text(json.dumps(step.combine(partials)))
    print(json.dumps({"peak_mb": peak_mb(), "seconds": time.perf_counter() - started}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("imports", "baseline", "reduce", "combine"):
        command(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="source corpus for bench.synth")
    parser.add_argument("--sizes", default="10000")
    parser.add_argument("--folder", type=Path, help="an already generated corpus instead of --corpus/--sizes")
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--work", type=Path, help="keep corpora and bundles here and reuse them (default: a temporary folder)")
    args = parser.parse_args()
    points = []
    with tempfile.TemporaryDirectory(prefix="index-memory-") as tmp:
        if args.work:
            tmp = str(args.work)
        if args.folder:
            points.append(measure(args.folder, None, Path(tmp), args.partitions))
        else:
            if args.corpus is None or not args.corpus.is_dir():
                sys.exit("error: --corpus (a folder) or --folder is required")
            for size in (int(x) for x in args.sizes.split(",")):
                corpus, work = Path(tmp) / f"corpus-{size}", Path(tmp) / f"work-{size}"
                planted_file = Path(tmp) / f"planted-{size}.json"
                if not planted_file.exists():
                    planted_file.write_text(json.dumps(generate(args.corpus, corpus, size, seed=size).duplicates_of))
                planted = json.loads(planted_file.read_text())
                for old in ("state", "bundles/*-changed", "bundles/*-edited"):
                    for path in work.glob(old):
                        shutil.rmtree(path)
                points.append(measure(corpus, planted, work, args.partitions))
        for point in points:
            print(json.dumps(point), file=sys.stderr)
    table = markdown_table(
        ["documents", "shards / partitions", "summarize peak MB (per worker)", "reduce peak MB (max of partitions)",
         "reduce bytes/doc", "combine peak MB", "fixed MB (libraries)", "reduce task s (sum, max)",
         "incremental reduce task s (sum; 1 shard changed)", "every shard edited: reduce peak MB, bytes/doc",
         "bundle + state bytes/doc", "planted recall"],
        [[p["documents"], f"{p['shards']} / {p['partitions']}", round(p["summarize_peak_mb"]), round(p["reduce_peak_mb"]),
          round(p["reduce_bytes_per_document"]), round(p["combine_peak_mb"]), round(p["baseline_mb"]),
          f"{p['reduce_task_seconds_sum']:.1f}, {p['reduce_task_seconds_max']:.1f}",
          round(p["incremental_reduce_task_seconds_sum"], 1),
          f"{p['edited_reduce_peak_mb']:.0f}, {p['edited_reduce_bytes_per_document']:.0f}",
          round(p["bundle_bytes_per_document"] + p["state_bytes_per_document"]),
          "-" if p["planted_recall"] is None else f"{p['planted_recall']:.4f}"] for p in points],
    )
    title = "### Dedupe index memory (peak RSS of each phase's processes)\n\n"
    _, md = write_results(args.results, "index-memory", {"points": points}, title + table)
    print(md.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
