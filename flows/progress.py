"""Progress reporting seam: the flow reports, whoever runs it (CLI, server, test) listens.

Shard functions (`flows/shard.py`) report documents as they finish each batch through a
callback from `shard_progress`; it reaches the listener of the process it runs in. With the
thread runner that is the process running the flow, so the CLI's bars move per batch. On Dask
worker processes the listener is the silent default, and a shard's documents reach the bars
at once when its task finishes (`shard_done`, called by the flow).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol


class ProgressListener(Protocol):
    def start(self, stage: str, total: int | None) -> None: ...
    def advance(self, stage: str, done: int) -> None: ...
    def finish(self, stage: str, failed: bool = False) -> None: ...


class Silent:
    """The default: deployments and tests show progress in Prefect's logs and artifacts instead."""

    def start(self, stage: str, total: int | None) -> None:
        pass

    def advance(self, stage: str, done: int) -> None:
        pass

    def finish(self, stage: str, failed: bool = False) -> None:
        pass


_listener: ProgressListener = Silent()
_reported: dict[tuple[str, int], int] = {}
_reported_lock = threading.Lock()


def set_listener(listener: ProgressListener | None) -> None:
    """Install a listener for runs in this process (the CLI installs a rich progress bar)."""
    global _listener
    _listener = listener if listener is not None else Silent()
    with _reported_lock:
        _reported.clear()


def listener() -> ProgressListener:
    return _listener


def shard_progress(stage: str, shard: int) -> Callable[[int], None]:
    """A callback for one attempt of a shard task: `report(n)` says n more documents are done.

    A retried shard starts over, so what an earlier attempt reported is taken back first.
    """
    key = (stage, shard)
    with _reported_lock:
        earlier = _reported.pop(key, 0)
    if earlier:
        _listener.advance(stage, -earlier)

    def report(done: int) -> None:
        if done:
            with _reported_lock:
                _reported[key] = _reported.get(key, 0) + done
            _listener.advance(stage, done)

    return report


def shard_done(stage: str, shard: int, size: int) -> None:
    """A shard task of `size` documents finished: report whatever it did not report itself
    (all of it when it ran in another process or Prefect served it from its cache)."""
    with _reported_lock:
        reported = _reported.pop((stage, shard), 0)
    if size != reported:
        _listener.advance(stage, size - reported)


def no_progress(done: int) -> None:
    """The callback for callers that do not watch progress."""
