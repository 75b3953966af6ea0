"""Full-text search over a published `textmill.sqlite`: ranked hits with snippets.

The query uses SQLite FTS5 syntax ("exact phrase", OR, NOT, prefix*); text that is not valid
FTS5 (a stray quote, `U.S.`) is searched as plain words, all of which must occur.
"""
from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

HIGHLIGHT = ("\x02", "\x03")  # snippet markers, replaced by the caller's highlighting
WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Hit:
    id: str
    path: str
    lang: str | None
    score: float  # bm25: lower is better
    snippet: str


class SearchError(Exception):
    """The database is missing, not a textmill database, or the query has no words."""


def search(
    db_path: Path,
    query: str,
    lang: str | None = None,
    entity: str | None = None,
    limit: int = 10,
    include_duplicates: bool = False,
) -> list[Hit]:
    """Best `limit` documents matching `query`, optionally only in `lang` or mentioning `entity`."""
    if not db_path.is_file():
        raise SearchError(f"{db_path} not found: publish with the sqlite format first (textmill run)")
    if not WORD.search(query):
        raise SearchError("the query has no words to search for")
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
            try:
                rows = db.execute(statement, [query, *params, limit]).fetchall()
            except sqlite3.OperationalError:
                # Not valid FTS5 ("unterminated string", "syntax error near ."): plain words instead;
                # if the database itself is at fault, this fails too and is reported below.
                words = " ".join(f'"{w}"' for w in WORD.findall(query))
                rows = db.execute(statement, [words, *params, limit]).fetchall()
    except sqlite3.DatabaseError as exc:
        raise SearchError(f"{db_path}: not a searchable textmill database ({exc})") from None
    return [Hit(id=r[0], path=r[1], lang=r[2], score=r[3], snippet=" ".join(r[4].split())) for r in rows]
