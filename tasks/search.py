"""Full-text search over a published `textmill.sqlite`: ranked hits with snippets.

The query uses SQLite FTS5 syntax ("exact phrase", AND, OR, NOT, prefix*). `a AND NOT b` is read
as FTS5's binary `a NOT b`. Other text that is not valid FTS5 (a stray quote, `U.S.`) is searched
as plain words, all of which must occur, and `parse_query` says so; a query whose operators
cannot be kept is refused rather than searched with another meaning.
"""
from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

HIGHLIGHT = ("\x02", "\x03")  # snippet markers, replaced by the caller's highlighting
WORD = re.compile(r"\w+", re.UNICODE)
AND_NOT = re.compile(r"\bAND\s+NOT\b")
# Words FTS5 reads as operators, and `-word` (a column filter to FTS5, "without" to a web user).
OPERATOR = re.compile(r"\b(?:AND|OR|NOT|NEAR)\b|(?:^|\s)-\w")
QUOTED = re.compile(r'"[^"]*"')


@dataclass(frozen=True)
class Query:
    """The FTS5 query that runs, and `note`: how it differs from what the user typed, if it does."""

    fts: str
    note: str | None = None


@dataclass(frozen=True)
class Hit:
    id: str
    path: str
    lang: str | None
    score: float  # bm25: lower is better
    snippet: str
    relevance: int = 100  # the score as a percentage of the best hit's in the same result list


class SearchError(Exception):
    """The database is missing, not a textmill database, or the query has no words."""


def fts5_error(query: str) -> str | None:
    """SQLite's complaint about `query` as FTS5 syntax, or None when it is valid."""
    with closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE VIRTUAL TABLE probe USING fts5(text)")
        try:
            db.execute("SELECT rowid FROM probe WHERE probe MATCH ?", [query]).fetchall()
        except sqlite3.OperationalError as exc:
            return str(exc)
    return None


def parse_query(query: str) -> Query:
    """The FTS5 query for what the user typed, never with another meaning unannounced."""
    if not WORD.search(query):
        raise SearchError("the query has no words to search for")
    error = fts5_error(query)
    if error is None:
        return Query(query)
    translated = AND_NOT.sub("NOT", query)
    if translated != query and fts5_error(translated) is None:
        return Query(translated, f"`AND NOT` read as FTS5's `NOT` (all of the left side, none of the right): {translated}")
    if OPERATOR.search(QUOTED.sub(" ", query)):
        raise SearchError(
            f"not a valid FTS5 query ({error}): operators are AND, OR, NOT (binary: `a NOT b`), "
            'NEAR, with "phrases" in double quotes and prefix*; quote a word to search for it literally'
        )
    words = " ".join(f'"{w}"' for w in WORD.findall(query))
    return Query(words, f"not valid FTS5 ({error}); searched for documents containing all of: {words}")


def search(
    db_path: Path,
    query: str | Query,
    lang: str | None = None,
    entity: str | None = None,
    limit: int = 10,
    include_duplicates: bool = False,
) -> list[Hit]:
    """Best `limit` documents matching `query`, optionally only in `lang` or mentioning `entity`.

    A plain string goes through `parse_query` first; pass its result to keep its note.
    """
    if not db_path.is_file():
        raise SearchError(f"{db_path} not found: publish with the sqlite format first (textmill run)")
    fts = (query if isinstance(query, Query) else parse_query(query)).fts
    conditions = ["documents_fts MATCH ?"]
    params: list[object] = []
    if not include_duplicates:
        conditions.append("d.status = 'ok'")
    if lang:
        conditions.append("d.lang = ?")
        params.append(lang)
    if entity:
        conditions.append(
            "d.id IN (SELECT doc_id FROM entities WHERE canonical = ? UNION SELECT doc_id FROM entities WHERE text = ?)"
        )
        params += [entity, entity]
    statement = (
        "SELECT d.id, d.path, d.lang, bm25(documents_fts) AS score,"
        f" snippet(documents_fts, 0, '{HIGHLIGHT[0]}', '{HIGHLIGHT[1]}', ' … ', 24)"
        " FROM documents_fts JOIN documents d ON d.rowid = documents_fts.rowid"
        f" WHERE {' AND '.join(conditions)} ORDER BY score, d.id LIMIT ?"
    )
    try:
        with closing(sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro", uri=True)) as db:
            rows = db.execute(statement, [fts, *params, limit]).fetchall()
    except sqlite3.DatabaseError as exc:
        raise SearchError(f"{db_path}: not a searchable textmill database ({exc})") from None
    best = -rows[0][3] if rows else 0.0
    return [
        Hit(id=r[0], path=r[1], lang=r[2], score=r[3], snippet=" ".join(r[4].split()), relevance=relevance(-r[3], best))
        for r in rows
    ]


def relevance(score: float, best: float) -> int:
    """A BM25 score (higher is better here) as a whole percentage of the best one in the list."""
    return 100 if best <= 0 else max(0, min(100, round(100 * score / best)))
