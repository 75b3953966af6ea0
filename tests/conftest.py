"""Shared fixtures: the repository's seeds, and one real temporary Prefect server per session."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

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
