"""The temporary Prefect API server of an ad hoc run: started first, ready when the flow starts.

Without a configured server, `textmill run` needs one for the run's flow and task runs. Prefect
would start one itself (`SubprocessASGIServer`) on its first API call, after Prefect is
imported, the config loaded and the corpus found; and importing the class that starts it costs
seconds of its own (`prefect.server.api.server`). So the CLI starts the same server (uvicorn
serving Prefect's app, UI and background services off) as a subprocess before importing
Prefect, names it in PREFECT_API_URL (Prefect reads its settings once, when imported; worker
processes inherit the variable), and does its own imports and checks while the server boots
(`wait_until_ready` just before the flow).

Stdlib only: this module runs before Prefect is imported, so it cannot ask Prefect's settings
whether a server is configured; `configured_api_url` reads the same sources Prefect does.
"""
from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

API_URL = "PREFECT_API_URL"
# Prefect's service that writes task runs to its database from their state events. The
# temporary server stops with the run, before it has recorded most of them (docs/operations.md,
# "What the temporary server records"), and on two cores its recording took CPU from the run.
TASK_RUN_RECORDER = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED"
STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
START_ATTEMPTS = 3


def configured_api_url(cwd: Path | None = None) -> str | None:
    """The API URL Prefect would use, from the sources its settings read (highest first): the
    environment, `.env`, `prefect.toml` and `pyproject.toml` ([tool.prefect]) in the working
    folder, then the active profile in PREFECT_HOME's profiles.toml."""
    if os.environ.get(API_URL):
        return os.environ[API_URL]
    folder = cwd or Path.cwd()
    for line in read_text(folder / ".env").splitlines():
        key, _, value = line.strip().partition("=")
        if key.strip() == API_URL and value.strip():
            return value.strip().strip("'\"")
    for path, prefix in ((folder / "prefect.toml", ()), (folder / "pyproject.toml", ("tool", "prefect"))):
        table = read_toml(path)
        for key in prefix:
            table = table.get(key, {}) if isinstance(table, dict) else {}
        url = table.get("api", {}).get("url") if isinstance(table, dict) else None
        if url:
            return str(url)
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    profiles = read_toml(Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser())
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    url = profiles.get("profiles", {}).get(active, {}).get(API_URL)
    return str(url) if url else None


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError:
        return {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The temporary server's environment: Prefect's for its own temporary server (UI off, the
    services of an ephemeral server), no API URL of its own, and no task run recording unless
    `environ` asks for it."""
    env = {**environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    env.pop(API_URL, None)
    env.setdefault(TASK_RUN_RECORDER, "false")
    return env


@dataclass
class TemporaryServer:
    """Prefect's API as a uvicorn subprocess on a free port of 127.0.0.1, as Prefect starts its
    own, except that it does not record task runs unless `TASK_RUN_RECORDER` says so."""

    port: int = 0
    process: subprocess.Popen | None = None
    attempts: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> TemporaryServer:
        self.port = free_port()
        self.attempts += 1
        env = server_environment(os.environ)
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        return self

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Block until the API answers its health check; start again on another port if the
        process exited (another program took the port first). RuntimeError after `timeout` s."""
        timeout = timeout if timeout is not None else float(os.environ.get(STARTUP_TIMEOUT) or 90)
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                if self.attempts >= START_ATTEMPTS:
                    raise RuntimeError(f"the temporary Prefect API server exited with code {self.process.returncode}")
                self.start()
                os.environ[API_URL] = self.api_url
                continue
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the temporary Prefect API server did not answer within {timeout:.0f} s ({STARTUP_TIMEOUT})")

    def stop(self) -> None:
        """Ask the server to stop, without waiting for it (it shuts down on its own)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()


_server: TemporaryServer | None = None


def start_temporary_server() -> TemporaryServer | None:
    """Before Prefect is imported: unless a server is configured, start the temporary one and
    export its URL (PREFECT_API_URL) for Prefect in this process and every process it starts.

    Once Prefect is imported (the CLI called from Python, as in tests) its settings are fixed:
    nothing starts here, and Prefect uses the server it is configured with or starts its own.
    """
    global _server
    if _server is not None or "prefect" in sys.modules or configured_api_url():
        return _server
    _server = TemporaryServer().start()
    os.environ[API_URL] = _server.api_url
    atexit.register(_server.stop)
    return _server


def temporary_api_url() -> str | None:
    """The URL of this process's temporary server, if it started one."""
    return _server.api_url if _server is not None else None


def stop_temporary_server() -> bool:
    """Ask the temporary server to stop, without waiting; False when there is none (the run
    reports to a configured server)."""
    if _server is None:
        return False
    _server.stop()
    return True
