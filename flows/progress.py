"""Progress reporting seam: the flow reports, whoever runs it (CLI, server, test) listens.

Shard functions (`flows/shard.py`) report documents as they finish each batch through a
callback from `shard_progress`. With the thread runner it reaches the listener of the process
running the flow directly, so the CLI's bars move per batch. A worker process of the process
runner forwards each report to the flow's process through a queue (`forward_to`,
`receive_forwarded`), so the bars move per batch there too. On Dask worker processes nothing
is forwarded, and a shard's documents reach the bars at once when its task finishes
(`shard_done`, called by the flow). Either way `shard_done` settles a shard's count, and a
forwarded report that arrives after it is dropped, so a bar never counts a document twice.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol


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
_settled: set[tuple[str, int]] = set()
_reported_lock = threading.Lock()
_forward: Any = None  # in a worker process: the queue to the flow's process


def set_listener(listener: ProgressListener | None) -> None:
    """Install a listener for runs in this process (the CLI installs a rich progress bar)."""
    global _listener
    _listener = listener if listener is not None else Silent()
    new_run()


def new_run() -> None:
    """Forget the shard counts of an earlier run in this process (a flow run starts)."""
    with _reported_lock:
        _reported.clear()
        _settled.clear()


def listener() -> ProgressListener:
    return _listener


def shard_progress(stage: str, shard: int) -> Callable[[int], None]:
    """A callback for one attempt of a shard task: `report(n)` says n more documents are done.

    A retried shard starts over, so what an earlier attempt reported is taken back first.
    """
    key = (stage, shard)
    with _reported_lock:
        earlier = _reported.pop(key, 0)
        _settled.discard(key)  # in this process: an attempt starts, so any settled count is an earlier run's
    if _forward is not None:
        if earlier:
            _forward.put((stage, shard, -earlier))

        def forward(done: int) -> None:
            if done:
                with _reported_lock:
                    _reported[key] = _reported.get(key, 0) + done
                _forward.put((stage, shard, done))

        return forward
    if earlier:
        _listener.advance(stage, -earlier)

    def report(done: int) -> None:
        if done:
            forwarded(stage, shard, done)

    return report


def forwarded(stage: str, shard: int, done: int) -> None:
    """`done` more documents of a shard (negative: taken back by a retry), unless the shard's
    task has already been settled by `shard_done`."""
    key = (stage, shard)
    with _reported_lock:
        if key in _settled:
            return
        _reported[key] = _reported.get(key, 0) + done
    _listener.advance(stage, done)


def forward_to(queue: Any) -> None:
    """In a worker process: send every shard's reports to the flow's process through `queue`."""
    global _forward
    _forward = queue


def receive_forwarded(queue: Any) -> None:
    """In the flow's process, on a thread of its own: pass on what worker processes report,
    until None arrives."""
    while True:
        try:
            item = queue.get()
        except (EOFError, OSError):
            return
        if item is None:
            return
        forwarded(*item)


def shard_done(stage: str, shard: int, size: int) -> None:
    """A shard task of `size` documents finished: report whatever it did not report itself
    (all of it when it ran in another process or Prefect served it from its cache)."""
    with _reported_lock:
        reported = _reported.pop((stage, shard), 0)
        _settled.add((stage, shard))
    if size != reported:
        _listener.advance(stage, size - reported)


def no_progress(done: int) -> None:
    """The callback for callers that do not watch progress."""
