"""Which task runner, and how many workers, on this machine: worker processes (Prefect's process
pool), a local Dask cluster and threads.

    python -m bench.runners --corpus ../shared/corpora/bbc [--configs processes:2,dask:2,threads:2]

In one invocation: the plain one-process script (`bench.baseline`) as the yardstick, then for each
`runner:workers` a cold run (empty output folder) and a warm run (the same corpus again) of
`textmill run --runner R --workers N`, each a child process measured by `bench.measure`. Every
configuration must publish the same records (`jsonl/`) as the first one, or the command fails.
Writes `runners.json`/`runners.md` to `--results`.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_RESULTS, markdown_table, write_results
from bench.measure import bench_env, prefect_home_note, prepare_prefect_home
from bench.speed import baseline_run, say, textmill_run
from textmill.flows.runners import RUNNERS

DEFAULT_CONFIGS = "processes:2,dask:2,threads:2"


def parse_configs(text: str) -> list[tuple[str, int]]:
    """`processes:2,dask:2` -> [("processes", 2), ("dask", 2)]."""
    configs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        runner, _, workers = item.partition(":")
        if runner not in RUNNERS or not workers.isdigit() or int(workers) < 1:
            raise SystemExit(f"--configs: {item!r} is not RUNNER:WORKERS with RUNNER one of {', '.join(RUNNERS)}")
        configs.append((runner, int(workers)))
    return configs


def sorted_lines(folder: Path) -> list[str]:
    """Every published JSON Lines record of a `jsonl/` folder of parts, sorted."""
    return sorted(line for part in folder.glob("part-*.jsonl") for line in part.read_text(encoding="utf-8").splitlines())


def compare_runners(corpus: Path, work: Path, configs: list[tuple[str, int]], env: dict[str, str], log: Path) -> dict[str, Any]:
    say("a first run over the seeds creates the Prefect database")
    setup = prepare_prefect_home(env, work, log)
    say("baseline")
    baseline = baseline_run(corpus, work / "baseline", env, log)
    say(f"baseline {baseline['wall_s']:.1f} s")
    rows: list[dict[str, Any]] = []
    reference: list[str] | None = None
    for runner, workers in configs:
        out = work / f"{runner}-{workers}"
        options = ("--runner", runner, "--workers", str(workers))
        cold = textmill_run(f"{runner}:{workers} cold", corpus, out, env, log, options)
        warm = textmill_run(f"{runner}:{workers} warm", corpus, out, env, log, options)
        if any(warm["computed"].get(step) for step in ("clean", "dedupe", "language", "entities")):
            raise SystemExit(f"{runner}:{workers}: the warm run computed {warm['computed']}")
        published = sorted_lines(out / "jsonl")
        if reference is None:
            reference = published
        elif published != reference:
            raise SystemExit(f"{runner}:{workers} published different records (jsonl/) from {configs[0]}")
        say(f"{runner}:{workers} cold {cold['wall_s']:.1f} s, warm {warm['wall_s']:.1f} s")
        rows.append({"runner": runner, "workers": workers, "cold": cold, "warm": warm})
        shutil.rmtree(out)
    return {"corpus": str(corpus), "prefect_home_setup": setup.to_dict(), "baseline": baseline, "runs": rows}


def markdown(result: dict[str, Any]) -> str:
    base = result["baseline"]["wall_s"]
    table = markdown_table(
        ("runner", "workers", "cold s", "cold / baseline", "entities s", "language s", "cold CPU s", "cold peak RSS MB",
         "warm s", "warm / cold"),
        [
            (
                r["runner"], r["workers"], r["cold"]["wall_s"], r["cold"]["wall_s"] / base,
                r["cold"]["step_seconds"].get("entities"), r["cold"]["step_seconds"].get("language"),
                r["cold"]["cpu_s"], r["cold"]["peak_rss_mb"], r["warm"]["wall_s"], r["warm"]["wall_s"] / r["cold"]["wall_s"],
            )
            for r in result["runs"]
        ],
    )
    return (
        f"# Task runners on `{result['corpus']}`\n\n"
        f"Baseline (`bench.baseline`, one process): {base:.1f} s wall, {result['baseline']['cpu_s']:.1f} s CPU.\n\n"
        + table
        + prefect_home_note(result.get("prefect_home_setup"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="textmill's task runners and worker counts, cold and warm.")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"RUNNER:WORKERS list [default: {DEFAULT_CONFIGS}]")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder [default: a temporary one]")
    args = parser.parse_args()
    configs = parse_configs(args.configs)
    with tempfile.TemporaryDirectory(prefix="textmill-runners-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = bench_env(work / "prefect-home")
        result = compare_runners(args.corpus, work, configs, env, work / "runs.log")
    json_path, md_path = write_results(args.results, "runners", result, markdown(result))
    print(md_path.read_text(encoding="utf-8"))
    say(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
