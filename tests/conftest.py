"""Shared fixtures: the repository's seeds, and one real temporary Prefect server per session."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO / "seeds"
CONFIG = REPO / "config" / "pipeline.toml"
SHARED = Path(os.environ.get("TEXTMILL_SHARED", REPO.parent / "shared"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen) -> None:
    """Terminate a process the test started, killing it if it does not exit in 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def shared_path(*parts: str) -> Path:
    """A file or folder of the shared development data (corpora, seeds) beside this checkout.

    Without it a test skips, except under CI, where missing data must fail the run rather
    than hide the tests that need it.
    """
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"development data not found: {path} (set TEXTMILL_SHARED to the shared folder)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect API with its own database, shared by the flow tests of a session.

    In-process runs here are untagged (`TEXTMILL_STEP_TAGS=off`): nobody filters this server's
    UI by step, and each new tag would cost a concurrency-limit check on its SQLite database.
    """
    from prefect.testing.utilities import prefect_test_harness

    previous = os.environ.get("TEXTMILL_STEP_TAGS")
    os.environ["TEXTMILL_STEP_TAGS"] = "off"
    try:
        with prefect_test_harness(server_startup_timeout=120):
            yield
    finally:
        if previous is None:
            os.environ.pop("TEXTMILL_STEP_TAGS", None)
        else:
            os.environ["TEXTMILL_STEP_TAGS"] = previous


@dataclass(frozen=True)
class SeedsRun:
    """The default pipeline run cold over the seeds, then again unchanged, into `out`."""

    out: Path
    first: dict[str, Any]
    second: dict[str, Any]
    published_before: dict[str, tuple[int, bytes]]
    published_after: dict[str, tuple[int, bytes]]


PART_FOLDERS = ("jsonl", "documents", "entities")


def published_files(out: Path) -> dict[str, tuple[int, bytes]]:
    """Each published file's modification time and bytes: every part and `textmill.sqlite`."""
    names = [p.relative_to(out).as_posix() for folder in PART_FOLDERS for p in sorted((out / folder).glob("part-*"))]
    assert names, f"no parts published in {out}"
    return {name: ((out / name).stat().st_mtime_ns, (out / name).read_bytes()) for name in [*names, "textmill.sqlite"]}


@pytest.fixture(scope="session")
def seeds_run(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> SeedsRun:
    """One cold and one warm run over the seeds, shared read-only by every test that only reads them."""
    from flowkit import run_flow

    out = tmp_path_factory.mktemp("seeds-run") / "out"
    first = run_flow(SEEDS, out)
    before = published_files(out)
    second = run_flow(SEEDS, out)
    return SeedsRun(out, first, second, before, published_files(out))


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1, a free port and its own PREFECT_HOME, up once its
    health endpoint answers; stopped by its process id (bench.measure.PrefectServer). One per
    session (per xdist worker): tests tell their runs apart by run id or deployment name."""
    from bench.measure import PrefectServer

    home = tmp_path_factory.mktemp("prefect-server")
    env = {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    with PrefectServer(home, env, home / "server.log") as server:
        yield server.url


@pytest.fixture
def seeds_copy(tmp_path: Path) -> Path:
    """A private copy of the seeds that a test may add files to."""
    target = tmp_path / "seeds"
    shutil.copytree(SEEDS, target)
    return target


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    """A private copy of the default config folder that a test may edit."""
    target = tmp_path / "config"
    shutil.copytree(REPO / "config", target, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    return target / "pipeline.toml"
