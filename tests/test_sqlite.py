"""The embedded stores: a searchable `textmill.sqlite` and Parquet files other tools can read."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import REPO, SeedsRun
from textmill.tasks.base import RunInfo
from textmill.tasks.document import Document, Entity
from textmill.tasks.publish import Publisher, PublishOptions
from textmill.tasks.search import HIGHLIGHT, Query, SearchError, parse_query, search


def query(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def publish_sqlite(out: Path, docs: list[Document], run_id: str = "r1") -> None:
    Publisher(PublishOptions(formats=["sqlite"])).publish(iter(docs), out, RunInfo(run_id=run_id))


def doc(doc_id: str, text: str, lang: str = "en", entities: tuple[Entity, ...] = (), status: str = "ok") -> Document:
    return Document(id=doc_id, path=doc_id, sha256="0" * 64, text=text, lang=lang, entities=entities, status=status)  # type: ignore[arg-type]


@pytest.mark.slow
def test_schema_has_the_documented_tables_and_indexes(seeds_run: SeedsRun) -> None:
    db = seeds_run.out / "textmill.sqlite"
    names = {name for (name,) in query(db, "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    assert {"documents", "entities", "clusters", "runs", "documents_fts"} <= names
    assert {"documents_lang", "documents_cluster", "entities_canonical", "entities_doc"} <= names
    schema_doc = (REPO / "docs" / "schema.md").read_text()
    for table in ("documents", "entities", "clusters", "runs", "documents_fts", "schema_migrations"):
        assert f"`{table}`" in schema_doc


@pytest.mark.slow
def test_clusters_and_runs_describe_the_corpus(seeds_run: SeedsRun) -> None:
    out, manifest = seeds_run.out, seeds_run.first
    db = out / "textmill.sqlite"
    canonical = "001_08a746c966a0006a.txt"
    assert query(db, "SELECT id, canonical, size FROM clusters") == [(canonical, canonical, 3)]
    assert query(db, "SELECT run_id, documents, ok, duplicate, rejected FROM runs") == [(manifest["run_id"], 5, 3, 2, 0)]
    members = query(db, f"SELECT id FROM documents WHERE cluster = '{canonical}' ORDER BY id")
    assert [m for (m,) in members] == ["000_06b6d598dca07507.txt", canonical, "004_ebd5aec1b4ae2022.txt"]


@pytest.mark.slow
def test_search_ranks_ok_documents_with_snippets(seeds_run: SeedsRun) -> None:
    db = seeds_run.out / "textmill.sqlite"
    hits = search(db, "Putin")
    assert sorted(h.id for h in hits) == ["001_08a746c966a0006a.txt", "002_8a38857d99c895f8.txt", "003_a0b4809ae95599bf.txt"]
    assert all(f"{HIGHLIGHT[0]}Putin{HIGHLIGHT[1]}" in h.snippet for h in hits)
    assert [h.score for h in hits] == sorted(h.score for h in hits)
    assert len(search(db, "Putin", include_duplicates=True)) == 5
    assert search(db, "Putin", lang="de") == []
    assert len(search(db, "Putin", limit=2)) == 2
    ok_ids = ["001_08a746c966a0006a.txt", "002_8a38857d99c895f8.txt", "003_a0b4809ae95599bf.txt"]
    named = search(db, "drones", entity="Vladimir Putin")
    assert sorted(h.id for h in named) == ok_ids
    assert all(
        query(db, f"SELECT 1 FROM entities WHERE doc_id = '{h.id}' AND canonical = 'Vladimir Putin'") for h in named
    )
    assert search(db, "drones", entity="Nobody Atall") == []
    # not valid FTS5 (unbalanced quote): searched as plain words
    assert sorted(h.id for h in search(db, 'Kremlin "drones')) == ok_ids


def test_search_ranks_by_relevance_and_filters(tmp_path: Path) -> None:
    putin = Entity("Vladimir Putin", "PERSON", 0, 14, "Vladimir Putin")
    publish_sqlite(
        tmp_path,
        [
            doc("a", "A zeppelin flew. Zeppelin zeppelin zeppelin over the zeppelin field."),
            doc("b", "Once a zeppelin passed by the old mill near the river and the wide green fields."),
            doc("c", "Nothing to see here at all."),
            doc("d", "Ein Zeppelin über dem Feld.", lang="de", entities=(putin,)),
            doc("e", "zeppelin zeppelin zeppelin zeppelin zeppelin", status="duplicate"),
        ],
    )
    db = tmp_path / "textmill.sqlite"
    hits = search(db, "zeppelin")
    assert {h.id for h in hits} == {"a", "b", "d"}, "duplicates are left out"
    assert hits[0].id == "a", "the document that is mostly about the term ranks first"
    assert hits[-1].id == "b", "one mention in a longer text ranks last"
    assert [h.id for h in search(db, "zeppelin", lang="de")] == ["d"]
    assert [h.id for h in search(db, "zeppelin", entity="Vladimir Putin")] == ["d"]
    assert [h.id for h in search(db, "uber")] == ["d"], "diacritics are folded"
    assert [h.id for h in search(db, '"green fields"')] == ["b"]
    assert [h.id for h in search(db, "zepp*", lang="en", limit=1)] == ["a"]


def test_search_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="not found: publish with the sqlite format"):
        search(tmp_path / "textmill.sqlite", "anything")
    publish_sqlite(tmp_path, [doc("a", "some text")])
    with pytest.raises(SearchError, match="no words"):
        search(tmp_path / "textmill.sqlite", '"" ***')
    (tmp_path / "bad.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(SearchError, match="not a searchable textmill database"):
        search(tmp_path / "bad.sqlite", "text")


def test_queries_keep_their_meaning_or_say_how_they_were_read() -> None:
    assert parse_query('"interest rates" OR zepp*') == Query('"interest rates" OR zepp*')
    assert parse_query('"interest rates" AND NOT bank') == Query(
        '"interest rates" NOT bank',
        "`AND NOT` read as FTS5's `NOT` (all of the left side, none of the right): \"interest rates\" NOT bank",
    )
    assert parse_query('Kremlin "drones') == Query(
        '"Kremlin" "drones"',
        'not valid FTS5 (unterminated string); searched for documents containing all of: "Kremlin" "drones"',
    )
    for inverted in ("NOT bank", "rates -bank", "rates AND"):
        with pytest.raises(SearchError, match=r"not a valid FTS5 query .*binary: `a NOT b`"):
            parse_query(inverted)


def test_and_not_excludes_and_relevance_is_a_percentage_of_the_best(tmp_path: Path) -> None:
    publish_sqlite(
        tmp_path,
        [
            doc("a", "Interest rates rose again, the central bank said. Interest rates interest rates."),
            doc("b", "Interest rates fell in the spring and savers noticed the change in interest rates."),
            doc("c", "A long report on interest rates, inflation, wages, housing, exports and the budget of the year."),
        ],
    )
    db = tmp_path / "textmill.sqlite"
    assert [h.id for h in search(db, '"interest rates" AND NOT bank')] == ["b", "c"]
    hits = search(db, '"interest rates"')
    assert [h.id for h in hits] == ["a", "b", "c"]
    assert [h.relevance for h in hits] == [round(100 * h.score / hits[0].score) for h in hits]
    assert hits[0].relevance == 100 and 0 < hits[-1].relevance < hits[0].relevance

    cli = [sys.executable, "-m", "textmill.flows.cli", "search", str(tmp_path)]
    found = subprocess.run([*cli, '"interest rates" AND NOT bank'], capture_output=True, text=True, cwd=REPO)
    assert found.returncode == 0, found.stderr
    assert found.stderr == (
        "note: `AND NOT` read as FTS5's `NOT` (all of the left side, none of the right): \"interest rates\" NOT bank\n"
    )
    ranks = [line for line in found.stdout.splitlines() if line[:1].isdigit()]
    second = search(db, parse_query('"interest rates" AND NOT bank'))[1].relevance
    assert ranks == ["1. b  en · relevance 100", f"2. c  en · relevance {second}"]
    refused = subprocess.run([*cli, "NOT bank"], capture_output=True, text=True, cwd=REPO)
    assert refused.returncode == 2 and "not a valid FTS5 query" in refused.stderr and refused.stdout == ""


def test_runs_table_grows_only_when_the_content_changes(tmp_path: Path) -> None:
    docs = [doc("a", "first text"), doc("b", "second text")]
    publish_sqlite(tmp_path, docs, run_id="r1")
    db = tmp_path / "textmill.sqlite"
    before = db.read_bytes()
    publish_sqlite(tmp_path, docs, run_id="r2")
    assert db.read_bytes() == before, "the same records again leave the file byte-identical"
    publish_sqlite(tmp_path, [*docs, doc("c", "third text")], run_id="r3")
    assert query(db, "SELECT run_id, documents FROM runs ORDER BY rowid") == [("r1", 2), ("r3", 3)]


@pytest.mark.slow
def test_cli_search_prints_ranked_hits(seeds_run: SeedsRun) -> None:
    out = seeds_run.out
    cli = [sys.executable, "-m", "textmill.flows.cli", "search"]
    found = subprocess.run([*cli, str(out), "Kremlin drones", "--limit", "2"], capture_output=True, text=True, cwd=REPO)
    assert found.returncode == 0, found.stderr
    assert "1. 00" in found.stdout and "2. 00" in found.stdout and "3. " not in found.stdout
    assert "Kremlin" in found.stdout
    none = subprocess.run([*cli, str(out), "zeppelin"], capture_output=True, text=True, cwd=REPO)
    assert (none.returncode, none.stdout.strip()) == (1, "no documents match")
    missing = subprocess.run([*cli, str(out / "nope"), "Kremlin"], capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2 and "not found" in missing.stderr


@pytest.mark.slow
def test_parquet_reads_back_in_pyarrow_pandas_and_duckdb(seeds_run: SeedsRun) -> None:
    out = seeds_run.out
    docs_path, entities_path = out / "documents", out / "entities"
    table = pq.read_table(docs_path)
    frame = pd.read_parquet(docs_path)
    assert table.num_rows == len(frame) == 5
    assert sorted(frame["status"]) == ["duplicate", "duplicate", "ok", "ok", "ok"]
    entities = pd.read_parquet(entities_path)
    per_doc = entities.groupby("doc_id").size().to_dict()
    assert per_doc == {r["id"]: r["entity_count"] for _, r in frame.iterrows() if r["entity_count"]}
    counted = duckdb.sql(
        f"SELECT d.lang, count(*) FROM '{docs_path}/*.parquet' d JOIN '{entities_path}/*.parquet' e ON e.doc_id = d.id"
        " WHERE d.status = 'ok' GROUP BY d.lang"
    ).fetchall()
    assert counted == [("en", int(frame.loc[frame["status"] == "ok", "entity_count"].sum()))]
