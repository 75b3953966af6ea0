"""One run at a time per output folder: an exclusive lock on `out/.textmill/lock` for the whole run.

Two runs on one output folder (an ad hoc run beside `textmill serve`) would interleave their
writes to the cache and the published files. The lock is an OS file lock (filelock), so it is
released when its holder exits, however it exits; the holder's pid, host and start time are
written beside it so that the run that cannot get it can say who has it.
"""
from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from textmill.tasks.atomic import write_atomic

LOCK_FILE = Path(".textmill") / "lock"
HOLDER_FILE = Path(".textmill") / "lock.holder"


class OutputFolderBusy(RuntimeError):
    """Another run holds the output folder's lock."""


@contextmanager
def output_folder_lock(out: Path, timeout: float = 0) -> Iterator[None]:
    """Hold the lock of `out` while the block runs; OutputFolderBusy after `timeout` seconds."""
    lock_path = out / LOCK_FILE
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path, timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        waited = f" after waiting {timeout:g} s" if timeout else ""
        raise OutputFolderBusy(
            f"the output folder {out} is in use by another textmill run ({holder(out)}){waited}; "
            "wait for it to finish or choose another output folder"
        ) from None
    holder_path = out / HOLDER_FILE
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_atomic(holder_path, json.dumps(record).encode())
        yield
    finally:
        holder_path.unlink(missing_ok=True)
        lock.release()


def holder(out: Path) -> str:
    """Who holds the lock of `out`, as far as its holder file says."""
    try:
        record = json.loads((out / HOLDER_FILE).read_text())
        return f"pid {record['pid']} on {record['host']}, since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
