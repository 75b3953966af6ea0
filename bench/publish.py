"""What publishing costs: PostgreSQL first publish, re-publish, one changed and one removed file,
and SQLite full-text search latency — all through the real `textmill` command.

    python -m bench.publish --corpus ../shared/corpora/bbc [--dsn postgresql://postgres@127.0.0.1:5432/test]

The corpus is copied to a temporary folder (so files can be edited and removed), run once
cold without PostgreSQL (to fill the cache), then four times with `--publish`; publish seconds
come from each run's manifest. The schema it creates is dropped at the end.
"""
from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import DEFAULT_RESULTS, markdown_table, write_results
from bench.measure import bench_env, measure
from textmill.tasks.search import search

QUERIES = ["government", "Kremlin", "music award", '"prime minister"', "broadband OR internet", "footb*", "oil prices"]


def run(corpus: Path, out: Path, env: dict[str, str], log: Path, *extra: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "textmill.flows.cli", "run", str(corpus), "--out", str(out), *extra]
    result = measure("run", argv, env, log)
    if result.exit_code != 0:
        sys.exit(f"error: textmill run failed (exit {result.exit_code}); see {log}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall_s": result.wall_s, "publish_s": manifest["steps"]["publish"]["seconds"], "changes": manifest["published"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args()
    schema = f"textmill_bench_{secrets.token_hex(4)}"
    config_text = Path("config/pipeline.toml").read_text()
    points: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        shutil.copytree(args.corpus, corpus)
        shutil.copytree("config", work / "config", ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
        config = work / "config" / "pipeline.toml"
        config.write_text(config_text.replace("[steps.publish]\n", f'[steps.publish]\npostgres_schema = "{schema}"\n'))
        env, log, out = bench_env(work / "prefect"), work / "log.txt", work / "out"
        base = ["--config", str(config)]
        try:
            print("cold run, files only", file=sys.stderr)
            points["files only (cold)"] = run(corpus, out, env, log, *base)
            pg = [*base, "--publish", args.dsn]
            print("first publish to PostgreSQL", file=sys.stderr)
            points["first publish"] = run(corpus, out, env, log, *pg)
            print("re-publish, nothing changed", file=sys.stderr)
            points["re-publish"] = run(corpus, out, env, log, *pg)
            victim = sorted(corpus.rglob("*.txt"))[100]
            victim.write_text(victim.read_text() + "\nA closing line added for the benchmark.\n")
            print("one file changed", file=sys.stderr)
            points["one file changed"] = run(corpus, out, env, log, *pg)
            sorted(corpus.rglob("*.txt"))[200].unlink()
            print("one file removed", file=sys.stderr)
            points["one file removed"] = run(corpus, out, env, log, *pg)
            timings = []
            for q in QUERIES:
                started = time.perf_counter()
                hits = search(out / "textmill.sqlite", q, limit=10)
                timings.append((q, (time.perf_counter() - started) * 1000, len(hits)))
        finally:
            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    rows = [
        [name, p["wall_s"], p["publish_s"], *(p["changes"].get("postgres", {}).get(k, "") for k in ("inserted", "updated", "unchanged", "deleted"))]
        for name, p in points.items()
    ]
    table = markdown_table(["run", "wall s", "publish s", "inserted", "updated", "unchanged", "deleted"], rows)
    search_table = markdown_table(["query", "ms", "hits"], [list(t) for t in timings])
    median = statistics.median(t[1] for t in timings)
    text = (
        f"### Publishing `{args.corpus}` to PostgreSQL and SQLite\n\n{table}\n\n"
        f"### `textmill search` (FTS5, top 10), median {median:.1f} ms\n\n{search_table}"
    )
    _, md = write_results(args.results, "publish", {"runs": points, "search": timings}, text)
    print(md.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
