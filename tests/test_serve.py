"""Against a real `prefect server start`: what the API (and so the UI) shows of a run, cached
re-runs, and `textmill serve` registering a schedule whose runs execute and complete."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import REPO, SEEDS, free_port, stop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1, a free port and its own PREFECT_HOME; stopped by pid."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start; see {home / 'server.log'}")
            time.sleep(0.5)
        yield url
    finally:
        stop(server)
        log.close()


def api(url: str, path: str, body: dict | None = None) -> object:
    response = httpx.post(f"{url}{path}", json=body or {}, timeout=10)
    response.raise_for_status()
    return response.json()


def run_cli(api_url: str, tmp_path: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(tmp_path / "client-home"), "PREFECT_LOGGING_LEVEL": "INFO"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(SEEDS), "--out", str(out), "-v"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def flow_run_of(api_url: str, out: Path) -> dict:
    run_id = json.loads((out / "manifest.json").read_text())["run_id"]
    response = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10)
    response.raise_for_status()
    return response.json()


def test_a_run_shows_completed_tasks_artifacts_and_counts_then_cached_shards(prefect_api: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_cli(prefect_api, tmp_path, out)
    flow_run = flow_run_of(prefect_api, out)
    assert flow_run["name"] == "textmill-seeds" and flow_run["state_type"] == "COMPLETED"
    tasks = api(prefect_api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
    names = {t["name"]: t["state_name"] for t in tasks}  # type: ignore[union-attr]
    for step in ("read", "clean", "dedupe-summarize", "dedupe", "language", "entities-summarize", "entities"):
        assert names.get(f"{step}-0") == "Completed", names
    assert names["publish"] == "Completed"
    artifacts = api(prefect_api, "/artifacts/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
    by_key = {a["key"]: a for a in artifacts}  # type: ignore[union-attr]
    assert {"textmill-summary", "textmill-steps", "textmill-progress"} <= set(by_key)
    assert by_key["textmill-progress"]["data"] == 100.0
    summary = by_key["textmill-summary"]["data"]
    assert "textmill run" in summary and "duplicate" in summary and "Vladimir Putin" in summary
    logs = api(prefect_api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run["id"]]}}, "limit": 200})
    messages = "\n".join(entry["message"] for entry in logs)  # type: ignore[union-attr]
    for step in ("clean", "dedupe", "language", "entities"):
        assert f"{step}: " in messages and "computed" in messages
    assert first.returncode == 0

    run_cli(prefect_api, tmp_path, out)
    again = flow_run_of(prefect_api, out)
    assert again["id"] != flow_run["id"] and again["state_type"] == "COMPLETED"
    tasks = api(prefect_api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [again["id"]]}}})
    shard_states = {t["name"]: t["state_name"] for t in tasks if t["name"].endswith("-0")}  # type: ignore[union-attr]
    assert shard_states and set(shard_states.values()) == {"Cached"}, shard_states


def test_serve_registers_the_schedule_and_a_scheduled_run_completes(prefect_api: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(tmp_path / "client-home"),
    }
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", str(SEEDS), "--out", str(tmp_path / "out"),
         "--interval", "5", "--name", "seeds-every-5s"],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        deployment: dict = {}
        completed: list = []
        while time.monotonic() < deadline and not completed:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            found = api(prefect_api, "/deployments/filter", {"deployments": {"name": {"any_": ["seeds-every-5s"]}}})
            if found:
                deployment = found[0]  # type: ignore[index]
                runs = api(prefect_api, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}}})
                completed = [r for r in runs if r["state_type"] == "COMPLETED"]  # type: ignore[union-attr]
            time.sleep(2)
        assert deployment, "the deployment was registered"
        schedules = [s["schedule"] for s in deployment["schedules"]]
        assert [s.get("interval") for s in schedules] == [5.0]
        assert deployment["parameters"]["corpus"] == str(SEEDS.resolve())
        assert completed, "a scheduled run completed within the wait; log:\n" + (tmp_path / "serve.log").read_text()[-3000:]
        assert (tmp_path / "out" / "manifest.json").exists()
    finally:
        stop(serve)
        log.close()
