"""Against a real `prefect server start`: what the API (and so the UI) shows of a run, cached
re-runs, and `textmill serve` registering a schedule whose runs execute and complete."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from conftest import REPO, SEEDS, stop
from flowkit import set_option

pytestmark = pytest.mark.slow


def api(url: str, path: str, body: dict | None = None, method: str = "POST") -> object:
    """POST (or `method`) to the Prefect API, retrying 503, 429 and a timed-out read: a SQLite-backed
    server answers 503, or nothing for a while, while another writer holds its database lock
    (the test suite's other workers load the machine meanwhile)."""
    for attempt in range(6):
        try:
            response = httpx.request(method, f"{url}{path}", json=body or {}, timeout=30)
        except httpx.TimeoutException:
            if attempt == 5:
                raise
            time.sleep(0.5 * 2**attempt)
            continue
        if response.status_code not in (429, 503) or attempt == 5:
            break
        time.sleep(0.5 * 2**attempt)
    response.raise_for_status()
    return response.json() if response.content else None


def run_cli(api_url: str, tmp_path: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(tmp_path / "client-home"),
        "PREFECT_LOGGING_LEVEL": "INFO", "TEXTMILL_STEP_TAGS": "auto",
    }
    done = subprocess.run(
        [sys.executable, "-m", "textmill.flows.cli", "run", str(SEEDS), "--out", str(out), "-v"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def flow_run_of(api_url: str, out: Path) -> dict:
    run_id = json.loads((out / "manifest.json").read_text())["run_id"]
    response = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10)
    response.raise_for_status()
    return response.json() if response.content else None


def test_a_run_shows_completed_tasks_artifacts_and_counts_then_cached_shards(prefect_api: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_cli(prefect_api, tmp_path, out)
    flow_run = flow_run_of(prefect_api, out)
    assert flow_run["name"] == "textmill-seeds" and flow_run["state_type"] == "COMPLETED"
    tasks = api(prefect_api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
    names = {t["name"]: t["state_name"] for t in tasks}  # type: ignore[union-attr]
    steps = ("read", "clean", "dedupe-summarize", "dedupe-partition", "dedupe", "language", "entities-summarize", "entities")
    for step in steps:
        assert names.get(f"{step}-0") == "Completed", names
    assert names["publish"] == "Completed"
    tags = {t["name"]: t["tags"] for t in tasks}  # type: ignore[union-attr]
    assert tags["clean-0"] == ["clean"] and tags["dedupe-summarize-0"] == ["dedupe"] and tags["dedupe-index"] == ["dedupe"]
    assert tags["dedupe-partition-0"] == ["dedupe"]
    assert tags["entities-0"] == ["entities"] and tags["publish"] == ["publish"]
    artifacts = api(prefect_api, "/artifacts/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
    by_key = {a["key"]: a for a in artifacts}  # type: ignore[union-attr]
    assert {"textmill-summary", "textmill-steps", "textmill-progress"} <= set(by_key)
    assert by_key["textmill-progress"]["data"] == 100.0
    summary = by_key["textmill-summary"]["data"]
    assert "textmill run" in summary and "duplicate" in summary and "Vladimir Putin" in summary
    logs = api(prefect_api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run["id"]]}}, "limit": 200})
    messages = {entry["message"] for entry in logs}  # type: ignore[union-attr]
    assert {
        "clean: 5 computed, 0 cached, 0 skipped",
        "dedupe: 5 computed, 0 cached, 0 skipped",
        "language: 3 computed, 0 cached, 2 skipped",
        "entities: 3 computed, 0 cached, 2 skipped",
    } <= messages

    run_cli(prefect_api, tmp_path, out)
    again = flow_run_of(prefect_api, out)
    assert again["id"] != flow_run["id"] and again["state_type"] == "COMPLETED"
    tasks = api(prefect_api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [again["id"]]}}})
    shard_states = {t["name"]: t["state_name"] for t in tasks if t["name"].endswith("-0")}  # type: ignore[union-attr]
    assert shard_states and set(shard_states.values()) == {"Cached"}, shard_states


def test_serve_registers_the_schedule_and_scheduled_runs_compute_only_new_files(
    prefect_api: str, seeds_copy: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(tmp_path / "client-home"),
        "TEXTMILL_STEP_TAGS": "auto",
    }
    log_path = tmp_path / "serve.log"
    log = log_path.open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "textmill.flows.cli", "serve", str(seeds_copy), "--out", str(tmp_path / "out"),
         "--interval", "5", "--name", "seeds-every-5s"],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deployment, first = wait_for_completed_run(prefect_api, serve, log_path, "seeds-every-5s", after=0.0)
        schedules = [s["schedule"] for s in deployment["schedules"]]
        assert [s.get("interval") for s in schedules] == [5.0]
        assert deployment["parameters"]["corpus"] == str(seeds_copy.resolve())
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert deployment["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        assert (tmp_path / "out" / "manifest.json").exists()

        added = time.time()
        (seeds_copy / "005_added.txt").write_text(
            "Scheduled runs pick up new files. The council in Leeds approved the new library on Tuesday, "
            "after a long debate about its cost and its opening hours.\n"
        )
        _, later = wait_for_completed_run(prefect_api, serve, log_path, "seeds-every-5s", after=added)
        summary = artifact(prefect_api, later["id"], "textmill-summary")
        assert "New or changed files read this run: 1; unchanged, from the cache: 5." in summary
        steps = {row["step"]: row for row in json.loads(artifact(prefect_api, later["id"], "textmill-steps"))}
        assert {name: row["computed"] for name, row in steps.items()} == {
            "clean": 1, "dedupe": 1, "language": 1, "entities": 1, "publish": 6,
        }
        assert steps["clean"]["cached"] == 5
    finally:
        stop(serve)
        log.close()


def wait_for_completed_run(
    api_url: str, serve: subprocess.Popen, log_path: Path, name: str, after: float
) -> tuple[dict, dict]:
    """The deployment and its first run that started after `after` (epoch seconds) and completed."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert serve.poll() is None, log_path.read_text()[-3000:]
        found = api(api_url, "/deployments/filter", {"deployments": {"name": {"any_": [name]}}})
        if found:
            deployment = found[0]  # type: ignore[index]
            runs = api(api_url, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}}})
            for run in runs:  # type: ignore[union-attr]
                started = run["start_time"] and datetime.fromisoformat(run["start_time"]).timestamp()
                if run["state_type"] == "COMPLETED" and started and started > after:
                    return deployment, run
        time.sleep(2)
    raise AssertionError(f"no scheduled run of {name} completed within 240 s; log:\n" + log_path.read_text()[-3000:])


def artifact(api_url: str, flow_run_id: str, key: str) -> str:
    found = api(api_url, "/artifacts/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "artifacts": {"key": {"any_": [key]}}})
    assert found, f"{key} artifact of flow run {flow_run_id}"
    return found[0]["data"]  # type: ignore[index]


# Runs the flow with a fault injected into the language step. A process of its own, because
# Prefect's in-process event and log services stay bound to the API they first talked to.
FAULTY_RUN = """
import sys
from textmill.tasks.language import LanguageTagger

attempts = []

def failing_disk(self, docs):
    attempts.append(1)
    raise OSError("injected: language model file unreadable")

LanguageTagger.process = failing_disk
from textmill.flows.pipeline import textmill

try:
    textmill(corpus=sys.argv[1], out=sys.argv[2], config=sys.argv[3])
except OSError as exc:
    print(f"attempts={len(attempts)} error={exc}")
    sys.exit(3)
"""


def test_a_shard_that_raises_fails_its_task_after_retries_and_the_run(
    prefect_api: str, config_copy: Path, tmp_path: Path
) -> None:
    set_option(config_copy, "run", "retries = 2")
    set_option(config_copy, "run", "retry_delay_seconds = 0.05")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "client-home")}
    done = subprocess.run(
        [sys.executable, "-c", FAULTY_RUN, str(SEEDS), str(tmp_path / "out"), str(config_copy)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-3000:]
    assert "attempts=3 error=injected: language model file unreadable" in done.stdout, "one run and two retries"

    # The session's server also holds the failed runs of other tests: this one is told by its cause.
    runs = api(prefect_api, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["FAILED"]}}}})
    ours = [r for r in runs if "injected: language model file unreadable" in r["state"]["message"]]  # type: ignore[union-attr]
    assert len(ours) == 1, runs
    flow_run = ours[0]
    assert flow_run["name"] == "textmill-seeds"
    deadline = time.monotonic() + 30  # the server records task runs from their events, a moment later
    while True:
        tasks = api(prefect_api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
        by_name = {t["name"]: t for t in tasks}  # type: ignore[union-attr]
        if by_name.get("language-0", {}).get("state_type") == "FAILED" or time.monotonic() > deadline:
            break
        time.sleep(1)
    failed = by_name["language-0"]
    assert failed["state_type"] == "FAILED" and failed["run_count"] == 3
    assert "OSError" in failed["state"]["message"] and "injected" in failed["state"]["message"]
    assert by_name["dedupe-0"]["state_type"] == "COMPLETED"
    assert "entities-0" not in by_name and "publish" not in by_name
    assert not (tmp_path / "out" / "jsonl").exists()


def test_prefect_yaml_deploys_onto_a_process_pool_and_a_worker_runs_it(
    prefect_api: str, seeds_copy: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(tmp_path / "client-home"),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PWD": str(REPO),
        "TEXTMILL_CORPUS": str(seeds_copy),
        "TEXTMILL_OUT": str(tmp_path / "out"),
    }

    def prefect(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    prefect("work-pool", "create", "textmill", "--type", "process")
    prefect("--no-prompt", "deploy", "--all")
    found = api(prefect_api, "/deployments/filter", {"deployments": {"name": {"any_": ["textmill-hourly"]}}})
    assert len(found) == 1  # type: ignore[arg-type]
    deployment = found[0]  # type: ignore[index]
    assert deployment["parameters"]["corpus"] == str(seeds_copy) and deployment["work_pool_name"] == "textmill"
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 * * * *"]
    assert deployment["global_concurrency_limit"]["limit"] == 1
    # Paused, the deployment has no scheduled runs (the update deletes those made already): near
    # the hour, the worker would otherwise take the hour's run too, and with one run at a time
    # (CANCEL_NEW) whichever came second would be cancelled, perhaps the one this test started.
    api(prefect_api, f"/deployments/{deployment['id']}", {"paused": True}, method="PATCH")
    scheduled = {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}}
    assert api(prefect_api, "/flow_runs/filter", scheduled) == []

    run = api(prefect_api, f"/deployments/{deployment['id']}/create_flow_run", {})
    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "textmill"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        state = ""
        while time.monotonic() < deadline and state not in ("COMPLETED", "FAILED", "CRASHED"):
            assert worker.poll() is None, log_path.read_text()[-3000:]
            time.sleep(2)
            state = httpx.get(f"{prefect_api}/flow_runs/{run['id']}", timeout=10).json()["state_type"]  # type: ignore[index]
        assert state == "COMPLETED", log_path.read_text()[-3000:]
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert manifest["counts"] == {"duplicate": 2, "ok": 3}
    finally:
        stop(worker)
        log.close()


def test_prefect_yaml_refuses_to_deploy_without_the_paths(prefect_api: str, tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "client-home"), "PWD": str(REPO)}
    env.pop("TEXTMILL_CORPUS", None)
    env["TEXTMILL_OUT"] = str(tmp_path / "out")
    subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", "textmill", "--type", "process"], env=env, cwd=REPO, capture_output=True, timeout=180)
    query = {"deployments": {"name": {"any_": ["textmill-hourly"]}}}
    before = api(prefect_api, "/deployments/filter", query)  # the deploy test above may have created it
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], env=env, cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert done.returncode != 0
    assert "set TEXTMILL_CORPUS and TEXTMILL_OUT to the corpus and output folders before prefect deploy" in done.stdout + done.stderr
    assert api(prefect_api, "/deployments/filter", query) == before
