"""Where Prefect's logs go during `textmill run`: all of them to the API, little to the terminal.

Prefect sends each record to two handlers, `console` and `api` (its `logging.yml`). The level
of the loggers (PREFECT_LOGGING_LEVEL) applies to both, so lowering it to keep the terminal
quiet also left the Prefect UI without a run's logs. Instead the loggers stay at Prefect's
default (INFO) and only the console handler is raised to WARNING. The run's own records
(`prefect.flow_runs`, `prefect.task_runs`: shard counts, a failed task's state, the flow's
traceback) stay off the terminal altogether: the CLI shows progress, the summary, or one line
naming the failed step and shard. `--verbose` shows everything.
"""
from __future__ import annotations

import logging
import os

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def quiet_terminal_env() -> None:
    """Before Prefect is imported: the console handler at WARNING (Dask workers inherit it)."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


class OutsideRuns(logging.Filter):
    """Passes records of every logger except the flow and task run loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(RUN_LOGGERS)


def keep_run_logs_off_terminal() -> None:
    """After Prefect has configured logging: filter the run loggers out of its console handler."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(isinstance(f, OutsideRuns) for f in handler.filters):
            handler.addFilter(OutsideRuns())
