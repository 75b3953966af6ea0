"""Cache keys: each step's key for a document chains the key of the step before it.

`k_0` is the sha256 of the document's raw bytes; `k_S = H(k_{S-1}, fingerprint(S), extra)`.
Editing a file changes its `k_0` and so every key after it; changing a step's options or
version changes its fingerprint and so its key and every later one, but no earlier one.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any


def chain(previous: str, fingerprint: str, extra: str = "") -> str:
    """The key of a step's result, given the key of its input."""
    return hashlib.sha256(f"{previous}\0{fingerprint}\0{extra}".encode()).hexdigest()


def digest(data: Any) -> str:
    """Stable digest of JSON-able data (sorted keys)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def digest_lines(lines: Iterable[str]) -> str:
    """Digest of many strings without joining them in memory."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()
