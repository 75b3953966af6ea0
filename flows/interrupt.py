"""Ctrl-C during `textmill run`: one line, exit 130 within seconds, the cache intact.

Left to Python, Ctrl-C raises KeyboardInterrupt inside Prefect's flow engine, which then
reports the crash to its API and drains its log and event queues at exit. In a terminal the
same Ctrl-C also reaches Prefect's temporary API server (it shares the terminal's process
group) and stops it first, so those reports retry against a dead server for a minute and a
half and fill the terminal. Nothing needs saving on the way out: every finished document is
already in the store (written atomically), so the next run resumes from there. Hence a
handler that says so, stops the temporary server, and leaves at once with `os._exit`.

With a server someone watches (PREFECT_API_URL), the handler first marks the flow run
Crashed and sends the queued logs, within a few seconds, so the UI does not show it running
forever.

Worker processes (the process runner's, a local Dask cluster's) share the terminal too; they
ignore Ctrl-C from their first import on (`ignore_interrupt_in_cli_worker`), since one
interrupted mid-task would print its traceback over the terminal, and the handler kills them.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

MESSAGE = "interrupted; the next run resumes from the cache"
EXIT_CODE = 130
DEADLINE_SECONDS = 4.0
REPORT_SECONDS = 2.0
DISPLAY_SECONDS = 1.0
CLI_PID_ENV = "TEXTMILL_CLI_PID"
# The fork server the CLI starts for its workers (`textmill.flows.runners.prepare_fork_server`).
FORK_SERVER_ENV = "TEXTMILL_FORK_SERVER_OF"


def exit_on_interrupt(stop_display: Callable[[], None]) -> None:
    """On SIGINT: `stop_display()` (the progress bars), print MESSAGE, stop the temporary API
    server or inform the watched one, exit 130.

    A second Ctrl-C, or anything that takes longer than DEADLINE_SECONDS, exits at once.
    """

    os.environ[CLI_PID_ENV] = str(os.getpid())
    # multiprocessing's resource tracker outlives a run that leaves with os._exit and removes the
    # semaphores of its worker pool itself; its warning that it does so is noise on the terminal.
    warnings = [w for w in os.environ.get("PYTHONWARNINGS", "").split(",") if w]
    os.environ["PYTHONWARNINGS"] = ",".join([*warnings, "ignore:resource_tracker:UserWarning"])

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, lambda *_: os._exit(EXIT_CODE))
        watchdog = threading.Timer(DEADLINE_SECONDS, os._exit, args=(EXIT_CODE,))
        watchdog.daemon = True
        watchdog.start()
        logging.disable(logging.CRITICAL)
        try:
            run_briefly(stop_display, DISPLAY_SECONDS)
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.write(2, f"{MESSAGE}\n".encode())
            stop_worker_processes()
            from textmill.flows.apiserver import stop_temporary_server

            if not stop_temporary_server():
                report_crash()
        finally:
            os._exit(EXIT_CODE)

    signal.signal(signal.SIGINT, handler)


def ignore_interrupt_in_cli_worker() -> None:
    """In a worker process that `textmill run` started (a multiprocessing child of the process
    that set CLI_PID_ENV, or forked from the fork server it started), leave Ctrl-C to the
    parent: it stops the workers itself."""
    cli = os.environ.get(CLI_PID_ENV)
    spawned = "--multiprocessing-fork" in sys.orig_argv and cli == str(os.getppid())
    forked = cli is not None and os.environ.get(FORK_SERVER_ENV) == cli and cli != str(os.getpid())
    if spawned or forked:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_worker_processes() -> None:
    """Kill this process's worker processes at once: nothing they hold needs saving."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()


def run_briefly(fn: Callable[[], None], seconds: float) -> None:
    """Call `fn` in a thread of its own and wait at most `seconds`: the interrupted main thread
    may hold a lock `fn` needs (rich's, mid-refresh), and the message must come out anyway."""
    worker = threading.Thread(target=fn, daemon=True)
    worker.start()
    worker.join(seconds)


def report_crash() -> None:
    """Mark the current flow run Crashed and send queued logs and events, bounded in time."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.states import Crashed

    context: Any = FlowRunContext.get()
    try:
        if context is not None and context.flow_run is not None:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(context.flow_run.id, Crashed(message="Interrupted by the user (Ctrl-C)"), force=True)
        APILogWorker.drain_all(timeout=REPORT_SECONDS)
        EventsWorker.drain_all(timeout=REPORT_SECONDS)
    except Exception:  # noqa: BLE001 - leaving anyway; the run stays Running on the server
        pass
