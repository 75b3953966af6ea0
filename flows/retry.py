"""Which failures are worth retrying: transient I/O yes, mistakes and bugs never."""
from __future__ import annotations

import sqlite3
from typing import Any

from textmill.tasks.base import ConfigError

PERMANENT_OS_ERRORS = (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError)


class TransientError(Exception):
    """Raise (or subclass) for a failure that may pass on its own."""


def is_transient(exc: BaseException) -> bool:
    """True for failures a retry may cure: flaky I/O, timeouts, a locked database."""
    if isinstance(exc, (ConfigError, *PERMANENT_OS_ERRORS)):
        return False
    return isinstance(exc, (TransientError, TimeoutError, ConnectionError, OSError, sqlite3.OperationalError))


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry only when the failure is transient."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify whatever the task raised
        return is_transient(exc)
    return False
