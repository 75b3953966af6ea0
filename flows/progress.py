"""Progress reporting seam: the flow reports, whoever runs it (CLI, server, test) listens."""
from __future__ import annotations

from typing import Protocol


class ProgressListener(Protocol):
    def start(self, stage: str, total: int) -> None: ...
    def advance(self, stage: str, done: int) -> None: ...
    def finish(self, stage: str) -> None: ...


class Silent:
    """The default: deployments and tests show progress in Prefect's logs and artifacts instead."""

    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, stage: str, done: int) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass


_listener: ProgressListener = Silent()


def set_listener(listener: ProgressListener | None) -> None:
    """Install a listener for runs in this process (the CLI installs a rich progress bar)."""
    global _listener
    _listener = listener if listener is not None else Silent()


def listener() -> ProgressListener:
    return _listener
