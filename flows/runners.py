"""Task runners: Prefect's thread pool on one machine (capped), or Dask worker processes
(prefect-dask); and which Prefect API a run reports to (`textmill run` starts the temporary
one itself, so it can stop it on Ctrl-C).

On Dask each worker process builds a step once (`textmill.flows.shard.step_for`) and keeps it, so a
spaCy model loads once per worker, not once per shard.
"""
from __future__ import annotations

import os
from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from textmill.tasks.base import ConfigError


MAX_DEFAULT_THREADS = 4


def default_workers(kind: str) -> int:
    """Shard tasks at once when the config does not say.

    Threads: the model-bound steps hold the GIL, so threads beyond the first add memory (each
    holds a shard) but little speed; on BBC 1, 2 and 4 threads ran within 2% of each other
    (docs/operations.md). Prefect's own default pool is unbounded, hence the cap. Dask: one
    worker process per core.
    """
    cores = os.cpu_count() or 1
    return min(cores, MAX_DEFAULT_THREADS) if kind == "threads" else cores


def make_task_runner(kind: str, workers: int | None = None, dask_address: str | None = None) -> Any:
    """The Prefect task runner for `kind` ("threads" or "dask"), `workers` at once (or the default)."""
    workers = workers or default_workers(kind)
    if kind == "threads":
        if dask_address:
            raise ConfigError("a Dask address needs the dask runner (--runner dask)")
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind != "dask":
        raise ConfigError(f"unknown runner {kind!r}; choose 'threads' or 'dask'")
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}
    )


_temporary_api_url: str | None = None
STEP_TAGS_ENV = "TEXTMILL_STEP_TAGS"
_temporary_server: Any | None = None


def watched_server() -> bool:
    """Whether runs report to a Prefect server someone can watch: one named by PREFECT_API_URL,
    not the temporary server of an ad hoc run, which disappears with it."""
    from prefect.settings import PREFECT_API_URL

    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    return bool(url) and url != _temporary_api_url


def tag_steps() -> bool:
    """Whether task runs carry their step's tag: `TEXTMILL_STEP_TAGS` is `on`, `off` or `auto`.

    `auto` (the default) tags only on a watched server (`watched_server`): each new tag costs a
    concurrency-limit check on the server's database (docs/operations.md, "Tags per step"), worth
    paying where someone filters the UI by step, not on a throwaway server.
    """
    setting = os.environ.get(STEP_TAGS_ENV, "auto").strip().lower()
    if setting not in ("on", "off", "auto"):
        raise ConfigError(f"{STEP_TAGS_ENV}={setting!r}: use on, off or auto")
    return setting == "on" or (setting == "auto" and watched_server())


def ensure_api_server() -> Any | None:
    """Start Prefect's temporary API server unless PREFECT_API_URL names one, and export its URL.

    Dask worker processes start after this and inherit the URL, so their task runs report to
    the same server as the flow; without it each worker would start a server of its own.
    """
    from prefect.settings import PREFECT_API_URL

    if os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    global _temporary_api_url, _temporary_server
    server = _temporary_server = SubprocessASGIServer()
    server.start()
    os.environ["PREFECT_API_URL"] = _temporary_api_url = server.api_url
    return server


def stop_temporary_server() -> bool:
    """Ask the temporary API server of `ensure_api_server` to stop, without waiting for it
    (it shuts down on its own); False when there is none (the run reports to PREFECT_API_URL)."""
    process = getattr(_temporary_server, "server_process", None)
    if process is None:
        return False
    if process.poll() is None:
        process.terminate()
    return True


def loaded_steps() -> list[str]:
    """Names of the steps this process has built (on a Dask worker: `client.run(loaded_steps)`)."""
    from textmill.flows import shard

    return sorted(step.name for step in shard._steps.values())
