"""Run a command as a child process and measure it: wall time, CPU time, peak RSS.

`os.wait4` returns the child's resource usage, which on Linux includes the descendants it has
reaped (Prefect's ephemeral API server, say): CPU time is their sum, peak RSS the largest process.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True)
class Measurement:
    """One measured run of one command."""

    label: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    exit_code: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CommandFailed(RuntimeError):
    """A measured command exited non-zero; its captured output tail is in the message."""


def measure(
    label: str, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None, cwd: Path | None = None
) -> Measurement:
    """Run `argv` (in `cwd`) to completion; stdout and stderr go to `log` (or are discarded)."""
    sink = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log is not None:
            sink.close()
    result = Measurement(
        label=label,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        exit_code=proc.returncode,
    )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log is not None else ""
        raise CommandFailed(f"{label}: `{' '.join(argv)}` exited {proc.returncode}\n{tail}")
    return result


def python_module(module: str, *args: str) -> list[str]:
    """argv for `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


# The database a benchmark's PostgreSQL-backed Prefect server keeps its state in (made afresh),
# on this machine's PostgreSQL server unless the command names another.
PREFECT_DATABASE = "textmill_bench_prefect"
DEFAULT_PREFECT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"


def bench_env(prefect_home: Path) -> dict[str, str]:
    """The environment for measured textmill runs: offline, quiet, a Prefect home of their own."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    env.pop("PREFECT_API_URL", None)
    return env


def prepare_prefect_home(env: dict[str, str], work: Path, log: Path | None = None) -> Measurement:
    """Run `textmill run` once over the seeds with `env`'s new Prefect home, before anything is
    measured, and return that run's measurement.

    The first run that uses a Prefect home makes the temporary server create its database
    (Prefect's migrations: about 5 s and 6 CPU s on 2 cores), once per machine and user. A
    measured cold run should pay for its corpus, not for that: every run after this one finds
    the database in place, as a user's runs after their first do. The caller reports this
    run's time as the one-off cost.
    """
    from bench.common import REPO

    out = work / "prefect-home-setup"
    argv = python_module("textmill.flows.cli", "run", str(REPO / "seeds"), "--out", str(out))
    try:
        return measure("first run in a new Prefect home (seeds)", argv, env, log)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def prefect_home_note(setup: dict[str, Any] | None) -> str:
    """A results file's line saying the measured runs found Prefect's database in place, and what
    the run that created it took (`prepare_prefect_home`)."""
    if not setup:
        return ""
    return (
        f"\nBefore the measured runs, one run over the seeds in the benchmark's new Prefect home "
        f"({setup['wall_s']:.1f} s wall) had the temporary server create its database: a once-per-machine "
        "cost that no measured run pays.\n"
    )


@contextlib.contextmanager
def fresh_database(dsn: str, name: str = PREFECT_DATABASE) -> Iterator[str]:
    """A new, empty database `name` on the PostgreSQL server of `dsn`, dropped afterwards;
    yields its SQLAlchemy URL for a Prefect server (asyncpg driver)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    user = info.get("user", "postgres")
    password = f":{info['password']}" if info.get("password") else ""
    host, port = info.get("host", "127.0.0.1"), info.get("port", "5432")
    try:
        yield f"postgresql+asyncpg://{user}{password}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class PrefectServer:
    """A `prefect server start` of its own on a free local port, for runs that report to a server
    the way a monitored deployment does, instead of starting an ephemeral one per run."""

    def __init__(self, home: Path, env: dict[str, str], log: Path, database_url: str | None = None) -> None:
        """`database_url`: an SQLAlchemy URL for the server's state (e.g. PostgreSQL through
        asyncpg); without it, the server keeps its state in SQLite under `home`."""
        self.home, self.env, self.log, self.database_url = home, env, log, database_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> PrefectServer:
        import socket
        import urllib.request

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        # The UI asks the API at PREFECT_UI_API_URL, which otherwise names the default port 4200.
        env = {**self.env, "PREFECT_HOME": str(self.home), "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
        if self.database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
        argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        with open(self.log, "ab") as sink:
            self.proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CommandFailed(f"prefect server exited {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise CommandFailed(f"prefect server did not answer on {self.url} within 120 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def process_role(proc: Any, root_pid: int) -> str:
    """What a process in a measured run is: the run itself, the temporary Prefect API server,
    the fork server its workers are forked from, a worker process, multiprocessing's resource
    tracker, or something else (a shell)."""
    if proc.pid == root_pid:
        return "textmill"
    try:
        cmdline = " ".join(proc.cmdline())
        parent = proc.ppid()
    except Exception:  # noqa: BLE001 - a process that has gone counts as other
        return "other"
    if "uvicorn" in cmdline or "prefect.server" in cmdline or ("prefect" in cmdline and " server " in f"{cmdline} "):
        return "prefect-server"
    if "multiprocessing.resource_tracker" in cmdline:
        return "resource-tracker"
    if "multiprocessing.forkserver" in cmdline and parent == root_pid:
        return "fork-server"
    if "python" in cmdline:
        return "worker"
    return "other"


def unwaited_cpu(processes: list[dict[str, Any]], cpu: dict[int, tuple[int, float]]) -> float:
    """CPU seconds, as last sampled, of the fork servers and the workers they forked: their
    parent is not the process `os.wait4` reports on (it misses up to one sampling interval of
    each)."""
    servers = {p["pid"] for p in processes if p["role"] == "fork-server"}
    return sum(seconds for pid, (parent, seconds) in cpu.items() if pid in servers or parent in servers)


def measure_tree(
    label: str,
    argv: list[str],
    env: dict[str, str] | None = None,
    log: Path | None = None,
    interval: float = 0.25,
    memory_cap: int | None = None,
) -> dict[str, Any]:
    """Like `measure` (CPU time includes the fork server's workers, `unwaited_cpu`), and the
    peak RSS of every process of the run's tree, sampled every `interval` seconds with psutil
    (`processes`: role, pid, peak MB and the second of the run it was seen at, to tell which
    stage peaked); `peak_rss_mb` is the largest of them.
    `memory_cap` limits the child's address space."""
    import resource
    import threading

    import psutil

    def limit() -> None:
        if memory_cap is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))

    sink = open(log, "ab") if log is not None else subprocess.DEVNULL
    peaks: dict[int, tuple[str, float, float]] = {}
    # Last seen (parent, own CPU seconds) of each process: `os.wait4` counts only the children
    # `textmill` waits for, not the workers its fork server forks and reaps.
    cpu: dict[int, tuple[int, float]] = {}
    done = threading.Event()

    def sample(root: int) -> None:
        try:
            parent = psutil.Process(root)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                procs = [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in procs:
                try:
                    rss = proc.memory_info().rss / 1024 / 1024
                    times = proc.cpu_times()
                    cpu[proc.pid] = (proc.ppid(), times.user + times.system)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                role, peak, at = peaks.get(proc.pid) or (process_role(proc, root), 0.0, 0.0)
                if rss > peak:
                    peaks[proc.pid] = (role, rss, time.perf_counter() - started)
            done.wait(interval)

    try:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, preexec_fn=limit)
        sampler = threading.Thread(target=sample, args=(proc.pid,), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log is not None:
            sink.close()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log is not None else ""
        raise CommandFailed(f"{label}: `{' '.join(argv)}` exited {proc.returncode}\n{tail}")
    processes = [
        {"role": role, "pid": pid, "peak_rss_mb": round(peak, 1), "peak_at_s": round(at, 1)}
        for pid, (role, peak, at) in sorted(peaks.items())
    ]
    return {
        "label": label,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime + unwaited_cpu(processes, cpu),
        # Sampled only: Linux carries `ru_maxrss` across exec from the forking process, so a
        # child of a large benchmark process (bench.scale after generating 1,000,000 files)
        # reported the benchmark's own peak. `os.wait4`'s figure stands only when nothing was
        # sampled.
        "peak_rss_mb": max(p["peak_rss_mb"] for p in processes) if processes else usage.ru_maxrss / 1024,
        "processes": processes,
    }
