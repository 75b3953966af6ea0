"""Retries: a flaky sink recovers with identical output; permanent errors are not retried."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import SEEDS, SeedsRun
from flowkit import jsonl_lines, records, run_flow, set_option
from textmill.flows.retry import is_transient
from textmill.tasks import sinks
from textmill.tasks.base import ConfigError

pytestmark = pytest.mark.slow


def table_rows(db: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(db) as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in ("documents", "entities")}


def test_publish_survives_two_sink_failures(
    seeds_run: SeedsRun, config_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_option(config_copy, "run", "retry_delay_seconds = 0.05")
    calm = seeds_run.out

    failures = {"left": 2}
    real_write = sinks.SqliteDelta.write

    def flaky_write(self: sinks.SqliteDelta, doc: object) -> None:
        if failures["left"] and doc.id.startswith("002"):
            failures["left"] -= 1
            raise OSError("disk I/O error (injected)")
        real_write(self, doc)

    monkeypatch.setattr(sinks.SqliteDelta, "write", flaky_write)
    flaky = tmp_path / "flaky"
    manifest = run_flow(SEEDS, flaky, config_copy)

    assert failures["left"] == 0
    assert manifest["counts"] == {"duplicate": 2, "ok": 3}
    assert jsonl_lines(flaky) == jsonl_lines(calm)
    assert table_rows(flaky / "textmill.sqlite") == table_rows(calm / "textmill.sqlite")
    assert len(table_rows(flaky / "textmill.sqlite")["documents"]) == 5
    assert records(flaky).keys() == records(calm).keys()
    assert not list(flaky.rglob(".*.tmp"))


def test_permanent_failure_is_not_retried(
    prefect_server: None, config_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_option(config_copy, "run", "retry_delay_seconds = 0.05")
    calls = {"n": 0}

    def denied(self: sinks.SqliteDelta, doc: object) -> None:
        calls["n"] += 1
        raise PermissionError(13, "Permission denied", "textmill.sqlite")

    monkeypatch.setattr(sinks.SqliteDelta, "write", denied)
    with pytest.raises(PermissionError):
        run_flow(SEEDS, tmp_path / "out", config_copy)
    assert calls["n"] == 1


def test_transient_classification() -> None:
    assert is_transient(OSError("I/O error"))
    assert is_transient(TimeoutError())
    assert is_transient(sqlite3.OperationalError("database is locked"))
    assert not is_transient(PermissionError("denied"))
    assert not is_transient(FileNotFoundError("gone"))
    assert not is_transient(ConfigError("bad option"))
    assert not is_transient(KeyError("bug"))
