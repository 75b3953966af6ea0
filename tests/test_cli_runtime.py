"""`textmill run` while it runs, as a user sees it in a terminal: progress, failures, Ctrl-C,
the summary, and the logs a watched Prefect server receives."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from conftest import CONFIG, REPO, SEEDS, shared_path
from flowkit import Recorder, run_flow, set_option, write_plugin
from textmill.flows.cli import app
from textmill.flows.progress import set_listener

TEXTMILL = [sys.executable, "-m", "textmill.flows.cli"]
INTERRUPTED = "interrupted; the next run resumes from the cache"


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no test-only logging level, a fixed terminal width."""
    env = {**os.environ, "COLUMNS": "100", **extra}
    env.pop("PREFECT_LOGGING_LEVEL", None)
    return env


def textmill(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TEXTMILL, *args], cwd=REPO, env=env or cli_env(), capture_output=True, text=True, timeout=600
    )


def bars(stderr: str) -> str:
    """stderr with elapsed times and bar glyphs normalised: `stage  done/total` per line."""
    text = re.sub(r" ?\d+:\d\d:\d\d", "", stderr)
    text = re.sub(r"[━╸╺]+", "", text)
    return "\n".join(re.sub(r"\s{2,}", "  ", line).rstrip() for line in text.splitlines())


def test_help_shows_every_default() -> None:
    runner = CliRunner()
    expected = {
        "run": [
            "Pipeline config. [default: (config/pipeline.toml)]",
            "Output folder (also holds the cache, in .textmill/). [default: out]",
            "processes (a worker process per core), threads (one process) or dask (Dask worker processes). "
            "[default: ([run] runner)]",
            "Shard tasks at once: worker processes, threads, or local Dask worker processes. [default: ([run] workers)]",
        ],
        "serve": [
            "Pipeline config. [default: (config/pipeline.toml)]",
            "Deployment name. [default: (textmill-<corpus folder>)]",
            "[default: ([run] runner)]",
        ],
        "search": ["Most hits to print. [default: 10]"],
    }
    for command, lines in expected.items():
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
        assert result.exit_code == 0, result.output
        for line in lines:
            assert line in result.output, f"{command}: {line!r} not in\n{result.output}"


# --- a failure: one line naming the step and the shard ----------------------------------------

PLUGIN = '''
from textmill.tasks.base import DocumentStep, StepOptions


class FailingStep(DocumentStep):
    """Raises, to test how a failure is reported."""

    name = "wordcount"
    version = "1"
    Options = StepOptions

    def process(self, docs):
        raise RuntimeError("wordcount was told to fail")
'''


def failing_setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A config with a `wordcount` step that always raises, and an environment that installs it
    (a throwaway distribution on PYTHONPATH, found through its entry point)."""
    site = tmp_path / "site"
    write_plugin(site, "textmill_failing", PLUGIN, "wordcount = textmill_failing:FailingStep")
    folder = tmp_path / "config"
    shutil.copytree(CONFIG.parent, folder, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    config = folder / "pipeline.toml"
    config.write_text(config.read_text().replace('steps = ["clean", "dedupe"', 'steps = ["clean", "wordcount", "dedupe"'))
    return config, cli_env(PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.slow
def test_a_failing_step_prints_one_line_and_the_traceback_only_when_verbose(prefect_api: str, tmp_path: Path) -> None:
    config, env = failing_setup(tmp_path)
    for runner in ("threads", "dask"):  # on Dask the task runs, and their logs, are in a worker process
        quiet = textmill(
            "run", str(SEEDS), "--out", str(tmp_path / runner), "--config", str(config), "--runner", runner,
            "--workers", "1", env=env,
        )
        assert quiet.returncode == 1
        assert bars(quiet.stderr) == "\n".join([
            "read  5/5",
            "clean  5/5",
            "wordcount failed  0/5",
            "error: wordcount failed on shard 0: RuntimeError: wordcount was told to fail",
        ]), runner
        assert quiet.stdout == ""

    # The verbose run reports to the session's Prefect server: the terminal shows the same.
    watched = {**env, "PREFECT_API_URL": prefect_api, "TEXTMILL_STEP_TAGS": "off", "PREFECT_HOME": str(tmp_path / "home")}
    verbose = textmill("run", str(SEEDS), "--out", str(tmp_path / "out"), "--config", str(config), "-v", env=watched)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert 'raise RuntimeError("wordcount was told to fail")' in verbose.stderr
    assert "error: wordcount failed on shard 0: RuntimeError: wordcount was told to fail" in verbose.stderr.splitlines()


@pytest.mark.slow
def test_an_ad_hoc_run_scans_while_its_server_starts_and_sends_no_heartbeats(tmp_path: Path) -> None:
    """With its temporary Prefect server: discovery's scan is made while the server boots and
    the flow takes it; the flow sends no heartbeats to a server that stops with the run, and
    that server records the flow run and its artifacts but no task runs."""
    home = tmp_path / "home"
    env = cli_env(PREFECT_HOME=str(home))
    env.pop("PREFECT_API_URL", None)
    run = textmill("run", str(SEEDS), "--out", str(tmp_path / "out"), "--config", str(CONFIG), "-v", env=env)
    assert run.returncode == 0, run.stderr
    assert "discover: 5 files hashed, 0 unchanged since the last scan (scanned while the Prefect server started)" in run.stderr
    with closing(sqlite3.connect(home / "prefect.db")) as db:
        states = db.execute("SELECT state_name FROM flow_run").fetchall()
        events = [name for (name,) in db.execute("SELECT event FROM events WHERE event LIKE 'prefect.flow-run.%'")]
        task_runs = db.execute("SELECT count(*) FROM task_run").fetchone()[0]
        artifacts = {key for (key,) in db.execute("SELECT key FROM artifact")}
    assert states == [("Completed",)]
    assert task_runs == 0
    assert {"textmill-summary", "textmill-steps"} <= artifacts, artifacts
    assert "prefect.flow-run.Running" in events
    assert "prefect.flow-run.heartbeat" not in events, events


def test_the_temporary_server_records_task_runs_only_when_asked() -> None:
    from textmill.flows.apiserver import API_URL, TASK_RUN_RECORDER, server_environment

    env = server_environment({API_URL: "http://elsewhere/api", "HOME": "/home/user"})
    assert env[TASK_RUN_RECORDER] == "false"
    assert API_URL not in env and env["HOME"] == "/home/user"
    assert server_environment({TASK_RUN_RECORDER: "true"})[TASK_RUN_RECORDER] == "true"


# --- Ctrl-C -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_stops_within_5_s_with_one_line_and_the_next_run_resumes(config_copy: Path, tmp_path: Path) -> None:
    corpus = bbc_copy(tmp_path / "bbc300")
    out = tmp_path / "out"
    # Without entities the resumed run finishes in seconds; the interrupt comes during reading,
    # in worker processes (four shards: the default runner sends them to a process per core).
    set_option(config_copy, "pipeline", 'steps = ["clean", "dedupe", "language", "publish"]')
    set_option(config_copy, "run", "shard_size = 100")
    # Its own process group, as a terminal runs it: Ctrl-C reaches textmill and every process
    # it started (Prefect's temporary API server among them).
    run = subprocess.Popen(
        [*TEXTMILL, "run", str(corpus), "--out", str(out), "--config", str(config_copy)], cwd=REPO, env=cli_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not read_some(out):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.05)
    workers = worker_processes(run.pid)
    assert workers, "the shards run in worker processes"
    os.killpg(run.pid, signal.SIGINT)
    interrupted = time.monotonic()
    stdout, stderr = run.communicate(timeout=30)
    took = time.monotonic() - interrupted
    assert run.returncode == 130, stderr
    assert took < 5, f"exited {took:.1f} s after Ctrl-C"
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, "worker processes outlived the run"
    lines = stderr.splitlines()
    assert lines[-1] == INTERRUPTED, stderr
    assert len(lines) <= 4 and all(re.match(r"(read|clean|dedupe) ", line) for line in lines[:-1]), stderr
    assert stdout == ""

    again = textmill("run", str(corpus), "--out", str(out), "--config", str(config_copy))
    assert again.returncode == 0, again.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["read"]["cached"] + manifest["steps"]["clean"]["cached"] > 0
    assert manifest["documents"] == 300


def worker_processes(cli: int) -> list[psutil.Process]:
    """The CLI's worker processes, spawned or forked from its fork server (the server included)."""
    found = []
    for child in psutil.Process(cli).children(recursive=True):
        command = " ".join(child.cmdline())
        if "--multiprocessing-fork" in command or "multiprocessing.forkserver" in command:
            found.append(child)
    return found


# --- progress, summary and the updated count ----------------------------------------------------


@pytest.mark.slow
def test_progress_moves_per_batch_with_threads(prefect_server: None, config_copy: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(130):
        (corpus / f"{n:03}.txt").write_text(f"Report number {n} from the city council. " * (1 + n % 7) + f"Item {n * 7919}.\n")
    config_copy.write_text(config_copy.read_text().replace(
        'steps = ["clean", "dedupe", "language", "entities", "publish"]', 'steps = ["clean", "dedupe", "publish"]'
    ))
    set_option(config_copy, "steps.publish", 'formats = ["jsonl"]')
    recorder = Recorder()
    set_listener(recorder)
    try:
        run_flow(corpus, tmp_path / "out", config_copy)
    finally:
        set_listener(None)
    batches = [("start", 130), ("advance", 64), ("advance", 64), ("advance", 2), ("finish", False)]
    assert recorder.of("clean") == batches
    assert recorder.of("dedupe") == batches
    assert recorder.of("dedupe:apply") == batches
    assert recorder.of("publish") == batches
    assert recorder.of("dedupe:index") == [("start", 130), ("advance", 130), ("finish", False)]  # one partition
    assert recorder.of("read") == [("start", 130), *[("advance", 1)] * 130, ("finish", False)]

    again = Recorder()  # a warm run: Prefect serves each shard from its cache, all at once
    set_listener(again)
    try:
        run_flow(corpus, tmp_path / "out", config_copy)
    finally:
        set_listener(None)
    assert again.of("clean") == [("start", 130), ("advance", 130), ("finish", False)]


@pytest.mark.slow
def test_summary_shows_new_files_and_updated_means_re_decided(prefect_api: str, seeds_copy: Path, tmp_path: Path) -> None:
    """The summary table on stdout, bars on stderr; then one file added to the same output folder.
    Against the session's Prefect server (the terminal shows the same), which saves each run
    starting a temporary one."""
    env = cli_env(PREFECT_API_URL=prefect_api, TEXTMILL_STEP_TAGS="off", PREFECT_HOME=str(tmp_path / "client-home"))
    out = tmp_path / "out"
    cold = textmill("run", str(seeds_copy), "--out", str(out), env=env)
    assert cold.returncode == 0, cold.stderr
    assert "textmill summary" in cold.stdout
    for row in ("files in", "duplicates", "rejected", "languages", "top entities", "computed", "cached"):
        assert row in cold.stdout
    assert "│ new or changed files │ 5 read this run; 0 unchanged, from the cache" in cold.stdout
    assert json.loads((out / "manifest.json").read_text())["counts"] == {"duplicate": 2, "ok": 3}
    steps = json.loads((out / "manifest.json").read_text())["steps"]
    assert {name: s["updated"] for name, s in steps.items()} == {
        "clean": 0, "dedupe": 0, "language": 0, "entities": 0, "publish": 0,
    }
    assert bars(cold.stderr) == "\n".join([
        "read  5/5", "clean  5/5", "dedupe  5/5", "dedupe index  5/5", "dedupe apply  5/5", "language  5/5",
        "entities  5/5", "entities index  3/3", "entities apply  5/5", "publish  5/5",
    ])

    # A longer copy of the cluster's canonical article becomes the new canonical: the three
    # earlier members are re-decided (updated), the new file is decided for the first time.
    head, rest = (seeds_copy / "001_08a746c966a0006a.txt").read_text().split("\n", 1)
    (seeds_copy / "005_longer_copy.txt").write_text(
        head + "\nThe Kremlin said the drones were disabled by electronic warfare systems and that "
        "no one was hurt. Officials in Kyiv denied any involvement in the incident overnight.\n" + rest
    )
    warm = textmill("run", str(seeds_copy), "--out", str(out), env=env)
    assert warm.returncode == 0, warm.stderr
    assert "│ new or changed files │ 1 read this run; 5 unchanged, from the cache" in warm.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["largest_clusters"] == [{"canonical": "005_longer_copy.txt", "documents": 4}]
    dedupe = manifest["steps"]["dedupe"]
    assert (dedupe["computed"], dedupe["cached"], dedupe["updated"]) == (1, 5, 3)


# --- a watched server: INFO logs in the UI, a terse terminal, a crash recorded on Ctrl-C --------



def server_logs(api_url: str, run_id: str) -> list[dict[str, Any]]:
    body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
    response = httpx.post(f"{api_url}/logs/filter", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def read_some(out: Path) -> bool:
    """Whether the read stage has stored a batch of files' listings in some shard's pack."""
    for pack in (out / ".textmill" / "store").glob("*.sqlite"):
        try:
            with closing(sqlite3.connect(f"file:{pack}?mode=ro", uri=True, timeout=1)) as db:
                if db.execute("SELECT count(*) FROM listings").fetchone()[0]:
                    return True
        except sqlite3.OperationalError:  # not created yet, or busy with a commit
            continue
    return False


def bbc_copy(target: Path, per_topic: int = 100) -> Path:
    """The first `per_topic` articles of three BBC topics: a run that takes a while."""
    target.mkdir()
    bbc = shared_path("corpora", "bbc")
    for topic in ("business", "sport", "tech"):
        for source in sorted((bbc / topic).glob("*.txt"))[:per_topic]:
            shutil.copy(source, target / f"{topic}_{source.name}")
    return target


@pytest.mark.slow
def test_a_watched_run_sends_info_logs_to_the_server_and_none_to_the_terminal(prefect_api: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = cli_env(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(tmp_path / "client-home"))
    done = textmill("run", str(SEEDS), "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads((out / "manifest.json").read_text())["run_id"]
    info = {entry["message"] for entry in server_logs(prefect_api, run_id) if entry["level"] == 20}
    for line in (
        "5 files in 1 shards; steps: clean, dedupe, language, entities, publish",
        "read-0: 5 computed, 0 cached, 0 skipped",
        "clean: 5 computed, 0 cached, 0 skipped",
        "dedupe: 5 computed, 0 cached, 0 skipped",
        "language: 3 computed, 0 cached, 2 skipped",
        "entities: 3 computed, 0 cached, 2 skipped",
        "done: 2 duplicate, 3 ok",
    ):
        assert line in info, sorted(info)
    assert bars(done.stderr) == "\n".join([
        "read  5/5", "clean  5/5", "dedupe  5/5", "dedupe index  5/5", "dedupe apply  5/5", "language  5/5",
        "entities  5/5", "entities index  3/3", "entities apply  5/5", "publish  5/5",
    ])


@pytest.mark.slow
def test_ctrl_c_on_a_watched_run_marks_it_crashed(prefect_api: str, tmp_path: Path) -> None:
    corpus = bbc_copy(tmp_path / "bbc300")
    out = tmp_path / "out"
    env = cli_env(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(tmp_path / "client-home"))
    run = subprocess.Popen(
        [*TEXTMILL, "run", str(corpus), "--out", str(out)], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not read_some(out):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGINT)
    interrupted = time.monotonic()
    _, stderr = run.communicate(timeout=30)
    assert run.returncode == 130 and time.monotonic() - interrupted < 5, stderr
    assert stderr.splitlines()[-1] == INTERRUPTED
    body = {"flow_runs": {"name": {"any_": ["textmill-bbc300"]}}}
    runs = httpx.post(f"{prefect_api}/flow_runs/filter", json=body, timeout=10).json()
    assert [(r["state_type"], r["state"]["message"]) for r in runs] == [("CRASHED", "Interrupted by the user (Ctrl-C)")]
