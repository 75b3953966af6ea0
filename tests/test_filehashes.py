"""Discovery reads only files whose stat changed: unchanged ones keep their remembered hash."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from textmill.tasks import filehashes
from textmill.tasks.filehashes import FileHashes
from textmill.tasks.read import SourceFile, discover

HOUR_NS = 3600 * 1_000_000_000


def scan(corpus: Path, cache: Path) -> tuple[dict[str, SourceFile], FileHashes]:
    """One discovery with the cache at `cache`, saved afterwards as the flow does."""
    hashes = FileHashes.load(cache, corpus)
    sources = {s.id: s for s in discover(corpus, hashes=hashes)}
    hashes.save(cache)
    return sources, hashes


def write_old(path: Path, data: bytes, age_hours: int = 1) -> None:
    """Write `data` with a modification time well before any scan (not racily clean)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = path.stat().st_mtime_ns - age_hours * HOUR_NS
    os.utime(path, ns=(then, then))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    for name in ("a.txt", "b/c.md", "b/d.html"):
        write_old(root / name, f"contents of {name}\n".encode())
    return root


def refuse_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fault: any attempt to read a file's bytes for its hash fails the test."""

    def refuse(path: Path) -> str:
        raise AssertionError(f"read {path} although its stat is unchanged")

    monkeypatch.setattr(filehashes, "sha256_file", refuse)


def test_a_warm_scan_reads_no_unchanged_file(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "state" / "file-hashes.json"
    cold, first = scan(corpus, cache)
    assert (first.hashed, first.reused) == (3, 0)
    refuse_reads(monkeypatch)
    warm, second = scan(corpus, cache)
    assert warm == cold
    assert (second.hashed, second.reused) == (0, 3)
    assert cold["b/c.md"].sha256 == sha(b"contents of b/c.md\n")


def test_the_cache_file_is_rewritten_only_when_a_scan_changed_it(corpus: Path, tmp_path: Path) -> None:
    cache = tmp_path / "file-hashes.json"
    scan(corpus, cache)
    written = cache.stat().st_ino, cache.stat().st_mtime_ns
    scan(corpus, cache)
    assert (cache.stat().st_ino, cache.stat().st_mtime_ns) == written, "a warm scan leaves the file as it was"
    (corpus / "a.txt").unlink()
    _, third = scan(corpus, cache)
    assert set(json.loads(cache.read_bytes())["files"]) == {"b/c.md", "b/d.html"}, "a deletion is saved"
    write_old(corpus / "e.txt", b"a new file\n")
    scan(corpus, cache)
    assert set(json.loads(cache.read_bytes())["files"]) == {"b/c.md", "b/d.html", "e.txt"}, "a new file is saved"


def test_an_edit_keeping_the_size_is_found_by_its_mtime(corpus: Path, tmp_path: Path) -> None:
    cache = tmp_path / "file-hashes.json"
    scan(corpus, cache)
    target = corpus / "b" / "c.md"
    before = target.stat()
    write_old(target, b"CONTENTS OF B/C.MD\n", age_hours=2)
    assert target.stat().st_size == before.st_size and target.stat().st_ino == before.st_ino
    sources, hashes = scan(corpus, cache)
    assert sources["b/c.md"].sha256 == sha(b"CONTENTS OF B/C.MD\n")
    assert (hashes.hashed, hashes.reused, hashes.changed) == (1, 2, 1)


def test_a_racily_clean_file_is_hashed_again(tmp_path: Path) -> None:
    """Written just before the scan, then rewritten with the same size and the same mtime (as a
    second write within one timestamp tick leaves it): the stat is identical, yet the next scan
    must see the new bytes, because the entry was recorded too close to the file's last write."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    target = corpus / "fresh.txt"
    target.write_bytes(b"first version\n")
    cache = tmp_path / "file-hashes.json"
    first, _ = scan(corpus, cache)
    st = target.stat()
    with target.open("r+b") as fh:
        fh.write(b"FIRST")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns, target.stat().st_ino) == (
        st.st_size, st.st_mtime_ns, st.st_ino,
    )
    second, hashes = scan(corpus, cache)
    assert first["fresh.txt"].sha256 == sha(b"first version\n")
    assert second["fresh.txt"].sha256 == sha(b"FIRST version\n")
    assert (hashes.hashed, hashes.changed) == (1, 1)


def test_a_racily_clean_file_read_again_with_the_same_bytes_is_no_change(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "fresh.txt").write_bytes(b"just written\n")
    cache = tmp_path / "file-hashes.json"
    _, first = scan(corpus, cache)
    _, second = scan(corpus, cache)
    assert (first.hashed, first.changed) == (1, 1)
    assert (second.hashed, second.changed) == (1, 0), "read again (racy), but not changed"


def test_an_entry_recorded_long_after_the_write_is_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Racy entries are hashed once more, by a scan that starts long enough after the write;
    from then on they are trusted."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "fresh.txt").write_bytes(b"just written\n")
    cache = tmp_path / "file-hashes.json"
    scan(corpus, cache)
    data = json.loads(cache.read_text())
    data["scan_started_ns"] += filehashes.RACY_WINDOW_NS + 1_000_000_000  # as if scanned 3 s later
    cache.write_text(json.dumps(data))
    refuse_reads(monkeypatch)
    _, hashes = scan(corpus, cache)
    assert (hashes.hashed, hashes.reused) == (0, 1)


def test_deleted_files_leave_the_cache_and_a_file_replaced_by_a_link_is_hashed(corpus: Path, tmp_path: Path) -> None:
    cache = tmp_path / "file-hashes.json"
    scan(corpus, cache)
    (corpus / "a.txt").unlink()
    hidden = corpus / ".archive" / "c.md"
    write_old(hidden, b"contents of b/c.md\n".upper())
    old = corpus / "b" / "c.md"
    old.unlink()
    old.symlink_to(hidden)  # read under b/c.md, through the link into a hidden folder
    sources, hashes = scan(corpus, cache)
    assert sorted(sources) == ["b/c.md", "b/d.html"]
    assert sources["b/c.md"].sha256 == sha(b"CONTENTS OF B/C.MD\n")
    assert (hashes.hashed, hashes.reused) == (1, 1)
    assert sorted(json.loads(cache.read_text())["files"]) == ["b/c.md", "b/d.html"]


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"{not json",
        b"\x00\xff\xfe binary",
        b"[]",
        b"[" * 100_000,
        b'{"format": 1, "root": "ROOT", "scan_started_ns": 0, "files": {"a.txt": [1, 2]}}',
        b'{"format": 1, "root": "ROOT", "scan_started_ns": "soon", "files": {}}',
        b'{"format": 1, "root": "ROOT", "scan_started_ns": 0, "files": {"a.txt": [1, 2, 3, 4, "short"]}}',
        b'{"format": 99, "root": "ROOT", "scan_started_ns": 0, "files": {}}',
        b'{"format": 1, "root": "/elsewhere", "scan_started_ns": 0, "files": {}}',
    ],
)
def test_a_damaged_or_foreign_cache_is_rebuilt(corpus: Path, tmp_path: Path, damage: bytes) -> None:
    cache = tmp_path / "file-hashes.json"
    cache.write_bytes(damage.replace(b"ROOT", str(corpus.resolve()).encode()))
    sources, hashes = scan(corpus, cache)
    assert (hashes.hashed, len(sources)) == (3, 3)
    assert sources["a.txt"].sha256 == sha(b"contents of a.txt\n")
    assert sorted(json.loads(cache.read_text())["files"]) == ["a.txt", "b/c.md", "b/d.html"]


def test_a_missing_cache_hashes_everything(corpus: Path, tmp_path: Path) -> None:
    _, hashes = scan(corpus, tmp_path / "never-written" / "file-hashes.json")
    assert (hashes.hashed, hashes.reused) == (3, 0)


def test_a_scan_ahead_tells_whether_files_are_new_changed_or_gone(tmp_path: Path) -> None:
    """The CLI starts its fork server only when the run will read or drop documents."""
    from textmill.flows.scan import scan_ahead, scan_found_changes, take_scan
    from textmill.flows.shard import Paths

    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    (out / ".textmill").mkdir(parents=True)
    (corpus / "a.txt").write_bytes(b"alpha\n")
    (corpus / "b.txt").write_bytes(b"beta\n")
    cache = Paths(corpus=str(corpus.resolve()), out=str(out.resolve())).file_hashes

    def found() -> bool:
        scan_ahead(corpus, out)
        changed = scan_found_changes(corpus, out)
        scanned = take_scan(str(corpus), str(out))
        assert scanned is not None
        scanned.hashes.save(cache)
        return changed

    scan_ahead(corpus, out)
    assert not scan_found_changes(corpus, out, more_files_than=2), "two files: one shard, no workers"
    assert take_scan(str(corpus), str(out)) is not None
    assert found(), "nothing remembered: every file is new"
    assert not found(), "the same files (read again while racily clean)"
    (corpus / "c.txt").write_bytes(b"gamma\n")
    assert found()
    (corpus / "a.txt").unlink()
    assert found()
    assert not found()
    (corpus / "b.txt").write_bytes(b"BETA\n")
    assert found()
