"""The `textmill` command: run the pipeline ad hoc, list installed steps."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tasks.base import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn a folder of raw documents into a clean corpus.")
console = Console(stderr=True)


class RichProgress:
    """One progress bar per stage: documents done out of documents in the corpus."""

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

    def start(self, stage: str, total: int) -> None:
        self.bars[stage] = self.progress.add_task(stage.replace(":", " "), total=total)

    def advance(self, stage: str, done: int) -> None:
        self.progress.advance(self.bars[stage], done)

    def finish(self, stage: str) -> None:
        bar = self.bars[stage]
        self.progress.update(bar, completed=self.progress.tasks[bar].total)


@app.command()
def run(
    corpus: Path = typer.Argument(..., help="Folder of .txt, .md, .html/.htm and .jsonl files (searched recursively)."),
    out: Path = typer.Option(Path("out"), "--out", help="Output folder (also holds the cache, in .textmill/)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Pipeline config [default: config/pipeline.toml]."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
) -> None:
    """Run the pipeline over CORPUS and print a summary."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.config import load_config
    from flows.pipeline import textmill
    from flows.progress import set_listener

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        fail(str(exc), code=2)
    if not corpus.is_dir():
        fail(f"corpus folder not found: {corpus}", code=2)
    flow = textmill.with_options(task_runner=ThreadPoolTaskRunner(max_workers=cfg.run.workers))
    try:
        with RichProgress() as progress:
            set_listener(progress)
            manifest = flow(corpus=str(corpus), out=str(out), config=str(cfg.path))
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback is in Prefect's logs
        fail(f"{type(exc).__name__}: {exc}".splitlines()[0])
    finally:
        set_listener(None)
    print_summary(manifest, out)


@app.command()
def steps() -> None:
    """List installed steps, their options and defaults."""
    from tasks.registry import describe_options, load_registry

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


def fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def print_summary(manifest: dict[str, Any], out: Path) -> None:
    """The end-of-run table: what went in, what came out, where time and cache went."""
    out_console = Console()
    counts = manifest["counts"]
    totals = Table(title="textmill summary", title_justify="left", show_header=False)
    totals.add_column("what")
    totals.add_column("value")
    totals.add_row("files in", str(manifest["files"]))
    totals.add_row("documents", str(manifest["documents"]))
    totals.add_row("ok", str(counts.get("ok", 0)))
    totals.add_row("duplicates", str(counts.get("duplicate", 0)))
    rejected = ", ".join(f"{k}: {v}" for k, v in manifest["rejected"].items())
    totals.add_row("rejected", f"{counts.get('rejected', 0)}" + (f" ({rejected})" if rejected else ""))
    totals.add_row("languages", ", ".join(f"{k} {v}" for k, v in manifest["languages"].items()) or "-")
    totals.add_row(
        "top entities", ", ".join(f"{e['name']} ({e['label']}) {e['count']}" for e in manifest["top_entities"][:8]) or "-"
    )
    totals.add_row("output", f"{out}/ ({', '.join(manifest['outputs'])})")
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
