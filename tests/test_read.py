"""The reader: every file or JSON Lines line becomes exactly one record, bad input a rejection."""
from __future__ import annotations

import json
from pathlib import Path

from textmill.tasks.read import DiscoveryReport, discover, read_source


def read_all(root: Path, max_bytes: int = 10_000_000) -> dict[str, object]:
    docs = {}
    for src in discover(root):
        for doc in read_source(root, src, max_bytes):
            docs[doc.id] = doc
    return docs


def test_discover_is_recursive_sorted_and_skips_hidden_folders(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("zed")
    (tmp_path / "a.md").write_text("# a")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("x")
    (tmp_path / ".hidden.txt").write_text("hidden files are still inputs")
    ids = [s.id for s in discover(tmp_path)]
    assert ids == [".hidden.txt", "a.md", "b/z.txt"]


def test_discover_excludes_output_folder_inside_corpus(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("text")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "documents.jsonl").write_text("{}")
    assert [s.id for s in discover(tmp_path, exclude=tmp_path / "out")] == ["doc.txt"]


def test_bad_inputs_become_rejections_with_reasons(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_bytes(b"  \n\t\n")
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "big.txt").write_bytes(b"a" * 2048)
    docs = read_all(tmp_path, max_bytes=1024)
    reasons = {doc_id: doc.reason for doc_id, doc in docs.items()}
    assert all(doc.status == "rejected" for doc in docs.values())
    assert reasons["empty.txt"] == "empty file"
    assert reasons["blank.txt"] == "empty file"
    assert reasons["binary.txt"] == "binary content: NUL bytes, not text"
    assert reasons["report.pdf"].startswith("unsupported file type: report.pdf")
    assert reasons["big.txt"] == "file too large: 2048 bytes exceeds max_bytes=1024"


def test_latin1_is_detected_and_garbage_rejected(tmp_path: Path) -> None:
    latin = "Le café de la gare était fermé à cause de la grève, déclara François."
    (tmp_path / "latin1.txt").write_bytes(((latin + "\n") * 3).encode("latin-1"))
    (tmp_path / "garbage.txt").write_bytes(bytes(range(0x80, 0x100)) * 4 + b"\x01\x02\x03\x04" * 64)
    docs = read_all(tmp_path)
    assert docs["latin1.txt"].status == "ok"
    assert docs["latin1.txt"].text == (latin + "\n") * 3
    assert docs["latin1.txt"].meta["encoding"] == "cp1252"
    assert docs["garbage.txt"].status == "rejected"
    assert docs["garbage.txt"].reason.startswith("undecodable text: ")


def test_jsonl_one_record_per_line_bad_lines_rejected(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "a-1", "text": "First document.", "meta": {"url": "http://x"}}),
        "{not json",
        json.dumps({"text": ""}),
        "",
        json.dumps(["a", "list"]),
        json.dumps({"text": "<p>Some <b>html</b></p>", "format": "html"}),
    ]
    (tmp_path / "batch.jsonl").write_text("\n".join(lines) + "\n")
    docs = read_all(tmp_path)
    assert sorted(docs) == [f"batch.jsonl#{n}" for n in range(1, 7)]
    first = docs["batch.jsonl#1"]
    assert first.status == "ok" and first.text == "First document."
    assert first.meta == {"url": "http://x", "format": "text", "line": 1, "source_id": "a-1"}
    assert docs["batch.jsonl#2"].reason.startswith("invalid JSON")
    assert docs["batch.jsonl#3"].reason.startswith("invalid record: missing or empty 'text'")
    assert docs["batch.jsonl#4"].reason == "empty line"
    assert docs["batch.jsonl#5"].reason == "invalid record: a line must be a JSON object"
    assert docs["batch.jsonl#6"].meta["format"] == "html"
    assert len({d.sha256 for d in docs.values()}) == 6


def test_utf8_bom_and_formats(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes("\ufeffHello world".encode("utf-8"))
    (tmp_path / "page.HTM").write_text("<html><body><p>x</p></body></html>")
    docs = read_all(tmp_path)
    assert docs["bom.txt"].text == "Hello world"
    assert docs["page.HTM"].meta["format"] == "html"


def test_gzip_inputs_are_read_and_bounded(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "page.html.gz").write_bytes(gzip.compress(b"<html><body><p>Compressed page.</p></body></html>"))
    (tmp_path / "lines.jsonl.gz").write_bytes(gzip.compress(b'{"text": "one"}\n{"text": "two"}\n'))
    (tmp_path / "bomb.txt.gz").write_bytes(gzip.compress(b"a" * 5000))
    (tmp_path / "broken.txt.gz").write_bytes(gzip.compress(b"hello world")[:-6])
    (tmp_path / "data.tar.gz").write_bytes(gzip.compress(b"x"))
    docs = read_all(tmp_path, max_bytes=1024)
    assert docs["page.html.gz"].meta["format"] == "html"
    assert "Compressed page." in docs["page.html.gz"].text
    assert [docs[f"lines.jsonl.gz#{n}"].text for n in (1, 2)] == ["one", "two"]
    assert docs["bomb.txt.gz"].reason == "file too large: more than max_bytes=1024 bytes after decompression"
    assert docs["broken.txt.gz"].status == "rejected" and docs["broken.txt.gz"].reason.startswith("unreadable file")
    assert docs["data.tar.gz"].reason.startswith("unsupported file type: data.tar.gz")


def test_hostile_json_lines_are_rejected_not_raised(tmp_path: Path) -> None:
    lines = [
        "[" * 100_000 + "]" * 100_000,
        '{"text": "big", "n": ' + "9" * 5000 + "}",
        '{"text": "lone surrogate \\ud800 here"}',
    ]
    (tmp_path / "hostile.jsonl").write_text("\n".join(lines) + "\n")
    docs = read_all(tmp_path)
    assert [docs[f"hostile.jsonl#{n}"].status for n in (1, 2, 3)] == ["rejected"] * 3
    assert docs["hostile.jsonl#1"].reason.startswith("invalid JSON")
    assert docs["hostile.jsonl#2"].reason.startswith("invalid JSON")
    assert docs["hostile.jsonl#3"].reason.startswith("invalid record: not representable")


def test_special_and_unreadable_files_are_rejected_not_dropped(tmp_path: Path) -> None:
    import os

    (tmp_path / "gone.txt").symlink_to(tmp_path / "missing-target.txt")
    os.mkfifo(tmp_path / "pipe.txt")
    docs = read_all(tmp_path)
    assert docs["gone.txt"].status == "rejected"
    assert docs["gone.txt"].reason == "broken link: its target does not exist"
    assert docs["pipe.txt"].reason.startswith("unreadable file: not a regular file")


def test_folders_holding_textmill_state_are_skipped_and_reported(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "old-out" / ".textmill").mkdir(parents=True)
    (corpus / "old-out" / "documents.jsonl").write_text('{"text": "published before"}\n')
    (corpus / "news" / "run" / ".textmill").mkdir(parents=True)
    (corpus / "news" / "run" / "manifest.json").write_text("{}")
    (corpus / "news" / "a.txt").write_text("an input")
    (corpus / "b.txt").write_text("another input")
    report = DiscoveryReport()
    assert [s.id for s in discover(corpus, report=report)] == ["b.txt", "news/a.txt"]
    assert report.output_folders == ["old-out", "news/run"]  # in walk order: a folder's entries, then its folders
    assert report.aliases == 0


def test_links_inside_the_corpus_are_read_once_and_outside_links_rejected(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "secret.txt").write_text("not part of the corpus")
    (outside / "folder" / "x.txt").write_text("nor this")
    (corpus / "2024").mkdir(parents=True)
    (corpus / "2024" / "a.txt").write_text("article a")
    (corpus / "2024" / "b.txt").write_text("article b")
    (corpus / ".archive").mkdir()
    (corpus / ".archive" / "old.txt").write_text("an archived article")
    (corpus / "latest").symlink_to(corpus / "2024")                      # folder link inside: an alias
    (corpus / "a-again.txt").symlink_to(corpus / "2024" / "a.txt")       # file link inside: an alias
    (corpus / "archive").symlink_to(corpus / ".archive")                 # into a hidden folder: followed
    (corpus / "archive-twice").symlink_to(corpus / ".archive")           # the same folder again: an alias
    (corpus / "2024" / "loop").symlink_to(corpus)                        # a loop back to the root
    (corpus / ".archive" / "loop").symlink_to(corpus / ".archive")       # a loop inside the followed folder
    (corpus / "leak.txt").symlink_to(outside / "secret.txt")
    (corpus / "leak-folder").symlink_to(outside / "folder")
    (corpus / "gone.txt").symlink_to(corpus / "missing.txt")
    (corpus / "cycle-a").symlink_to(corpus / "cycle-b")
    (corpus / "cycle-b").symlink_to(corpus / "cycle-a")
    report = DiscoveryReport()
    sources = list(discover(corpus, report=report))
    assert [s.id for s in sources] == [
        "cycle-a", "cycle-b", "gone.txt", "leak-folder", "leak.txt", "2024/a.txt", "2024/b.txt", "archive/old.txt",
    ]
    errors = {s.id: s.error for s in sources if s.error}
    assert errors == {
        "cycle-a": "broken link: a loop of links",
        "cycle-b": "broken link: a loop of links",
        "gone.txt": "broken link: its target does not exist",
        "leak-folder": "unsafe link: points outside the corpus",
        "leak.txt": "unsafe link: points outside the corpus",
    }
    assert report.aliases == 5  # latest, a-again.txt, archive-twice, 2024/loop, archive/loop
    docs = read_all(corpus)
    assert len(docs) == len(sources) == 8
    assert {d.id: d.text for d in docs.values() if d.status == "ok"} == {
        "2024/a.txt": "article a", "2024/b.txt": "article b", "archive/old.txt": "an archived article",
    }
    assert {d.id: d.reason for d in docs.values() if d.status == "rejected"} == errors


def test_links_into_an_output_folder_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "out" / ".textmill" / "store").mkdir(parents=True)
    (tmp_path / "out" / "documents.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "published.jsonl").symlink_to(tmp_path / "out" / "documents.jsonl")
    (tmp_path / "cache").symlink_to(tmp_path / "out" / ".textmill" / "store")
    report = DiscoveryReport()
    errors = {s.id: s.error for s in discover(tmp_path, report=report)}
    assert errors == {
        "cache": "unsafe link: points into a textmill output folder (out)",
        "published.jsonl": "unsafe link: points into a textmill output folder (out)",
    }
    assert report.output_folders == ["out"]
