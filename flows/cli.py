"""The `textmill` command: run the pipeline ad hoc, serve it, search its output, collect its cache, list installed steps."""
from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any, NoReturn, Optional

from textmill.flows.interrupt import ignore_interrupt_in_cli_worker

ignore_interrupt_in_cli_worker()  # first: a worker process imports this module as it starts

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from textmill.flows.logs import terminal_logging_env  # noqa: E402
from textmill.tasks.base import ConfigError  # noqa: E402

CONFIG_OPTION = typer.Option(None, "--config", help="Pipeline config.", show_default="config/pipeline.toml")
RUNNER_OPTION = typer.Option(
    None,
    "--runner",
    help="processes (a worker process per core), threads (one process) or dask (Dask worker processes).",
    show_default="[run] runner",
)
DASK_ADDRESS_OPTION = typer.Option(
    None, "--dask-address", metavar="tcp://HOST:PORT", help="Run on an existing Dask cluster (implies --runner dask)."
)
WORKERS_OPTION = typer.Option(
    None,
    "--workers",
    min=1,
    help="Shard tasks at once: worker processes, threads, or local Dask worker processes.",
    show_default="[run] workers",
)


def corpus_path(value: str) -> Path:
    """The corpus argument; empty (an unset shell variable) fails in one line instead of meaning `.`."""
    return non_empty_path(value, "the corpus path is empty; give the folder to process")


def out_path(value: str) -> Path:
    """The --out option; empty fails in one line instead of writing into the working folder."""
    return non_empty_path(value, "the output path (--out) is empty; give the output folder")


def non_empty_path(value: str | Path, problem: str) -> Path:
    if not str(value).strip():
        fail(problem, code=2)
    return Path(value)


app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn a folder of raw documents into a clean corpus.")
# Messages are never wrapped: one error is one line, whatever the terminal width (or none).
console = Console(stderr=True, soft_wrap=True)


class RichProgress:
    """One progress bar per stage: documents done out of the documents that reach the stage.

    Stages of a corpus step show as three bars (`dedupe`, `dedupe index`, `dedupe apply`).
    A failed stage keeps what it had done and says it failed.
    """

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        )
        self.bars: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, stage: str, total: int | None) -> None:
        self.bars[stage] = self.progress.add_task(stage.replace(":", " "), total=total)

    def advance(self, stage: str, done: int) -> None:
        self.progress.advance(self.bars[stage], done)

    def finish(self, stage: str, failed: bool = False) -> None:
        bar = self.bars[stage]
        if failed:
            label = f"{stage.replace(':', ' ')} failed"
            self.progress.update(bar, description=f"[red]{label:<18}[/]")  # padded here: markup is not text
            self.progress.stop_task(bar)
        else:
            self.progress.update(bar, completed=self.progress.tasks[bar].total)


@app.command()
def run(
    corpus: Path = typer.Argument(..., parser=corpus_path, metavar="CORPUS", help="Folder of .txt, .md, .html/.htm and .jsonl files (searched recursively)."),
    out: Path = typer.Option(Path("out"), "--out", parser=out_path, help="Output folder (also holds the cache, in .textmill/)."),
    config: Optional[Path] = CONFIG_OPTION,
    publish: Optional[str] = typer.Option(
        None,
        "--publish",
        metavar="DSN",
        help="Also publish to PostgreSQL, e.g. postgresql://user@host:5432/db. A password in the DSN is "
        "handed to libpq through PGPASSWORD, never to Prefect, logs or the manifest.",
    ),
    runner: Optional[str] = RUNNER_OPTION,
    dask_address: Optional[str] = DASK_ADDRESS_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs, tracebacks included."),
) -> None:
    """Run the pipeline over CORPUS and print a summary."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's default of 20 s is too short for its temporary server on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    terminal_logging_env(verbose)
    progress = RichProgress()
    from textmill.flows.interrupt import exit_on_interrupt

    exit_on_interrupt(progress.progress.stop)
    # First, before Prefect is imported: the temporary server boots while this process imports
    # Prefect and the steps and checks the config (docs/operations.md, "Where an ad hoc run's time goes").
    from textmill.flows.apiserver import start_temporary_server

    server = start_temporary_server()
    from textmill.flows.config import publish_to_postgres
    from textmill.flows.pipeline import failed_in, textmill
    from textmill.flows.progress import set_listener

    cfg = checked_config(config, corpus, out)
    if publish:
        publish = postgres_dsn_without_password(publish)
        try:
            publish_to_postgres(cfg, publish)
        except ConfigError as exc:
            fail(str(exc), code=2)
    check_database(cfg, publish)
    kind, task_runner = chosen_task_runner(cfg, runner, dask_address, workers)
    if server is not None:
        from textmill.flows.scan import scan_ahead, scan_found_changes, scanned_files

        scan_ahead(corpus, out)  # discovery, while the server finishes booting (flows/scan.py)
        # Workers' imports and models, while the server finishes booting; a corpus of one shard
        # runs in this process (flows/runners.py: run_in_process) and needs no workers.
        if kind == "processes" and scan_found_changes(corpus, out, more_files_than=cfg.run.shard_size):
            from textmill.flows.runners import prepare_fork_server

            prepare_fork_server(cfg.steps, files=scanned_files(corpus, out) or 0)
        try:
            server.wait_until_ready()
        except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback with --verbose
            fail(one_line(exc), trace=exc if verbose else None)
    flow = textmill.with_options(task_runner=task_runner)
    error: str | None = None
    try:
        with progress, flow_run_settings(temporary_server=server is not None):
            set_listener(progress)
            manifest = flow(corpus=str(corpus), out=str(out), config=str(cfg.path), publish=publish)
    except Exception as exc:  # noqa: BLE001 - with --verbose, Prefect's log of the flow run shows the traceback
        where = failed_in(exc)
        error = f"{where}: {one_line(exc)}" if where else one_line(exc)
    finally:
        set_listener(None)
    if error is not None:
        fail(error)
    print_summary(manifest, out)


@app.command()
def serve(
    corpus: Path = typer.Argument(..., parser=corpus_path, metavar="CORPUS", help="Folder to process on every scheduled run."),
    out: Path = typer.Option(Path("out"), "--out", parser=out_path, help="Output folder (also holds the cache, so runs are incremental)."),
    config: Optional[Path] = CONFIG_OPTION,
    cron: Optional[str] = typer.Option(None, "--cron", help='Cron schedule, e.g. "0 * * * *" (hourly).'),
    interval: Optional[int] = typer.Option(None, "--interval", min=1, help="Run every SECONDS instead of a cron schedule."),
    name: Optional[str] = typer.Option(None, "--name", help="Deployment name.", show_default="textmill-<corpus folder>"),
    runner: Optional[str] = RUNNER_OPTION,
    dask_address: Optional[str] = DASK_ADDRESS_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
) -> None:
    """Serve the flow as a scheduled deployment until interrupted (Prefect `flow.serve`).

    One run at a time: a scheduled run that comes due while the previous one still works on the
    same output folder is cancelled, and the next one picks up whatever it would have done.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from textmill.flows.pipeline import textmill

    if (cron is None) == (interval is None):
        fail("give exactly one of --cron and --interval", code=2)
    cfg = checked_config(config, corpus, out)
    _, task_runner = chosen_task_runner(cfg, runner, dask_address, workers)
    textmill.with_options(task_runner=task_runner).serve(
        name=name or f"textmill-{corpus.resolve().name}",
        cron=cron,
        interval=interval,
        parameters={"corpus": str(corpus.resolve()), "out": str(out.resolve()), "config": str(cfg.path)},
        tags=["textmill"],
        global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
    )


@app.command()
def search(
    out: Path = typer.Argument(..., help="Output folder of a run (holds textmill.sqlite)."),
    query: str = typer.Argument(..., help='FTS5 query: words, "a phrase", OR, a NOT b, prefix*.'),
    lang: Optional[str] = typer.Option(None, "--lang", help="Only documents in this language (e.g. en)."),
    entity: Optional[str] = typer.Option(None, "--entity", help='Only documents naming this entity (e.g. "Vladimir Putin").'),
    limit: int = typer.Option(10, "--limit", min=1, help="Most hits to print."),
    duplicates: bool = typer.Option(False, "--duplicates", help="Also search duplicate and rejected records."),
) -> None:
    """Search a run's published corpus; prints ranked hits with snippets.

    Relevance is BM25 as a percentage of the best hit's score in the list (the best is 100).
    """
    from textmill.tasks.search import HIGHLIGHT, SearchError, parse_query
    from textmill.tasks.search import search as run_search

    try:
        parsed = parse_query(query)
        if parsed.note:
            console.print(f"[yellow]note:[/] {escape(parsed.note)}", soft_wrap=True)
        hits = run_search(out / "textmill.sqlite", parsed, lang=lang, entity=entity, limit=limit, include_duplicates=duplicates)
    except SearchError as exc:
        fail(str(exc), code=2)
    out_console = Console(highlight=False)
    if not hits:
        out_console.print("no documents match")
        raise typer.Exit(1)
    for rank, hit in enumerate(hits, 1):
        snippet = escape(hit.snippet).replace(HIGHLIGHT[0], "[bold yellow]").replace(HIGHLIGHT[1], "[/]")
        out_console.print(f"[bold]{rank}. {escape(hit.id)}[/]  [dim]{hit.lang or 'und'} · relevance {hit.relevance}[/]")
        out_console.print(f"   {snippet}")


@app.command()
def gc(
    out: Path = typer.Argument(..., parser=out_path, metavar="OUT", help="Output folder of earlier runs (holds .textmill/)."),
    keep: Optional[int] = typer.Option(
        None, "--keep", min=1, metavar="N", help="Runs whose cached results stay.", show_default="[run] keep_runs"
    ),
    config: Optional[Path] = CONFIG_OPTION,
) -> None:
    """Remove cached results that none of the last N runs into OUT used; prints what went."""
    from textmill.flows.config import load_config
    from textmill.flows.gc import collect_garbage
    from textmill.flows.lock import OutputFolderBusy, output_folder_lock

    if not (out / ".textmill").is_dir():
        fail(f"{out} holds no textmill state (.textmill/); give the output folder of a run", code=2)
    try:
        settings = load_config(config).run
    except ConfigError as exc:
        fail(str(exc), code=2)
    try:
        with output_folder_lock(out, settings.lock_timeout):
            report = collect_garbage(out / ".textmill", keep or settings.keep_runs)
    except OutputFolderBusy as exc:
        fail(str(exc))
    typer.echo(f"gc: {report.summary()}")


@app.command()
def steps() -> None:
    """List installed steps, their options and defaults."""
    from textmill.tasks.registry import describe_options, load_registry

    for name, cls in sorted(load_registry().items()):
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        table = Table(title=f"{name} (v{cls.version}, {cls.scope} scope) — {cls.__module__}.{cls.__name__}", title_justify="left", caption=doc, caption_justify="left")
        table.add_column("option", no_wrap=True)
        table.add_column("type", no_wrap=True)
        table.add_column("default")
        table.add_column("description")
        for row in describe_options(cls):
            table.add_row(*row)
        Console().print(table)


def checked_config(config: Path | None, corpus: Path, out: Path) -> Any:
    """The validated pipeline config, after checking the corpus and output paths; exit 2 on a problem."""
    from textmill.flows.config import check_run_paths, load_config

    try:
        check_run_paths(str(corpus), str(out))
        return load_config(config)
    except ConfigError as exc:
        fail(str(exc), code=2)


def check_database(cfg: Any, publish: str | None) -> None:
    """Exit 2 when the PostgreSQL server the run would publish to cannot be reached now, before any work."""
    spec = next((s for s in cfg.steps if s.name == "publish"), None)
    if spec is None:
        return
    options = spec.options
    dsn = publish or (options.get("postgres_dsn") if "postgres" in options.get("formats", ()) else None)
    if not dsn:
        return
    from textmill.tasks.postgres import connection_problem, describe_target  # psycopg: only when publishing there

    problem = connection_problem(dsn)
    if problem is not None:
        where = "--publish" if publish else "[steps.publish] postgres_dsn"
        target = describe_target(dsn, options.get("postgres_schema", "textmill"))
        fail(f"{where}: cannot connect to {target}: {problem}", code=2)


def chosen_task_runner(cfg: Any, runner: str | None, dask_address: str | None, workers: int | None) -> tuple[str, Any]:
    """The runner kind and Prefect task runner from the options, falling back to `[run]`; exit 2 if invalid."""
    from textmill.flows.runners import make_task_runner

    kind = "dask" if dask_address else runner or cfg.run.runner
    try:
        return kind, make_task_runner(kind, workers or cfg.run.workers, dask_address or cfg.run.dask_address)
    except ConfigError as exc:
        fail(str(exc), code=2)


def flow_run_settings(temporary_server: bool) -> Any:
    """Prefect settings for the run's flow. Against the run's temporary server, no heartbeats:
    they let a running server mark a flow run whose process died as crashed, but this server
    stops with the run, and the flow's end waits up to a second for the heartbeat thread."""
    from contextlib import nullcontext

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    if not temporary_server:
        return nullcontext()
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def fail(message: str, code: int = 1, trace: BaseException | None = None) -> NoReturn:
    """Print `error: message` (passwords redacted), after `trace`'s traceback if given, and exit."""
    from textmill.tasks.secrets import redact

    if trace is not None:
        console.print(escape(redact("".join(traceback.format_exception(trace)))), end="")
    console.print(f"[bold red]error:[/] {escape(redact(message))}")
    raise typer.Exit(code)


def one_line(exc: BaseException) -> str:
    """`Type: message`, first line only."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def postgres_dsn_without_password(dsn: str) -> str:
    """The DSN Prefect may see; its password, if any, goes to libpq through PGPASSWORD."""
    from textmill.tasks.secrets import InvalidDsn, split_password

    try:
        bare, password = split_password(dsn)
    except InvalidDsn as exc:
        fail(f"--publish: {exc}", code=2)
    if password is not None:
        os.environ["PGPASSWORD"] = password
    return bare


def skipped_summary(manifest: dict[str, Any]) -> str:
    """What discovery passed over on purpose: output folders inside the corpus, links to files read anyway."""
    parts = []
    folders = manifest.get("skipped_output_folders") or []
    if folders:
        parts.append(f"output folder{'s' if len(folders) > 1 else ''} {', '.join(folders)}")
    if manifest.get("skipped_links"):
        parts.append(f"{manifest['skipped_links']} link(s) to files read under their own path")
    return "; ".join(parts)


def print_summary(manifest: dict[str, Any], out: Path) -> None:
    """The end-of-run table: what went in, what came out, where time and cache went."""
    out_console = Console()
    counts = manifest["counts"]
    totals = Table(title="textmill summary", title_justify="left", show_header=False)
    totals.add_column("what")
    totals.add_column("value")
    totals.add_row("files in", str(manifest["files"]))
    if manifest.get("skipped_output_folders") or manifest.get("skipped_links"):
        totals.add_row("not read", skipped_summary(manifest))
    read = manifest["read"]
    totals.add_row("new or changed files", f"{read['computed']} read this run; {read['cached']} unchanged, from the cache")
    totals.add_row("documents", str(manifest["documents"]))
    totals.add_row("ok", str(counts.get("ok", 0)))
    clusters = manifest.get("clusters", 0)
    totals.add_row("duplicates", f"{counts.get('duplicate', 0)}" + (f" (in {clusters} cluster{'s' if clusters > 1 else ''})" if clusters else ""))
    rejected = ", ".join(f"{k}: {v}" for k, v in manifest["rejected"].items())
    totals.add_row("rejected", f"{counts.get('rejected', 0)}" + (f" ({rejected})" if rejected else ""))
    encodings = manifest.get("encodings", {})
    if encodings.get("non_utf8") or encodings.get("uncertain"):
        totals.add_row("not UTF-8", f"{encodings['non_utf8']} decoded from another encoding, {encodings['uncertain']} uncertain")
    totals.add_row("languages", ", ".join(f"{k} {v}" for k, v in manifest["languages"].items()) or "-")
    totals.add_row(
        "top entities", ", ".join(f"{e['name']} ({e['label']}) {e['count']}" for e in manifest["top_entities"][:8]) or "-"
    )
    totals.add_row("output", f"{out}/ ({', '.join(manifest['outputs'])})")
    if "store" in manifest:
        from textmill.flows.report import human_bytes

        store = manifest["store"]
        totals.add_row("store", f"{out}/.textmill: {store['files']} files, {human_bytes(store['bytes'])}")
    for store, changes in manifest.get("published", {}).items():
        totals.add_row(store, ", ".join(f"{v} {k}" for k, v in changes.items()))
    out_console.print(totals)

    steps_table = Table(title="steps", title_justify="left")
    columns = ("computed", "cached", "skipped", "updated")
    steps_table.add_column("step")
    for column in (*columns, "seconds"):
        steps_table.add_column(column, justify="right")
    for name, s in {"read": manifest["read"], **manifest["steps"]}.items():
        steps_table.add_row(name, *(str(s[c]) for c in columns), f"{s['seconds']:.2f}")
    out_console.print(steps_table)


if __name__ == "__main__":
    app()
