"""Bad input through the whole flow: every file is a record, counts add up, nothing crashes."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import SEEDS
from flowkit import records, run_flow

pytestmark = pytest.mark.slow


def test_bad_inputs_are_rejected_with_reasons_and_counted(prefect_server: None, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(SEEDS, corpus)
    bad = corpus / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 64)
    (bad / "invalid-utf8.txt").write_bytes(b"caf\xc3 \xff\xfe\x80 ol\xe9" * 3 + bytes(range(0x80, 0xA0)) * 8)
    with (bad / "huge.txt").open("wb") as fh:
        fh.write(b"All work and no play makes Jack a dull boy. " * (20 * 1024 * 1024 // 44 + 1))
    (bad / "deep.html").write_text("<div>" * 10_000 + "Deep inside the nesting lives one sentence." + "</div>" * 10_000)
    (bad / "notes.docx").write_bytes(b"PK\x03\x04 not a supported type")
    (bad / "lines.jsonl").write_text('{"text": "A short line of text about the weather in Oslo today."}\n{broken\n')

    manifest = run_flow(corpus, tmp_path / "out")
    recs = records(tmp_path / "out")

    assert manifest["files"] == 12
    assert manifest["documents"] == len(recs) == 13
    assert manifest["counts"] == {"duplicate": 2, "ok": 5, "rejected": 6}
    assert manifest["rejected"] == {
        "binary content": 1, "empty file": 1, "file too large": 1, "invalid JSON": 1, "undecodable text": 1,
        "unsupported file type": 1,
    }
    rejected = {doc_id: r["reason"] for doc_id, r in recs.items() if r["status"] == "rejected"}
    assert rejected["bad/empty.txt"] == "empty file"
    assert rejected["bad/binary.txt"].startswith("binary content")
    assert rejected["bad/invalid-utf8.txt"].startswith("undecodable text: ")
    assert rejected["bad/huge.txt"].startswith("file too large")
    assert rejected["bad/notes.docx"].startswith("unsupported file type: notes.docx")
    assert rejected["bad/lines.jsonl#2"].startswith("invalid JSON")
    assert recs["bad/lines.jsonl#1"]["status"] == "ok"
    deep = recs["bad/deep.html"]
    assert (deep["status"], deep["text"]) == ("ok", "Deep inside the nesting lives one sentence.")
    for r in recs.values():
        if r["status"] == "rejected":
            assert r["cluster"] is None and r["entities"] == [] and r["reason"]
    assert sum(manifest["rejected"].values()) == manifest["counts"]["rejected"]
