"""Find input files and turn each file (or JSON Lines line) into exactly one raw Document.

Anything unusable becomes a `rejected` Document with a reason: the reader never raises on
content and never drops an input silently, so counts always add up.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import re
import stat
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from textmill.tasks.atomic import sha256_file
from textmill.tasks.document import Document
from textmill.tasks.encoding import Decoded, decode
from textmill.tasks.filehashes import FileHashes

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
READER_VERSION = "4"
# A folder holding this is a textmill output folder (its cache), never read as input.
OUTPUT_MARKER = ".textmill"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """An input file: its id is the path relative to the corpus root, stable across machines.

    `error`, when set, is the complete rejection reason: the file is not read.
    """

    id: str
    sha256: str
    size: int
    error: str | None = None


@dataclass
class DiscoveryReport:
    """What discovery passed over on purpose, so that nothing leaves the corpus unaccounted for.

    `output_folders`: folders inside the corpus that hold `.textmill/` (textmill output folders,
    never read back as input). `aliases`: links inside the corpus to a file or folder that is
    read under its own path, so they add no second document. `hashed`: files read to hash them
    (new, changed or racily clean); `unchanged`: files whose hash was reused from the last scan.
    """

    output_folders: list[str] = field(default_factory=list)
    aliases: int = 0
    hashed: int = 0
    unchanged: int = 0


def is_output_folder(path: Path, excluded: Path | None = None) -> bool:
    """A textmill output folder: it holds `.textmill/` (or is the run's own output folder)."""
    return (path / OUTPUT_MARKER).is_dir() or (excluded is not None and path.resolve() == excluded)


def discover(
    root: Path, exclude: Path | None = None, report: DiscoveryReport | None = None, hashes: FileHashes | None = None
) -> Iterator[SourceFile]:
    """Yield every input under `root` in a stable order (a folder's files, then its folders), hashed.

    With `hashes`, a file whose stat is unchanged since it was last hashed is not read again.

    Hidden folders (`.git`, ...) are not descended into. Output folders (`exclude`, and any
    folder holding `.textmill/`) are skipped and listed in `report`. Every other entry is
    yielded, whatever its type, so that unsupported files are reported rather than ignored.
    Links are resolved: one that leaves the corpus, is broken or points into an output folder
    is yielded with an error (a rejection); one to a file or folder the walk reads under its
    own path is an alias, counted in `report` and not read twice; one into a hidden folder is
    followed, each real folder entered once, so link loops end.
    """
    root = root.resolve()
    excluded = exclude.resolve() if exclude is not None else None
    report = report if report is not None else DiscoveryReport()
    entered = {inode(root)}
    followed_files: set[tuple[int, int]] = set()
    stack: list[tuple[str, bool]] = [("", False)]
    while stack:
        prefix, via_link = stack.pop()
        folder = root / prefix if prefix else root
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            yield SourceFile(prefix, "", 0, f"unreadable folder: {exc.strerror or exc}")
            continue
        folders: list[tuple[str, bool]] = []
        for entry in entries:
            source_id = f"{prefix}/{entry.name}" if prefix else entry.name
            if entry.is_symlink():
                path = folder / entry.name
                found = follow_link(root, source_id, path, excluded, report, entered, followed_files, hashes)
                if isinstance(found, SourceFile):
                    yield found
                elif found:
                    folders.append((source_id, True))
            elif entry.is_dir(follow_symlinks=False):
                if entry.name.startswith("."):
                    continue
                path = folder / entry.name
                if is_output_folder(path, excluded):
                    report.output_folders.append(source_id)
                    continue
                key = inode(path)
                if key not in entered:
                    entered.add(key)
                    folders.append((source_id, via_link))
            else:
                if via_link:
                    key = inode(folder / entry.name)
                    if key in followed_files:
                        report.aliases += 1
                        continue
                    followed_files.add(key)
                yield hashed_source(source_id, entry.path, hashes)
        stack.extend(reversed(folders))


def follow_link(
    root: Path,
    source_id: str,
    path: Path,
    excluded: Path | None,
    report: DiscoveryReport,
    entered: set[tuple[int, int]],
    followed_files: set[tuple[int, int]],
    hashes: FileHashes | None = None,
) -> SourceFile | bool:
    """Decide about one link: a rejected SourceFile, True to descend into it, False to pass it over."""
    try:
        target = path.resolve(strict=True)
    except RuntimeError:
        return SourceFile(source_id, "", 0, "broken link: a loop of links")
    except OSError as exc:
        problem = "a loop of links" if exc.errno == errno.ELOOP else "its target does not exist"
        return SourceFile(source_id, "", 0, f"broken link: {problem}")
    if not target.is_relative_to(root):
        return SourceFile(source_id, "", 0, "unsafe link: points outside the corpus")
    inside = target.relative_to(root)
    for ancestor in (target, *target.parents):
        if ancestor == root:
            break
        if ancestor.name == OUTPUT_MARKER or is_output_folder(ancestor, excluded):
            folder = ancestor.parent if ancestor.name == OUTPUT_MARKER else ancestor
            where = folder.relative_to(root).as_posix()
            return SourceFile(source_id, "", 0, f"unsafe link: points into a textmill output folder ({where})")
    folder_parts = inside.parts if target.is_dir() else inside.parts[:-1]
    key = inode(target)
    if not any(part.startswith(".") for part in folder_parts) or key in entered or key in followed_files:
        report.aliases += 1
        return False
    if target.is_dir():
        entered.add(key)
        return True
    followed_files.add(key)
    return source_file(root, path, hashes)


def inode(path: Path) -> tuple[int, int]:
    """The identity of a file or folder, whatever path reaches it."""
    st = path.stat()
    return st.st_dev, st.st_ino


def source_file(root: Path, path: Path, hashes: FileHashes | None = None) -> SourceFile:
    """Hash the file at `path` under `root` (see `hashed_source`)."""
    return hashed_source(path.relative_to(root).as_posix(), str(path), hashes)


def hashed_source(source_id: str, path: str, hashes: FileHashes | None = None) -> SourceFile:
    """Hash one file (or take its hash from `hashes`); a file that cannot be read still yields a
    SourceFile, carrying the reason. Plain strings, not Paths: this runs once per input file."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return SourceFile(source_id, "", 0, "unreadable file: not a regular file (socket, pipe or device)")
        sha = hashes.sha256(source_id, path, st) if hashes is not None else sha256_file(path)
        return SourceFile(source_id, sha, st.st_size)
    except OSError as exc:
        return SourceFile(source_id, "", 0, f"unreadable file: {exc.strerror or exc}")


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
        return [base.reject(src.error)]
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
