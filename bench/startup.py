"""The fixed cost of an ad hoc run: a warm `textmill run` over the seeds, where nothing is computed.

    python -m bench.startup [--repeat 5] [--corpus seeds] [--against OTHER_PYTHON]
                            [--prefect-db postgresql://postgres@127.0.0.1:5432/postgres]

Three kinds of run, each `--repeat` times in one invocation: `adhoc` (no Prefect server
configured, so each run starts a temporary one), `server-sqlite` and `server-postgres`
(PREFECT_API_URL names a `prefect server start` this command runs for that kind's runs only,
keeping its state in SQLite, or in a fresh database on the PostgreSQL server `--prefect-db`
names, which Prefect recommends for a server that watches scheduled runs). With `--against`, the same runs of
another installation of textmill (its interpreter, e.g. a checkout of the previous version's
`.venv/bin/python`) alternate with this one's, so both see the same load on the machine. Each
installation does one cold run first, into an output folder of its own, and one unmeasured warm
run per kind (a new server's first run records the flow); every run starts in the
scratch folder, so each uses its own packaged default config. Reports medians; writes
`startup.json`/`startup.md` to `--results`.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from bench.common import DEFAULT_RESULTS, REPO, markdown_table, median, write_results
from bench.measure import DEFAULT_PREFECT_DB, PrefectServer, bench_env, fresh_database, measure
from bench.speed import say

KINDS = ("adhoc", "server-sqlite", "server-postgres")


def run_argv(python: str, corpus: Path, out: Path) -> list[str]:
    return [python, "-m", "textmill.flows.cli", "run", str(corpus), "--out", str(out)]


@contextlib.contextmanager
def api_env(kind: str, env: dict[str, str], work: Path, prefect_db: str) -> Iterator[dict[str, str]]:
    """The environment of a `kind` run; a running server's kinds start theirs here and stop it
    afterwards, so no idle server's background services share the machine with another kind."""
    if kind == "adhoc":
        yield env
        return
    with contextlib.ExitStack() as stack:
        database_url = None
        if kind == "server-postgres":
            database_url = stack.enter_context(fresh_database(prefect_db))
        server = stack.enter_context(PrefectServer(work / kind, env, work / f"{kind}.log", database_url=database_url))
        yield {**env, "PREFECT_API_URL": server.url, "PREFECT_HOME": str(work / f"{kind}-client")}


def startup(corpus: Path, work: Path, pythons: dict[str, str], repeat: int, prefect_db: str) -> dict[str, Any]:
    env = bench_env(work / "prefect-home")
    log = work / "runs.log"
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {name: {kind: [] for kind in KINDS} for name in pythons}
    for name, python in pythons.items():
        say(f"{name}: cold run")
        measure(f"{name} cold", run_argv(python, corpus, work / f"out-{name}"), env, log, cwd=work)
    for kind in KINDS:
        with api_env(kind, env, work, prefect_db) as kind_env:
            for name, python in pythons.items():  # unmeasured: a new server records the flow first
                measure(f"{name} {kind} first", run_argv(python, corpus, work / f"out-{name}"), kind_env, log, cwd=work)
            for rep in range(1, repeat + 1):
                for name, python in pythons.items():
                    m = measure(f"{name} {kind}", run_argv(python, corpus, work / f"out-{name}"), kind_env, log, cwd=work)
                    runs[name][kind].append(m.to_dict())
                    say(f"{rep}/{repeat} {name} {kind}: {m.wall_s:.2f} s wall, {m.cpu_s:.2f} s CPU")
    summary = {
        name: {
            kind: {
                "wall_s": median([r["wall_s"] for r in rows]),
                "cpu_s": median([r["cpu_s"] for r in rows]),
                "walls": [round(r["wall_s"], 2) for r in rows],
            }
            for kind, rows in kinds.items()
        }
        for name, kinds in runs.items()
    }
    return {"corpus": str(corpus), "repeat": repeat, "runs": runs, "summary": summary}


def markdown(result: dict[str, Any]) -> str:
    rows = [
        (name, kind, s["wall_s"], s["cpu_s"], ", ".join(f"{w:.2f}" for w in s["walls"]))
        for name, kinds in result["summary"].items()
        for kind, s in kinds.items()
    ]
    return (
        f"# Fixed cost: warm `textmill run` over `{result['corpus']}`, medians of {result['repeat']} runs per kind\n\n"
        "`adhoc`: a temporary Prefect server per run; `server-sqlite` / `server-postgres`: against a running "
        "`prefect server start` keeping its state in SQLite / PostgreSQL. CPU is the textmill process's "
        "(a running server's is not counted).\n\n"
        + markdown_table(("textmill", "run", "wall s", "CPU s", "each run (wall s)"), rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Wall time of a warm ad hoc textmill run (its fixed cost).")
    parser.add_argument("--corpus", type=Path, default=REPO / "seeds")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--against", metavar="PYTHON", help="interpreter of another textmill installation to compare")
    parser.add_argument(
        "--prefect-db",
        default=DEFAULT_PREFECT_DB,
        help="a PostgreSQL server (libpq DSN) on which to create the `server-postgres` runs' Prefect database",
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args()
    pythons = {"this": sys.executable}
    if args.against:
        pythons["other"] = args.against
    work = Path(tempfile.mkdtemp(prefix="textmill-startup-"))
    try:
        shutil.copytree(args.corpus, work / "corpus")
        result = startup(work / "corpus", work, pythons, args.repeat, args.prefect_db)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["corpus"] = str(args.corpus.relative_to(REPO) if args.corpus.is_relative_to(REPO) else args.corpus)
    _, md = write_results(args.results, "startup", result, markdown(result))
    print(md.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
