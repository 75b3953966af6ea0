"""Helpers for tests that run the real Prefect flow."""
from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any

from textmill.flows.pipeline import textmill
from textmill.flows.runners import make_task_runner

from conftest import CONFIG


def run_flow(corpus: Path, out: Path, config: Path = CONFIG, workers: int | None = None) -> dict[str, Any]:
    """Run the flow from this process (the default runner, `workers` processes when given: new
    shards come in multiples of the workers, so a test of the shard layout names them) and
    return its manifest."""
    flow = textmill if workers is None else textmill.with_options(task_runner=make_task_runner("processes", workers))
    return flow(corpus=str(corpus), out=str(out), config=str(config))


def shards_of(out: Path) -> dict[str, int]:
    """File id -> shard, as the last run on `out` assigned them (`flows/assign.py`)."""
    return dict(json.loads((out / ".textmill" / "shards.json").read_text())["shards"])


def jsonl_lines(out: Path) -> list[str]:
    """Every line of the JSON Lines parts (`jsonl/part-*.jsonl`), in part order."""
    return [line for part in sorted((out / "jsonl").glob("part-*.jsonl")) for line in part.read_text().splitlines()]


def records(out: Path) -> dict[str, dict[str, Any]]:
    """The published JSON Lines records by id."""
    rows = [json.loads(line) for line in jsonl_lines(out)]
    return {r["id"]: r for r in rows}


def computed(manifest: dict[str, Any]) -> dict[str, int]:
    return {name: s["computed"] for name, s in manifest["steps"].items()}


def task_run_states(run_id: str, expected: int, timeout: float = 20.0) -> dict[str, str]:
    """Task run name -> state name for a flow run, waiting for the server to record them all."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
            states = {r.name: r.state.name for r in runs if r.state is not None}
            if len(states) >= expected and all(s not in ("Pending", "Running") for s in states.values()):
                return states
            time.sleep(0.5)
    return states


def set_option(config: Path, section: str, line: str) -> None:
    """Set `key = value` under `[section]` of a TOML config copy, replacing an existing value."""
    text = config.read_text()
    header = f"[{section}]\n"
    assert header in text, f"{section} not in {config}"
    head, body = text.split(header, 1)
    key = line.split("=", 1)[0].strip()
    section_text, sep, rest = body.partition("\n[")
    kept = [row for row in section_text.splitlines() if row.split("=", 1)[0].strip() != key]
    config.write_text(head + header + "\n".join([line, *kept]) + "\n" + sep + rest)


class Recorder:
    """A progress listener that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def start(self, stage: str, total: int | None) -> None:
        self.calls.append(("start", stage, total))

    def advance(self, stage: str, done: int) -> None:
        self.calls.append(("advance", stage, done))

    def finish(self, stage: str, failed: bool = False) -> None:
        self.calls.append(("finish", stage, failed))

    def of(self, stage: str) -> list[tuple[str, Any]]:
        return [(kind, value) for kind, name, value in self.calls if name == stage]

    def advances(self, stage: str) -> list[int]:
        return [value for kind, value in self.of(stage) if kind == "advance"]


def write_plugin(site: Path, module: str, source: str, entry_points: str) -> None:
    """A throwaway distribution `module` (dist name with dashes) under `site`: the module's
    `source` and its `[textmill.steps]` `entry_points` lines, found like an installed plugin."""
    name = module.replace("_", "-")
    dist = site / f"{module}-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / f"{module}.py").write_text(source)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[textmill.steps]\n{entry_points}\n")


def install_plugin(monkeypatch: Any, site: Path, module: str, source: str, entry_points: str) -> Path:
    """`write_plugin`, then `site` on sys.path for this test (worker processes inherit it)."""
    write_plugin(site, module, source, entry_points)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return site
