"""Find input files and turn each file (or JSON Lines line) into exactly one raw Document.

Anything unusable becomes a `rejected` Document with a reason: the reader never raises on
content and never drops an input silently, so counts always add up.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from textmill.tasks.atomic import sha256_file
from textmill.tasks.document import Document
from textmill.tasks.encoding import Decoded, decode

FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".jsonl": "jsonl",
}
LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Bump when a change to this module (or tasks/encoding.py) changes the Documents it produces
# for the same bytes.
READER_VERSION = "3"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """An input file: its id is the path relative to the corpus root, stable across machines."""

    id: str
    sha256: str
    size: int
    error: str | None = None


def discover(root: Path, exclude: Path | None = None) -> Iterator[SourceFile]:
    """Yield every file under `root` in a stable order, hashed.

    Hidden directories (`.git`, `.textmill`, ...) and `exclude` (the output folder, when it
    lies inside the corpus) are not descended into; every other file is yielded, whatever
    its type, so that unsupported files are reported rather than ignored.
    """
    root = root.resolve()
    excluded = exclude.resolve() if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        current = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (current / d).resolve() != excluded
        )
        for name in sorted(filenames):
            yield source_file(root, current / name)


def source_file(root: Path, path: Path) -> SourceFile:
    """Hash one file; a file that cannot be read still yields a SourceFile, carrying the error."""
    source_id = path.relative_to(root).as_posix()
    try:
        if not path.is_file():
            return SourceFile(source_id, "", 0, "not a regular file (broken link, socket or device)")
        return SourceFile(source_id, sha256_file(path), path.stat().st_size)
    except OSError as exc:
        return SourceFile(source_id, "", 0, exc.strerror or str(exc))


def format_of(source_id: str) -> tuple[str | None, bool]:
    """The document format from the file name, and whether the file is gzip-compressed."""
    path = Path(source_id)
    compressed = path.suffix.lower() == ".gz"
    suffix = (path.with_suffix("") if compressed else path).suffix.lower()
    return FORMATS.get(suffix), compressed


def read_source(root: Path, src: SourceFile, max_bytes: int, encodings: Sequence[str] = ()) -> list[Document]:
    """Read one file into raw Documents (one per file, or one per line of a JSON Lines file).

    `max_bytes` limits the bytes read, after decompression for `.gz` files, so a small
    compressed file cannot expand into an unbounded amount of memory. `encodings`, when
    given, replaces detection for files that are not UTF-8 (`[input] encodings`).
    """
    fmt, compressed = format_of(src.id)
    base = Document(id=src.id, path=src.id, sha256=src.sha256, meta={"format": fmt or "unknown"})
    if src.error is not None:
        return [base.reject(f"unreadable file: {src.error}")]
    if fmt is None:
        kinds = ", ".join(sorted(FORMATS))
        return [base.reject(f"unsupported file type: {Path(src.id).name} (supported: {kinds}, each optionally .gz)")]
    if src.size > max_bytes:
        return [base.reject(f"file too large: {src.size} bytes exceeds max_bytes={max_bytes}")]
    try:
        data = read_limited(root / src.id, compressed, max_bytes)
    except OSError as exc:
        return [base.reject(f"unreadable file: {exc.strerror or exc}")]
    except (EOFError, zlib.error) as exc:
        return [base.reject(f"unreadable file: corrupt gzip data ({exc})")]
    if data is None:
        return [base.reject(f"file too large: more than max_bytes={max_bytes} bytes after decompression")]
    if not data.strip():
        return [base.reject("empty file")]
    # JSON Lines: a NUL is invalid JSON in one line, not a reason to reject the whole file.
    decoded = decode(data, encodings, markup=fmt == "html", nul_is_binary=fmt != "jsonl")
    if decoded.problem:
        return [base.reject(decoded.problem)]
    if fmt == "jsonl":
        return read_jsonl(base, decoded)
    return [base.evolve(text=decoded.text, meta={**base.meta, **encoding_meta(decoded)})]


def encoding_meta(decoded: Decoded) -> dict[str, object]:
    """`encoding` for text that was not UTF-8, `encoding_uncertain` when that was a weak guess."""
    meta: dict[str, object] = {}
    if decoded.encoding != "utf-8":
        meta["encoding"] = decoded.encoding
    if decoded.uncertain:
        meta["encoding_uncertain"] = True
    return meta


def read_limited(path: Path, compressed: bool, max_bytes: int) -> bytes | None:
    """The file's bytes (decompressed), or None when there are more than `max_bytes`."""
    opener = gzip.open if compressed else open
    with opener(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    return None if len(data) > max_bytes else data


def read_jsonl(base: Document, decoded: Decoded) -> list[Document]:
    """One Document per line: `text` required, `id`, `meta` and `format` optional.

    The file was decoded once, as a whole, so every line gets the same encoding; a line's
    `sha256` is that of its bytes in the file.
    """
    docs = []
    shared = encoding_meta(decoded)
    for number, line in enumerate(lines_of(decoded.text), start=1):
        line_doc = base.evolve(
            id=f"{base.id}#{number}",
            sha256=hashlib.sha256(raw_bytes(line, decoded.encoding)).hexdigest(),
            meta={"format": "text", "line": number, **shared},
        )
        docs.append(parse_jsonl_line(line_doc, line))
    return docs


def raw_bytes(line: str, encoding: str) -> bytes:
    """A line's bytes as they were in the file: a strict decode encodes back to the same bytes."""
    try:
        return line.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return line.encode("utf-8")


def lines_of(text: str) -> list[str]:
    """Lines split at \\n, \\r\\n or \\r only: JSON strings may hold U+2028 and other breaks."""
    lines = LINE_BREAK.split(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def parse_jsonl_line(doc: Document, line: str) -> Document:
    """Validate one JSON Lines record; a bad line is rejected, not fatal to the file."""
    if not line.strip():
        return doc.reject("empty line")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return doc.reject(f"invalid JSON: {exc.msg} at column {exc.colno}")
    except (ValueError, RecursionError) as exc:
        return doc.reject(f"invalid JSON: {type(exc).__name__}: {str(exc)[:200]}")
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as exc:
        return doc.reject(f"invalid record: not representable as UTF-8 JSON ({type(exc).__name__})")
    if not isinstance(record, dict):
        return doc.reject("invalid record: a line must be a JSON object")
    body = record.get("text")
    if not isinstance(body, str) or not body.strip():
        return doc.reject("invalid record: missing or empty 'text' string")
    meta = record.get("meta") or {}
    if not isinstance(meta, dict):
        return doc.reject("invalid record: 'meta' must be an object")
    merged = {**meta, **doc.meta}
    fmt = record.get("format", meta.get("format", "text"))
    if fmt not in ("text", "markdown", "html"):
        return doc.reject(f"invalid record: format {fmt!r}; use text, markdown or html")
    merged["format"] = fmt
    if "id" in record:
        merged["source_id"] = str(record["id"])
    return doc.evolve(text=body, meta=merged)
