"""Task-runner choices that need no server: step tags, task runs of cached shards, parameters
passed whole."""
from __future__ import annotations

import pytest

from textmill.flows import runners
from textmill.tasks.base import ConfigError


def given(monkeypatch: pytest.MonkeyPatch, variable: str, setting: str | None, watched: bool) -> None:
    """`variable` set to `setting` (None: unset), on a server someone watches or not."""
    if setting is None:
        monkeypatch.delenv(variable, raising=False)
    else:
        monkeypatch.setenv(variable, setting)
    monkeypatch.setattr(runners, "watched_server", lambda: watched)


@pytest.mark.parametrize(
    ("setting", "watched", "expected"),
    [("on", False, True), ("off", True, False), ("auto", True, True), ("auto", False, False), (None, True, True), ("OFF", True, False)],
)
def test_step_tags_follow_the_setting(monkeypatch: pytest.MonkeyPatch, setting: str | None, watched: bool, expected: bool) -> None:
    given(monkeypatch, runners.STEP_TAGS_ENV, setting, watched)
    assert runners.tag_steps() is expected


def test_an_unknown_step_tags_setting_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runners.STEP_TAGS_ENV, "sometimes")
    with pytest.raises(ConfigError, match="TEXTMILL_STEP_TAGS='sometimes'"):
        runners.tag_steps()


@pytest.mark.parametrize(
    ("setting", "watched", "expected"),
    [("on", False, True), ("off", True, False), ("auto", True, True), ("auto", False, False), (None, False, False), ("On", False, True)],
)
def test_cached_shards_get_task_runs_where_someone_watches(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, watched: bool, expected: bool
) -> None:
    given(monkeypatch, runners.CACHED_RUNS_ENV, setting, watched)
    assert runners.cached_task_runs() is expected
    for kind in ("processes", "threads"):
        with runners.make_task_runner(kind, 1) as runner:
            assert runner.serve_cache_without_runs is not expected


def test_an_unknown_cached_task_runs_setting_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runners.CACHED_RUNS_ENV, "later")
    with pytest.raises(ConfigError, match="TEXTMILL_CACHED_TASK_RUNS='later'"):
        runners.cached_task_runs()


def test_a_whole_parameter_survives_pickling_and_prefect_hands_it_over_unwalked() -> None:
    import pickle

    import cloudpickle
    from prefect.utilities.engine import collect_task_run_inputs_sync, resolve_inputs_sync

    from textmill.flows.shard import DocRef

    refs = [DocRef(f"{n:04}.txt", "0" * 64, "ok") for n in range(3)]
    passed = runners.whole(refs)
    assert pickle.loads(pickle.dumps(passed)).unwrap() == refs, "a pickled quote would wrap a 1-tuple"
    assert cloudpickle.loads(cloudpickle.dumps(passed)).unwrap() == refs
    assert resolve_inputs_sync({"refs": passed}, return_data=True, max_depth=-1) == {"refs": refs}
    assert collect_task_run_inputs_sync(passed) == set()


def test_runner_workers_outside_a_flow_run_is_the_fallback() -> None:
    from textmill.flows.runners import runner_workers

    assert runner_workers(3) == 3


def test_partitions_are_grouped_four_per_worker_in_contiguous_even_groups() -> None:
    from textmill.flows.pipeline import partition_groups

    assert partition_groups(64, 2) == [list(range(8 * g, 8 * g + 8)) for g in range(8)]
    assert partition_groups(4, 2) == [[0], [1], [2], [3]], "never more groups than partitions"
    assert partition_groups(10, 1) == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]
    assert partition_groups(1, 8) == [[0]]
    assert sorted(p for g in partition_groups(37, 3) for p in g) == list(range(37))


def test_a_worker_exits_without_teardown_after_every_later_exit_handler() -> None:
    """A worker's exit handler (registered first, so it runs last) ends the process after the
    handlers registered since, Prefect's included, with what it printed flushed; the
    interpreter's teardown, and handlers registered before it, are skipped."""
    import subprocess
    import sys

    script = (
        "import atexit, sys\n"
        "from textmill.flows.runners import exit_without_teardown\n"
        "atexit.register(print, 'registered before: must not run')\n"
        "atexit.register(exit_without_teardown)\n"
        "atexit.register(print, 'registered after: runs')\n"
        "class Teardown:\n"
        "    def __del__(self):\n"
        "        print('teardown: must not run')\n"
        "keep = Teardown()\n"
        "sys.stdout.write('unflushed output')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "unflushed outputregistered after: runs\n", done.stdout


def test_a_cached_future_holds_the_record_prefect_would_serve_and_none_for_a_damaged_one(tmp_path) -> None:
    from prefect import task
    from prefect.cache_policies import CacheKeyFnPolicy
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    @task(
        cache_policy=CacheKeyFnPolicy(cache_key_fn=lambda context, parameters: f"key-{parameters['n']}"),
        result_storage=str(tmp_path),
        persist_result=True,
    )
    def double(n: int) -> int:
        return 2 * n

    assert runners.cached_future(double, {"n": 1}) is None, "no record yet"
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(tmp_path)))
    store.write(obj=2, key="key-1")
    future = runners.cached_future(double, {"n": 1})
    assert future is not None and future.state.name == "Cached" and future.result() == 2
    assert runners.cached_future(double.with_options(refresh_cache=True), {"n": 1}) is None
    (tmp_path / "key-1").write_text("not a result record")
    assert runners.cached_future(double, {"n": 1}) is None, "a damaged record: Prefect's own run decides"
