"""Atomic file writes: write beside the target under a temporary name, then rename.

Readers see either the old file or the new one, never a half-written one, and a crash
leaves at most a hidden temporary file behind.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path


def temp_beside(target: Path) -> Path:
    """A new empty temporary file in the target's folder; the umask sets its permissions."""
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        candidate = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return candidate


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    tmp = temp_beside(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def replace_if_changed(tmp: Path, target: Path) -> None:
    """Move `tmp` over `target` unless their bytes are equal (then the old file stays untouched)."""
    same_size = target.exists() and target.stat().st_size == tmp.stat().st_size
    if same_size and sha256_file(target) == sha256_file(tmp):
        tmp.unlink()
    else:
        os.replace(tmp, target)
