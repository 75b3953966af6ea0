"""The `textmill` command as a user runs it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import CONFIG, REPO, SEEDS
from flowkit import records, run_flow, set_option
from textmill.flows.lock import OutputFolderBusy, output_folder_lock
from textmill.flows.pipeline import textmill as textmill_flow
from textmill.tasks.base import ConfigError

TEXTMILL = [sys.executable, "-m", "textmill.flows.cli"]


def textmill(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "COLUMNS": "160", **env}
    return subprocess.run([*TEXTMILL, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


def test_bad_config_fails_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "pipeline.toml"
    bad.write_text('[pipeline]\nsteps = ["clean", "nope"]\n')
    code, stderr = cli("run", str(SEEDS), "--config", str(bad), "--out", str(tmp_path / "out"))
    assert code == 2
    assert stderr.startswith("error:") and stderr.count("\n") == 1
    assert "unknown step 'nope'" in stderr


def test_missing_corpus_fails_cleanly(tmp_path: Path) -> None:
    code, stderr = cli("run", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert code == 2
    assert stderr == f"error: corpus folder not found: {tmp_path / 'missing'}\n"


def test_steps_lists_installed_steps_with_options() -> None:
    result = textmill("steps")
    assert result.returncode == 0, result.stderr
    for name in ("clean", "dedupe", "language", "entities", "publish"):
        assert name in result.stdout
    for option in ("jaccard_threshold", "containment_threshold", "min_score", "formats", "rules"):
        assert option in result.stdout


def test_unknown_runner_fails_before_any_work(tmp_path: Path) -> None:
    code, stderr = cli("run", str(SEEDS), "--runner", "pool", "--out", str(tmp_path / "out"))
    assert code == 2
    assert "unknown runner 'pool'" in stderr and "choose 'processes', 'threads', 'dask'" in stderr
    assert not (tmp_path / "out").exists()


def test_serve_needs_exactly_one_schedule(tmp_path: Path) -> None:
    neither = cli("serve", str(SEEDS), "--out", str(tmp_path / "out"))
    both = cli("serve", str(SEEDS), "--cron", "0 * * * *", "--interval", "60", "--out", str(tmp_path / "out"))
    for code, stderr in (neither, both):
        assert (code, stderr) == (2, "error: give exactly one of --cron and --interval\n")


def cli(*args: str) -> tuple[int, str]:
    """Run the CLI in this process (typer's runner): exit code and stderr, as a user sees them."""
    from typer.testing import CliRunner

    from textmill.flows.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "1000", "PGPASSWORD": None})  # --publish sets it
    return result.exit_code, result.stderr


def test_output_folder_that_is_or_holds_the_corpus_fails_before_any_work(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("text")
    same = cli("run", str(corpus), "--out", str(corpus))
    assert same == (2, f"error: the output folder {corpus} is the corpus itself; choose a folder outside the corpus\n")
    around = cli("run", str(corpus), "--out", str(tmp_path))
    assert around == (
        2, f"error: the corpus {corpus} lies inside the output folder {tmp_path}; choose a folder outside the corpus\n"
    )
    assert sorted(p.name for p in corpus.iterdir()) == ["a.txt"]


def flow_config(config_copy: Path) -> Path:
    """The default config with only clean and publish: fast, no models."""
    set_option(config_copy, "pipeline", 'steps = ["clean", "publish"]')
    return config_copy


def test_output_folders_inside_the_corpus_are_skipped_and_reported(
    prefect_server: None, seeds_copy: Path, config_copy: Path, tmp_path: Path
) -> None:
    config = flow_config(config_copy)
    first = run_flow(seeds_copy, seeds_copy / "out", config)            # the run's own output, inside the corpus
    assert (first["files"], first["skipped_output_folders"]) == (5, ["out"])
    shutil.copytree(seeds_copy / "out", seeds_copy / "archive" / "2024")  # an earlier output folder, moved into it
    second = run_flow(seeds_copy, tmp_path / "elsewhere", config)
    assert (second["files"], second["documents"]) == (5, 5)
    assert second["skipped_output_folders"] == ["out", "archive/2024"]
    assert sorted(records(tmp_path / "elsewhere")) == sorted(p.name for p in SEEDS.iterdir())


def test_every_link_is_accounted_for_in_a_run(
    prefect_server: None, seeds_copy: Path, config_copy: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("a file outside the corpus")
    (seeds_copy / "leak.txt").symlink_to(outside / "secret.txt")
    (seeds_copy / "leak").symlink_to(outside)
    (seeds_copy / "again").symlink_to(seeds_copy)
    manifest = run_flow(seeds_copy, tmp_path / "out", flow_config(config_copy))
    rows = records(tmp_path / "out")
    assert (manifest["files"], manifest["documents"], len(rows), manifest["skipped_links"]) == (7, 7, 7, 1)
    assert {i: r["reason"] for i, r in rows.items() if r["status"] == "rejected"} == {
        "leak": "unsafe link: points outside the corpus",
        "leak.txt": "unsafe link: points outside the corpus",
    }


def test_a_second_run_on_a_busy_output_folder_stops_and_names_the_holder(prefect_api: str, tmp_path: Path) -> None:
    """A second run (here against the session's Prefect server, as beside `textmill serve`)."""
    out = tmp_path / "out"
    with output_folder_lock(out):
        result = textmill("run", "seeds", "--out", str(out), PREFECT_API_URL=prefect_api, TEXTMILL_STEP_TAGS="off")
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert f"the output folder {out} is in use by another textmill run (pid {os.getpid()} on " in message
    assert "wait for it to finish or choose another output folder" in message
    assert sorted(p.name for p in out.iterdir()) == [".textmill"]
    assert sorted(p.name for p in (out / ".textmill").iterdir()) == ["lock"]


def test_the_lock_waits_up_to_its_timeout(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_folder_lock(out):
        started = time.monotonic()
        with pytest.raises(OutputFolderBusy, match="after waiting 0.5 s"):
            with output_folder_lock(out, timeout=0.5):
                pass
        assert 0.5 <= time.monotonic() - started < 5
    releaser = threading.Timer(0.5, lambda: held.__exit__(None, None, None))
    held = output_folder_lock(out)
    held.__enter__()
    releaser.start()
    with output_folder_lock(out, timeout=30):
        assert json.loads((out / ".textmill" / "lock.holder").read_text())["pid"] == os.getpid()
    releaser.join()


def test_empty_paths_fail_before_any_work(prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("the working folder must not become the corpus")
    assert cli("run", "", "--out", "out") == (2, "error: the corpus path is empty; give the folder to process\n")
    assert cli("serve", str(tmp_path), "--out", " ", "--interval", "60") == (
        2, "error: the output path (--out) is empty; give the output folder\n"
    )
    with pytest.raises(ConfigError, match="the output path is empty"):
        textmill_flow(corpus=str(tmp_path), out="", config=str(CONFIG))
    with pytest.raises(ConfigError, match="the corpus path is empty"):
        textmill_flow(corpus="", out=str(tmp_path / "out"), config=str(CONFIG))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_mistakes_found_before_work_exit_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('[pipeline]\nsteps = ["language", "entities"]\n[steps.entities]\nmodels = { de = "de_not_installed" }\n')
    out = tmp_path / "out"
    assert cli("run", str(SEEDS), "--config", str(config), "--out", str(out)) == (
        2, "error: [steps.entities] models.de: package 'de_not_installed' is not installed; "
        "install it with `pip install de_not_installed`\n"
    )
    config.write_text('[pipeline]\nsteps = ["entities"]\n[steps.entities]\nlabels = ["PERSON", "PEOPLE"]\n')
    code, message = cli("run", str(SEEDS), "--config", str(config), "--out", str(out))
    assert (code, message.splitlines()[0]) == (2, message.rstrip("\n"))
    assert message.startswith("error: [steps.entities] labels: PEOPLE not produced by any configured model; known labels: ")
    a_file = tmp_path / "out.txt"
    a_file.write_text("not a folder")
    assert cli("run", str(SEEDS), "--out", str(a_file)) == (2, f"error: the output folder {a_file} is a file\n")
    assert not out.exists()


def test_an_unreachable_publish_database_fails_before_work_without_the_password(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, message = cli("run", str(SEEDS), "--out", str(out), "--publish", "postgresql://bob:s3cret@127.0.0.1:1/test")
    assert (code, message) == (
        2,
        "error: --publish: cannot connect to 127.0.0.1:1/test schema textmill: connection failed: connection to server "
        'at "127.0.0.1", port 1 failed: Connection refused\n',
    )
    assert not out.exists()
