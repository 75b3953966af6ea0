"""Keep database passwords out of everything textmill prints, logs or stores."""
from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the password of every URL (`scheme://user:pw@host`) and `password=` pair masked."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}***@", text)
    return _KEYWORD_PASSWORD.sub(lambda m: f"{m['head']}***", text)


class InvalidDsn(ValueError):
    """Not a PostgreSQL DSN. The message leaves out libpq's, which may quote part of a password."""


def split_password(dsn: str) -> tuple[str, str | None]:
    """A DSN without its password, and the password (None when it has none)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        raise InvalidDsn("not a valid PostgreSQL DSN (postgresql://user@host:port/db or key=value pairs)") from None
    password = params.pop("password", None)
    if password is None:
        return dsn, None
    return make_conninfo(**{k: v for k, v in params.items() if v is not None}), str(password)


def has_password(dsn: str) -> bool:
    """Whether a DSN carries a password or an SSL key password (neither may sit in a config)."""
    from psycopg.conninfo import conninfo_to_dict

    bare, password = split_password(dsn)
    return password is not None or "sslpassword" in conninfo_to_dict(bare)
