"""Where Prefect's logs go during `textmill run`: all of them to the API, little to the terminal.

Prefect sends each record to two handlers, `console` and `api` (its `logging.yml`). The level
of the loggers (PREFECT_LOGGING_LEVEL) applies to both, so lowering it to keep the terminal
quiet also left the Prefect UI without a run's logs. Instead the loggers stay at Prefect's
default (INFO) and only the console handler changes (`terminal_logging.yml`, Prefect's file
with that handler at WARNING and the `OutsideRuns` filter): the run's own records (shard
counts, a failed task's state, the flow's traceback) stay off the terminal, where the CLI
shows progress, the summary, or one line naming the failed step and shard. The setting is an
environment variable, so Dask worker processes and Prefect's temporary server follow it too.
`--verbose` keeps Prefect's own configuration: everything.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

TERMINAL_LOGGING = Path(__file__).with_name("terminal_logging.yml")
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def terminal_logging_env(verbose: bool) -> None:
    """Before Prefect is imported: unless `verbose`, use `terminal_logging.yml` (but a logging
    file of the user's own wins), Dask's own logs at ERROR (its nanny's notice that it killed a
    worker slow to stop is not the user's to act on) and the temporary server's at CRITICAL. `verbose` also undoes an
    earlier quiet run in the same process, since the setting lives in the environment."""
    if verbose:
        if os.environ.get("PREFECT_LOGGING_SETTINGS_PATH") == str(TERMINAL_LOGGING):
            del os.environ["PREFECT_LOGGING_SETTINGS_PATH"]
            os.environ.pop("PREFECT_SERVER_LOGGING_LEVEL", None)
        return
    os.environ.setdefault("PREFECT_LOGGING_SETTINGS_PATH", str(TERMINAL_LOGGING))
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    # The temporary API server shares the terminal: its own errors (e.g. while Ctrl-C stops it
    # mid-write) are not the user's to act on; a failure that matters reaches the run's client.
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")


class OutsideRuns(logging.Filter):
    """Passes records of every logger except the flow and task run loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(RUN_LOGGERS)
