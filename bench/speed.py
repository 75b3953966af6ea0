"""How fast textmill is against the plain script, and how time and memory grow with the corpus.

    python -m bench.speed --corpus ../shared/corpora/bbc [--repeat 3] [--server] [--sizes 2000,20000,100000]

Every run is a child process measured by `bench.measure` (wall, CPU, peak RSS). In one invocation:
the baseline (`bench.baseline`), then textmill cold (empty output folder), warm (the same corpus
again) and incremental (+1% new files), `--repeat` times, reported as medians and as ratios to the
baseline measured here; with `--server`, warm and incremental again against a running Prefect
server (as a monitored deployment runs), without the ephemeral server each CLI run starts. textmill's output must agree with the baseline's, or the command fails.
Growth: corpora of each `--sizes` made by `bench.synth` from the source corpus, one cold run each,
with a linear fit and a plot. Writes `speed.json`/`speed.md` to `--results` and the plot to `docs/`.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.agree import compare, load_records
from bench.common import DEFAULT_RESULTS, REPO, markdown_table, median, write_results
from bench.measure import (
    PrefectServer,
    bench_env,
    measure,
    measure_tree,
    prefect_home_note,
    prepare_prefect_home,
    python_module,
)
from bench.synth import generate

KINDS = ("baseline", "cold", "warm", "incremental")
SERVER_KINDS = ("warm_server", "incremental_server")
STEPS = ("read", "clean", "dedupe", "language", "entities", "publish")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# The entities step's corrections from corpus evidence (docs/architecture.md, "entities") are work
# the plain script does not do; switched off here so both produce the same entities and the
# ratio compares the same work. They cost about 2% of the NER time (bench.quality entities).
SAME_WORK = "strip_articles = false\nconsistent_labels = false\ncorpus_labels = false\n"


def same_work_config(folder: Path) -> Path:
    """A copy of the repository's config folder whose entities step does what the baseline does."""
    shutil.copytree(REPO / "config", folder, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    path = folder / "pipeline.toml"
    text = path.read_text(encoding="utf-8")
    if "[steps.entities]\n" not in text:
        raise SystemExit(f"{path}: no [steps.entities] table to switch the corrections off in")
    path.write_text(text.replace("[steps.entities]\n", "[steps.entities]\n" + SAME_WORK, 1), encoding="utf-8")
    return path


def textmill_run(
    label: str, corpus: Path, out: Path, env: dict[str, str], log: Path, options: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One measured `textmill run` (with extra CLI `options`); the measurement plus the run's own
    manifest. Its whole process tree is measured: the workers forked by its fork server are not
    children `os.wait4` reports on."""
    argv = python_module("textmill.flows.cli", "run", str(corpus), "--out", str(out), *options)
    measured = measure_tree(label, argv, env, log)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    steps = {"read": manifest["read"]["seconds"], **{k: v["seconds"] for k, v in manifest["steps"].items()}}
    computed = {k: v["computed"] for k, v in manifest["steps"].items()}
    return {
        **measured,
        "documents": manifest["documents"],
        "duplicates": manifest["counts"].get("duplicate", 0),
        "step_seconds": steps,
        "computed": computed,
    }


def baseline_run(corpus: Path, out: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    measured = measure("baseline", python_module("bench.baseline", str(corpus), str(out)), env, log)
    phases = json.loads((out / "phases.json").read_text(encoding="utf-8"))
    documents = sum(1 for _ in open(out / "documents.jsonl", encoding="utf-8"))
    return {**measured.to_dict(), "documents": documents, "step_seconds": phases}


def corpus_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def speed(source: Path, work: Path, repeat: int, env: dict[str, str], log: Path, server_env: dict[str, str] | None) -> dict[str, Any]:
    """Baseline, cold, warm, incremental, `repeat` times over a private copy of `source`; with
    `server_env`, warm and incremental once more against a running Prefect server."""
    corpus = work / "corpus"
    shutil.copytree(source, corpus)
    files = sum(1 for p in corpus.rglob("*") if p.is_file())
    added = max(1, math.ceil(files / 100))
    kinds = KINDS + (SERVER_KINDS if server_env is not None else ())
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    agreement: dict[str, Any] = {}
    config = ("--config", str(same_work_config(work / "config")))
    say("a first run over the seeds creates the Prefect database")
    setup = prepare_prefect_home(env, work, log)
    for rep in range(1, repeat + 1):
        say(f"repetition {rep}/{repeat}: baseline")
        runs["baseline"].append(baseline_run(corpus, work / "baseline", env, log))
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        say(f"repetition {rep}/{repeat}: textmill cold")
        runs["cold"].append(textmill_run("cold", corpus, out, env, log, config))
        if rep == 1:
            agreement = compare(load_records(out / "jsonl"), load_records(work / "baseline" / "documents.jsonl"))
            say(f"agreement with the baseline: {agreement['agree']}")
        say(f"repetition {rep}/{repeat}: textmill warm")
        runs["warm"].append(textmill_run("warm", corpus, out, env, log, config))
        if server_env is not None:
            say(f"repetition {rep}/{repeat}: textmill warm, running Prefect server")
            runs["warm_server"].append(textmill_run("warm_server", corpus, out, server_env, log, config))
        generate(source, corpus / "_added", added, seed=1000 + rep, exact_rate=0.0, near_rate=0.0)
        say(f"repetition {rep}/{repeat}: textmill incremental (+{added} files)")
        runs["incremental"].append(textmill_run("incremental", corpus, out, env, log, config))
        if server_env is not None:
            generate(source, corpus / "_added_server", added, seed=2000 + rep, exact_rate=0.0, near_rate=0.0)
            say(f"repetition {rep}/{repeat}: textmill incremental (+{added} more files), running Prefect server")
            runs["incremental_server"].append(textmill_run("incremental_server", corpus, out, server_env, log, config))
            shutil.rmtree(corpus / "_added_server")
        shutil.rmtree(corpus / "_added")
    size = corpus_bytes(corpus)
    summary = {kind: summarize(runs[kind], size) for kind in kinds}
    return {
        "corpus": str(source),
        "files": files,
        "input_bytes": size,
        "added_files": added,
        "repeat": repeat,
        "runs": runs,
        "summary": summary,
        "ratios": ratios(summary),
        "agreement": agreement,
        "prefect_home_setup": setup.to_dict(),
    }


def summarize(runs: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """Medians over repetitions; rates from the median wall time."""
    wall = median([r["wall_s"] for r in runs])
    documents = runs[0]["documents"]
    return {
        "wall_s": wall,
        "cpu_s": median([r["cpu_s"] for r in runs]),
        "peak_rss_mb": median([r["peak_rss_mb"] for r in runs]),
        "documents": documents,
        "docs_per_s": documents / wall,
        "mb_per_s": size / 1e6 / wall,
        "step_seconds": {s: median([r["step_seconds"].get(s, 0.0) for r in runs]) for s in STEPS},
        "walls": [r["wall_s"] for r in runs],
    }


def ratios(summary: dict[str, Any]) -> dict[str, float]:
    cold, warm, incr, base = (summary[k] for k in ("cold", "warm", "incremental", "baseline"))
    server = {
        f"{kind}_over_cold": summary[kind]["wall_s"] / cold["wall_s"] for kind in SERVER_KINDS if kind in summary
    }
    return {
        **server,
        "cold_over_baseline": cold["wall_s"] / base["wall_s"],
        "cold_cpu_over_baseline_cpu": cold["cpu_s"] / base["cpu_s"],
        "warm_over_cold": warm["wall_s"] / cold["wall_s"],
        "incremental_over_cold": incr["wall_s"] / cold["wall_s"],
        "entities_throughput_over_baseline": base["step_seconds"]["entities"] / cold["step_seconds"]["entities"],
    }


def growth(source: Path, work: Path, sizes: list[int], with_baseline: bool, env: dict[str, str], log: Path) -> dict[str, Any]:
    """One cold textmill run (and optionally the baseline) per generated corpus size."""
    points = []
    for size in sizes:
        corpus = work / f"growth-{size}"
        say(f"growth: generating {size} documents")
        planted = generate(source, corpus, size, seed=size)
        say(f"growth: textmill cold on {size} documents")
        point = {"size": size, "planted": planted.summary(), "textmill": textmill_run(f"growth-{size}", corpus, work / f"growth-out-{size}", env, log)}
        if with_baseline:
            say(f"growth: baseline on {size} documents")
            point["baseline"] = baseline_run(corpus, work / f"growth-baseline-{size}", env, log)
        points.append(point)
        shutil.rmtree(work / f"growth-out-{size}", ignore_errors=True)
        shutil.rmtree(work / f"growth-baseline-{size}", ignore_errors=True)
        shutil.rmtree(corpus, ignore_errors=True)
    return {"points": points, "fit": fit(points)}


def fit(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Least-squares lines: seconds and peak RSS against documents, per program measured."""
    import numpy as np

    result: dict[str, Any] = {}
    for program in ("textmill", "baseline"):
        rows = [(p["size"], p[program]["wall_s"], p[program]["peak_rss_mb"]) for p in points if program in p]
        if len(rows) < 2:
            continue
        n, wall, rss = (np.array(col, dtype=float) for col in zip(*rows))
        time_slope, time_intercept = np.polyfit(n, wall, 1)
        rss_slope, rss_intercept = np.polyfit(n, rss, 1)
        result[program] = {
            "ms_per_document": float(time_slope * 1000),
            "fixed_s": float(time_intercept),
            "rss_bytes_per_document": float(rss_slope * 1e6),
            "rss_base_mb": float(rss_intercept),
        }
    return result


def plot(growth_result: dict[str, Any], path: Path) -> None:
    """Wall time and peak RSS against corpus size, one line per program."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = growth_result["points"]
    fig, (ax_time, ax_rss) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for program, style in (("textmill", "o-"), ("baseline", "s--")):
        rows = [(p["size"], p[program]["wall_s"], p[program]["peak_rss_mb"]) for p in points if program in p]
        if rows:
            sizes, walls, rss = zip(*rows)
            ax_time.plot(sizes, walls, style, label=program)
            ax_rss.plot(sizes, rss, style, label=program)
    ax_time.set(xlabel="documents", ylabel="wall time (s)", title="Cold run time")
    ax_rss.set(xlabel="documents", ylabel="peak RSS (MB)", title="Peak memory")
    for ax in (ax_time, ax_rss):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


TARGETS = (
    ("cold ≤ 0.6 × baseline", "cold_over_baseline", 0.6, "le"),
    ("warm ≤ 10% of cold", "warm_over_cold", 0.10, "le"),
    ("+1% files ≤ 15% of cold", "incremental_over_cold", 0.15, "le"),
    ("warm ≤ 10% of cold (running server)", "warm_server_over_cold", 0.10, "le"),
    ("+1% files ≤ 15% of cold (running server)", "incremental_server_over_cold", 0.15, "le"),
    ("entities ≥ 90% of bare nlp.pipe", "entities_throughput_over_baseline", 0.90, "ge"),
)


def markdown(result: dict[str, Any]) -> str:
    parts: list[str] = []
    if "speed" in result:
        s = result["speed"]
        parts.append(
            f"### Speed on `{s['corpus']}`: {s['files']} files, {s['input_bytes'] / 1e6:.1f} MB, "
            f"medians of {s['repeat']} runs (incremental adds {s['added_files']} files)\n"
        )
        base_wall = s["summary"]["baseline"]["wall_s"]
        parts.append(markdown_table(
            ["run", "wall s", "CPU s", "docs/s", "MB/s", "peak RSS MB", "wall / baseline"],
            [[k, v["wall_s"], v["cpu_s"], v["docs_per_s"], v["mb_per_s"], v["peak_rss_mb"], v["wall_s"] / base_wall]
             for k, v in s["summary"].items()],
        ))
        parts.append("\nSeconds per step (textmill: from the run manifest; baseline: its phases)\n")
        parts.append(markdown_table(
            ["step", *s["summary"]],
            [[step, *(v["step_seconds"][step] for v in s["summary"].values())] for step in STEPS],
        ))
        parts.append("\nTargets\n")
        parts.append(markdown_table(
            ["target", "measured", "met"],
            [[name, s["ratios"][key], "yes" if (s["ratios"][key] <= limit if how == "le" else s["ratios"][key] >= limit) else "no"]
             for name, key, limit, how in TARGETS if key in s["ratios"]],
        ))
        a = s["agreement"]
        parts.append(
            f"\nAgreement with the baseline: {'yes' if a['agree'] else 'NO'} — {a['documents']} documents, "
            f"{a['clusters']} clusters (baseline {a['baseline_clusters']}), {a['entities']} entities "
            f"(baseline {a['baseline_entities']}), languages {a['languages']}; mismatches: "
            + ", ".join(f"{k} {a[k + '_count']}" for k in ("status_mismatch", "text_mismatch", "language_mismatch", "entity_count_mismatch", "cluster_mismatch"))
            + "\n"
            + prefect_home_note(s.get("prefect_home_setup"))
        )
    if "growth" in result:
        g = result["growth"]
        parts.append("\n### Growth (generated corpora, cold runs)\n")
        rows = []
        for p in g["points"]:
            t = p["textmill"]
            planted = p["planted"]["exact"] + p["planted"]["near_edit"] + p["planted"]["near_truncated"]
            b = p.get("baseline", {})
            rows.append([p["size"], t["wall_s"], t["wall_s"] / p["size"] * 1000, t["peak_rss_mb"], b.get("wall_s"), b.get("peak_rss_mb"), f"{t['duplicates']} / {planted}"])
        parts.append(markdown_table(
            ["documents", "textmill s", "ms/doc", "textmill RSS MB", "baseline s", "baseline RSS MB", "duplicates found / planted"], rows
        ))
        for program, f in g["fit"].items():
            parts.append(
                f"\n{program}: {f['ms_per_document']:.1f} ms per document + {f['fixed_s']:.1f} s fixed; "
                f"peak RSS {f['rss_base_mb']:.0f} MB + {f['rss_bytes_per_document']:.0f} bytes per document.\n"
            )
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description="textmill speed and growth against a plain one-process script.")
    parser.add_argument("--corpus", type=Path, required=True, help="source corpus (BBC-style .txt articles for growth)")
    parser.add_argument("--sizes", default="", help="comma-separated corpus sizes for the growth runs, e.g. 2000,20000,100000")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of baseline/cold/warm/incremental (medians)")
    parser.add_argument("--no-speed", action="store_true", help="growth runs only")
    parser.add_argument("--growth-baseline", action="store_true", help="also run the baseline at each growth size")
    parser.add_argument(
        "--server", action="store_true",
        help="also time warm and incremental runs against a running Prefect server (no ephemeral start per run)",
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "bench-growth.png")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder [default: a temporary one]")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"error: corpus folder not found: {args.corpus}")
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="textmill-bench-", dir=args.work))
    env = bench_env(work / "prefect-home")
    log = work / "runs.log"
    say(f"scratch folder {work}; run output in {log}")
    result: dict[str, Any] = {}
    try:
        if not args.no_speed:
            if args.server:
                with PrefectServer(work / "server-home", env, work / "server.log") as server:
                    say(f"Prefect server at {server.url}")
                    server_env = {**env, "PREFECT_API_URL": server.url}
                    result["speed"] = speed(args.corpus.resolve(), work, args.repeat, env, log, server_env)
            else:
                result["speed"] = speed(args.corpus.resolve(), work, args.repeat, env, log, None)
            result["speed"]["corpus"] = str(args.corpus)  # as given: results must not name this machine's paths
        if sizes:
            result["growth"] = growth(args.corpus.resolve(), work, sizes, args.growth_baseline, env, log)
            plot(result["growth"], args.plot)
    finally:
        result["bench_seconds"] = time.perf_counter() - started
        if result.keys() - {"bench_seconds"}:
            name = "speed" if not args.no_speed else "growth"
            _, md = write_results(args.results, name, result, markdown(result))
            print(md.read_text(encoding="utf-8"))
        shutil.rmtree(work, ignore_errors=True)
    if "speed" in result and not result["speed"]["agreement"]["agree"]:
        sys.exit("error: textmill and the baseline disagree (see agreement in the results)")


if __name__ == "__main__":
    main()
