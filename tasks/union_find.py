"""Disjoint sets over hashable keys: near-duplicate links are pairwise, clusters are transitive."""
from __future__ import annotations

from collections.abc import Hashable, Iterable


class UnionFind:
    """Union by size with path halving: near-linear for the millions of links a corpus can produce."""

    def __init__(self, keys: Iterable[Hashable] = ()) -> None:
        self._parent: dict[Hashable, Hashable] = {}
        self._size: dict[Hashable, int] = {}
        for key in keys:
            self.add(key)

    def add(self, key: Hashable) -> None:
        """Register `key` as its own set (a no-op if it is already known)."""
        if key not in self._parent:
            self._parent[key] = key
            self._size[key] = 1

    def find(self, key: Hashable) -> Hashable:
        """Return the representative of `key`'s set, registering `key` if it is new."""
        self.add(key)
        parent = self._parent
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def union(self, a: Hashable, b: Hashable) -> bool:
        """Merge the sets of `a` and `b`; return whether they were separate."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]
        return True

    def groups(self) -> list[list[Hashable]]:
        """Every set as a list of its keys, in insertion order; the representative is not meaningful."""
        members: dict[Hashable, list[Hashable]] = {}
        for key in self._parent:
            members.setdefault(self.find(key), []).append(key)
        return list(members.values())
