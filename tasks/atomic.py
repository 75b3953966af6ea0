"""Atomic file writes: write beside the target under a temporary name, then rename.

Readers see either the old file or the new one, never a half-written one, and a crash
leaves at most a hidden temporary file behind.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_umask = os.umask(0)
os.umask(_umask)


def temp_beside(target: Path) -> Path:
    """A new empty temporary file in the target's folder, with ordinary permissions."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask)
    return Path(name)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    tmp = temp_beside(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def replace_if_changed(tmp: Path, target: Path) -> None:
    """Move `tmp` over `target` unless their bytes are equal (then the old file stays untouched)."""
    if target.exists() and sha256_file(target) == sha256_file(tmp):
        tmp.unlink()
    else:
        os.replace(tmp, target)
