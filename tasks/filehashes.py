"""Remembered file hashes, so that discovery reads only files whose stat changed (as git's index does).

A file is trusted unchanged when its size, modification time (ns), inode and device equal what
was recorded when it was last hashed. That fails in one case, which git calls "racily clean": a
file rewritten within the timestamp granularity of its previous write, with the same size,
keeps the same stat. So an entry is trusted only when the file's mtime is older than the start
of the scan that recorded it, by more than `RACY_WINDOW_NS` (2 s: FAT's timestamp granularity,
the coarsest in common use, which also absorbs a coarse or lagging filesystem clock). A younger
entry is hashed again by the next scan, which then records it against its own, later start.

The cache file is JSON, written atomically once a whole scan succeeded, and only when the scan
changed it (a warm scan of a large corpus would rewrite the same bytes); a missing, unreadable,
corrupt or foreign (other corpus, other format) file is an empty cache: every file is hashed.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from textmill.tasks.atomic import sha256_file, write_atomic

FORMAT = 1
RACY_WINDOW_NS = 2_000_000_000

Entry = list[Any]  # size, mtime_ns, inode, device, sha256: as JSON reads it


def stat_of(st: os.stat_result) -> list[int]:
    """The parts of a stat that change when a file's bytes do."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


class FileHashes:
    """The sha256 of each input file, reused while its stat is unchanged and its entry not racy.

    `hashed` and `reused` count this scan's files (`changed`: those hashed that are new or
    differ from their remembered hash, not a racily clean file read again); entries for
    files not seen by this scan (deleted, renamed, now rejected) are not saved, so the cache
    follows the corpus.
    """

    def __init__(
        self, root: Path, previous: dict[str, Entry] | None = None, trusted_before_ns: int = 0, loaded: bool = False
    ) -> None:
        self.root = str(root.resolve())
        self.previous = previous or {}
        self.trusted_before_ns = trusted_before_ns
        self.loaded = loaded  # `previous` is what the cache file holds
        self.started_ns = time.time_ns()
        self.current: dict[str, Entry] = {}
        self.hashed = 0
        self.reused = 0
        self.changed = 0  # hashed files that are new or whose bytes differ from the remembered hash

    @classmethod
    def load(cls, path: Path, root: Path) -> FileHashes:
        """The cache at `path` for the corpus `root`; empty when it is missing or unusable.

        Entries are checked as they are used (`sha256`): a malformed one is a file to hash.
        """
        empty = cls(root)
        try:
            data = json.loads(path.read_bytes())
            if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("root") != empty.root:
                return empty
            files, started = data["files"], data["scan_started_ns"]
            if not isinstance(files, dict) or not isinstance(started, int):
                return empty
            return cls(root, files, started - RACY_WINDOW_NS, loaded=True)
        except (OSError, ValueError, KeyError, RecursionError):
            return empty

    def sha256(self, source_id: str, path: str | Path, st: os.stat_result) -> str:
        """The file's sha256: remembered when its stat is unchanged and not racy, else read.

        A file whose stat changed while it was read is not recorded: its hash may mix two
        versions, and the next scan reads it again.
        """
        known = self.previous.get(source_id)
        now = stat_of(st)
        if trusted(known, now, self.trusted_before_ns):
            self.current[source_id] = known
            self.reused += 1
            return known[4]
        digest = sha256_file(path)
        self.hashed += 1
        if not (type(known) is list and len(known) == 5 and known[4] == digest):
            self.changed += 1
        if stat_of(os.stat(path)) == now:
            self.current[source_id] = [*now, digest]
        return digest

    def save(self, path: Path) -> None:
        """Write what this scan saw, atomically; its start time decides which entries are racy.

        A scan that hashed nothing and saw every remembered file (it reused each entry as it
        was) leaves the file as it is: the entries it holds were trusted against the earlier
        start, so they stay trusted under it.
        """
        if self.loaded and self.hashed == 0 and len(self.current) == len(self.previous) and path.exists():
            return
        data = {"format": FORMAT, "root": self.root, "scan_started_ns": self.started_ns, "files": self.current}
        write_atomic(path, json.dumps(data, separators=(",", ":")).encode())


def trusted(known: Any, now: list[int], before_ns: int) -> bool:
    """Whether a cache entry (`[size, mtime_ns, inode, device, sha256]`) still holds for a file
    whose stat is `now`: same stat, a well-formed hash, and not racily clean."""
    return (
        type(known) is list
        and len(known) == 5
        and known[:4] == now
        and known[1] < before_ns
        and type(known[4]) is str
        and len(known[4]) == 64
    )
