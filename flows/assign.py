"""Which shard each input file belongs to, kept from run to run so that new files fill new shards.

A file keeps the shard it was first given for as long as it exists; an edit keeps its shard.
New files, in id order, top up the highest-numbered shards (as many as the run has workers,
sharing the new files evenly, so every worker has a part of them) to this run's shard capacity
and then open new shards numbered after them. A shard is topped up only while it has room for
at least half of `shard_size`: a topped-up shard's tasks run again over all its documents
(the cached ones cost little each, but a shard of 1,563 costs seconds per stage), so the
sliver of room that a growing capacity gives full shards (16 files each when 100,000 files
become 101,000 in 64 shards) would double the cost of each stage of a run adding 1%.
The capacity is `shard_size`, or more when the corpus has
more than `max_shards` shards' worth of files: every shard task costs Prefect a few
milliseconds even when it is Cached, so a large corpus gets fewer, larger shards. New
shards share the new files evenly, and come in a multiple of the run's workers as long as each
gets half of `shard_size`: equal shards on every worker finish together (5 shards on 2 workers
leave one worker idle for a fifth of the stage; 6 do not), and a run that adds 1% still uses
every core. So a scheduled run over a corpus that grows by new files touches
only the shards they land in, and every other shard's tasks stay Cached; hashing ids to shards
instead would spread 1% of new files over nearly every shard. A first run is the same rule
from nothing: files in id order, in even shares of at most the capacity.

Shards emptied by deletions are gone (publish removes their outputs); older shards thinned by
deletions are not refilled, so their documents' results stay where they are. A changed
`shard_size` or `max_shards` applies to new shards only.

The map is saved (`.textmill/shards.json`) before any shard task runs: the store keeps one
pack per shard, so a run must find each file in the shard whose pack holds its results. A lost
or unreadable map is a first run's assignment again; documents that land in another shard than
before are then computed again, never wrong.
"""
from __future__ import annotations

import json
from pathlib import Path

from textmill.tasks.atomic import write_atomic
from textmill.tasks.read import SourceFile

FORMAT = 1


class ShardMap:
    """File id -> shard number, as the last run left it."""

    def __init__(self, shards: dict[str, int] | None = None, saved: bool = False) -> None:
        self.shards = shards or {}
        # Whether `shards` is what the file holds: saving it again would rewrite the same bytes
        # (a map of a million files is about 20 MB of JSON).
        self.saved = saved

    @classmethod
    def load(cls, path: Path) -> ShardMap:
        """The map at `path`; empty when missing, unreadable or of another format."""
        try:
            data = json.loads(path.read_bytes())
            shards = data["shards"] if isinstance(data, dict) and data.get("format") == FORMAT else None
        except (OSError, ValueError, KeyError, RecursionError):
            return cls()
        if not isinstance(shards, dict) or not all(type(n) is int and n >= 0 for n in shards.values()):
            return cls()
        return cls(shards, saved=True)

    def assign(
        self, sources: list[SourceFile], shard_size: int, max_shards: int, workers: int = 1
    ) -> dict[int, list[SourceFile]]:
        """Each shard's files: known files where they were, new ones appended (see the module
        docstring). The map then holds exactly these files."""
        if shard_size < 1 or max_shards < 1 or workers < 1:
            raise ValueError("shard_size, max_shards and workers must be at least 1")
        capacity = max(shard_size, -(-len(sources) // max_shards))
        members: dict[int, list[SourceFile]] = {}
        new: list[SourceFile] = []
        for src in sources:
            n = self.shards.get(src.id)
            if n is None:
                new.append(src)
            else:
                members.setdefault(n, []).append(src)
        new.sort(key=lambda src: src.id)
        last = max(members, default=-1)
        filling = sorted(members)[-workers:]
        rooms = [capacity - len(members[n]) for n in filling]
        reopen = max(1, shard_size // 2)  # smaller rooms stay closed: see the module docstring
        shares = top_up(new_files=len(new), rooms=[room if room >= reopen else 0 for room in rooms])
        start = 0
        for n, share in zip(filling, shares):
            members[n].extend(new[start : start + share])
            start += share
        rest = new[start:]
        opened = max(-(-len(rest) // capacity), min(workers, len(rest) // max(1, shard_size // 2)))
        balanced = -(-opened // workers) * workers
        if rest and len(rest) // balanced >= max(1, shard_size // 2):
            opened = balanced
        start = 0
        for i in range(opened):  # even shares, the first ones one larger
            size = len(rest) // opened + (i < len(rest) % opened)
            members[last + 1 + i] = rest[start : start + size]
            start += size
        shards = {src.id: n for n, group in members.items() for src in group}
        if shards != self.shards:
            self.shards, self.saved = shards, False
        return dict(sorted(members.items()))

    def save(self, path: Path) -> None:
        """Write the map atomically, unless the file already holds it."""
        if self.saved and path.exists():
            return
        write_atomic(path, json.dumps({"format": FORMAT, "shards": self.shards}, separators=(",", ":")).encode())
        self.saved = True


def top_up(new_files: int, rooms: list[int]) -> list[int]:
    """How many of `new_files` each shard with `rooms` free places takes: as evenly as the
    rooms allow (a full shard takes none), so the shards being filled share the new work."""
    shares = [0] * len(rooms)
    left = min(new_files, sum(rooms))
    open_shards = sorted(range(len(rooms)), key=lambda i: rooms[i])
    while left and open_shards:
        even = max(1, left // len(open_shards))
        for i in list(open_shards):
            take = min(even, rooms[i] - shares[i], left)
            shares[i] += take
            left -= take
            if shares[i] == rooms[i]:
                open_shards.remove(i)
            if not left:
                break
    return shares
