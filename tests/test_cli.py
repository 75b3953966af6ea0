"""The `textmill` command as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

TEXTMILL = [sys.executable, "-m", "textmill.flows.cli"]


def textmill(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([*TEXTMILL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_run_prints_summary_and_writes_outputs(tmp_path: Path) -> None:
    result = textmill("run", "seeds", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "textmill summary" in result.stdout
    for word in ("files in", "duplicates", "rejected", "languages", "top entities", "computed", "cached"):
        assert word in result.stdout
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"] == {"duplicate": 2, "ok": 3}
    assert "clean" in result.stderr  # progress bars go to stderr


def test_bad_config_fails_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "pipeline.toml"
    bad.write_text('[pipeline]\nsteps = ["clean", "nope"]\n')
    result = textmill("run", "seeds", "--config", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:")
    assert "unknown step 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_corpus_fails_cleanly(tmp_path: Path) -> None:
    result = textmill("run", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "corpus folder not found" in result.stderr


def test_steps_lists_installed_steps_with_options() -> None:
    result = textmill("steps")
    assert result.returncode == 0, result.stderr
    for name in ("clean", "dedupe", "language", "entities", "publish"):
        assert name in result.stdout
    for option in ("jaccard_threshold", "containment_threshold", "min_score", "formats", "rules"):
        assert option in result.stdout


def test_unknown_runner_fails_before_any_work(tmp_path: Path) -> None:
    result = textmill("run", "seeds", "--runner", "processes", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "unknown runner 'processes'" in result.stderr and "'threads' or 'dask'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_serve_needs_exactly_one_schedule(tmp_path: Path) -> None:
    neither = textmill("serve", "seeds", "--out", str(tmp_path / "out"))
    both = textmill("serve", "seeds", "--cron", "0 * * * *", "--interval", "60", "--out", str(tmp_path / "out"))
    for result in (neither, both):
        assert result.returncode == 2
        assert "give exactly one of --cron and --interval" in result.stderr
