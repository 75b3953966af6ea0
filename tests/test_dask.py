"""Scale-out on Dask: a scheduler and two worker processes give the same corpus as the default runner."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.synth import generate
from conftest import REPO, free_port, shared_path, stop
from flowkit import jsonl_lines, set_option
from textmill.flows.pipeline import textmill
from textmill.flows.runners import loaded_steps, make_task_runner

pytestmark = pytest.mark.slow


@pytest.fixture
def dask_cluster(prefect_server: None, tmp_path: Path) -> Iterator[str]:
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1, reporting to the test server."""
    from distributed import Client
    from prefect.settings import PREFECT_API_URL

    address = f"tcp://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    log = (tmp_path / "dask.log").open("wb")
    common = {"env": env, "cwd": REPO, "stdout": log, "stderr": subprocess.STDOUT}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", address.rsplit(":", 1)[1], "--no-dashboard"],
        **common,  # type: ignore[call-overload]
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
             "--no-dashboard", "--name", f"worker-{n}"],
            **common,  # type: ignore[call-overload]
        )
        for n in range(2)
    ]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in (*workers, scheduler):
            stop(proc)
        log.close()


def sorted_lines(out: Path) -> list[str]:
    return sorted(jsonl_lines(out))


def test_dask_cluster_gives_the_same_corpus_as_the_default_runner(dask_cluster: str, config_copy: Path, tmp_path: Path) -> None:
    """80 generated documents in shards of 16, so both workers get shards of every step; the
    default runner is worker processes on this machine."""
    from distributed import Client

    corpus = tmp_path / "corpus"
    planted = generate(shared_path("corpora", "bbc"), corpus, 80, seed=300, exact_rate=0.1, near_rate=0.1)
    set_option(config_copy, "run", "shard_size = 16")
    default = textmill(corpus=str(corpus), out=str(tmp_path / "default"), config=str(config_copy))
    flow = textmill.with_options(task_runner=make_task_runner("dask", 2, dask_cluster))
    on_dask = flow(corpus=str(corpus), out=str(tmp_path / "dask"), config=str(config_copy))

    assert on_dask["counts"] == default["counts"]
    assert on_dask["counts"]["duplicate"] >= planted.exact
    assert sorted_lines(tmp_path / "dask") == sorted_lines(tmp_path / "default")
    with Client(dask_cluster) as client:
        held = client.run(loaded_steps)
    assert len(held) == 2
    assert all(names.count("entities") <= 1 for names in held.values()), "a model loads once per worker process"
    assert sum(names.count("entities") for names in held.values()) >= 1, "the entities step ran on the workers"
