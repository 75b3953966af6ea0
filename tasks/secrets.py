"""Keep database passwords out of everything textmill prints, logs or stores."""
from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the password of every URL (`scheme://user:pw@host`) and `password=` pair masked."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}***@", text)
    return _KEYWORD_PASSWORD.sub(lambda m: f"{m['head']}***", text)


def split_password(dsn: str) -> tuple[str, str | None]:
    """A DSN without its password, and the password (None when it has none)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    if password is None:
        return dsn, None
    return make_conninfo(**{k: v for k, v in params.items() if v is not None}), str(password)


def has_password(dsn: str) -> bool:
    """Whether a DSN carries a password (which must then stay out of configs and parameters)."""
    return split_password(dsn)[1] is not None
