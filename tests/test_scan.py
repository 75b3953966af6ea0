"""Discovery's scan ahead of the flow (`flows/scan.py`): an ad hoc run scans while its
temporary Prefect server starts, and the flow's discover task takes that scan once."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import SEEDS
from flowkit import run_flow
from textmill.flows.scan import scan_ahead, take_scan


def test_the_discover_task_takes_the_scan_made_ahead_once(prefect_server: None, seeds_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    scan_ahead(seeds_copy, out)
    (seeds_copy / "late.txt").write_text("A file written after the scan ahead, before the flow started.\n")

    first = run_flow(seeds_copy, out)
    assert first["files"] == len(list(SEEDS.iterdir())), "the flow used the scan made ahead"
    cache = json.loads((out / ".textmill" / "file-hashes.json").read_text())
    assert sorted(cache["files"]) == sorted(p.name for p in SEEDS.iterdir()), "the task saved the scan's hashes"

    second = run_flow(seeds_copy, out)
    assert second["files"] == first["files"] + 1, "a scan ahead serves one flow run only"
    assert second["hashed_files"] == {"hashed": 1, "unchanged": first["files"]}


def test_a_scan_ahead_that_fails_leaves_the_scan_to_the_task(tmp_path: Path) -> None:
    scan_ahead(tmp_path / "missing", tmp_path / "out")
    assert take_scan(str(tmp_path / "missing"), str(tmp_path / "out")) is None
